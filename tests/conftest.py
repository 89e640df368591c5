import os
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import redis

from telehealth import serve
from telehealth.env import POSTGRES_SCHEMES, parse_database_url
from tests.factories import Clinic, make_clinic

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # Development settings serve static files from the finders and collect nothing, so whitenoise's
    # "No directory at: STATIC_ROOT" is noise. settings.py silences it for servers, but pytest
    # resets warning filters around each test, so say it here too.
    config.addinivalue_line("filterwarnings", "ignore:No directory at:UserWarning")


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Factories hash a password per user; the production hasher would cost ~0.3 s each."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def clinic(db) -> Clinic:
    return make_clinic()


# --- TELEHEALTH_REQUIRE_SERVICES -----------------------------------------------------------------


def _service_problems() -> list[str]:
    """What keeps this run from proving PostgreSQL and Redis, as sentences."""
    problems = []
    database_url = os.environ.get("DATABASE_URL", "")
    scheme = database_url.split(":", 1)[0]
    if scheme not in POSTGRES_SCHEMES:
        problems.append(f"DATABASE_URL must point at PostgreSQL (postgres://...), not {scheme or 'nothing'!r}")
    else:
        db = parse_database_url(database_url, base_dir=ROOT)
        try:
            with psycopg.connect(
                dbname=db["NAME"],
                user=db["USER"],
                password=db["PASSWORD"],
                host=db["HOST"],
                port=db["PORT"] or None,
                connect_timeout=5,
                **db["OPTIONS"],
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            problems.append(f"PostgreSQL from DATABASE_URL is not reachable: {exc}".strip())
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        problems.append("REDIS_URL is not set")
    else:
        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5).ping()
        except (redis.RedisError, ValueError) as exc:
            problems.append(f"Redis from REDIS_URL is not reachable: {exc}")
    return problems


@pytest.fixture(scope="session", autouse=True)
def _require_services():
    """With TELEHEALTH_REQUIRE_SERVICES=1 (CI), PostgreSQL and Redis must be configured and up.

    A run meant to prove the real services stops with a failing exit status when
    one is missing; it never quietly falls back to SQLite or skips service tests.
    """
    if os.environ.get("TELEHEALTH_REQUIRE_SERVICES") != "1":
        return
    problems = _service_problems()
    if problems:
        pytest.exit(
            "TELEHEALTH_REQUIRE_SERVICES=1 but:\n  - " + "\n  - ".join(problems),
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(autouse=True)
def _close_the_signaling_database_thread():
    """The realtime service's database calls run in signaling.db's own thread, on that thread's
    connection: closed after every test, as the test's own are (PostgreSQL refuses to drop the test
    database while a connection to it is open)."""
    yield
    from signaling import db

    db.close_connections()


# --- child processes -----------------------------------------------------------------------------

# Variables a child process may inherit; everything else (DATABASE_URL, DEBUG, ...) is left out
# so a subprocess sees exactly the configuration a test gives it.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")


@pytest.fixture
def clean_env(tmp_path):
    """Build a child-process environment holding only the given settings variables.

    The database is a throwaway SQLite file unless the test says otherwise
    (``DATABASE_URL=None`` leaves it unset), so a subprocess never touches the
    developer's var/db.sqlite3 or the CI database.
    """

    def build(**variables: str | None) -> dict[str, str]:
        env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["DJANGO_SETTINGS_MODULE"] = "telehealth.settings"
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'child.sqlite3'}"
        for name, value in variables.items():  # None removes a variable
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    return build


@pytest.fixture
def daphne(clean_env, tmp_path):
    """Start daphne serving telehealth.asgi in a child process on a free port; returns its base URL.

    Called as ``daphne(**variables)`` with the settings variables the server
    should see (``clean_env`` rules apply). Stopped when the test ends, and the
    test fails if the server logged an unhandled exception.
    """
    started = []

    def start(**variables: str | None) -> str:
        log_path = tmp_path / f"daphne-{len(started)}.log"
        log = log_path.open("w")
        # -p 0: the kernel picks a free port and daphne logs which one (no race with other tests).
        process = subprocess.Popen(
            serve.command("127.0.0.1", 0),
            cwd=ROOT,
            env=clean_env(**variables),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log, log_path))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"Listening on TCP address 127\.0\.0\.1:(\d+)", log_path.read_text())
            if found:
                return f"http://127.0.0.1:{found.group(1)}"
            if process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"daphne did not start:\n{log_path.read_text()}")

    yield start
    for process, log, _ in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    # Whatever the test checked, an unhandled exception in the server is a bug: daphne logs
    # "Exception inside application" for the ASGI app, Django "Internal Server Error" for a 500.
    # (Handled refusals such as DisallowedHost log a traceback too, and are fine.)
    for _, _, log_path in started:
        text = log_path.read_text()
        assert not re.search(r"Exception inside application|Internal Server Error", text), text


@pytest.fixture
def require_postgres():
    """For tests of PostgreSQL-only behaviour: they skip on SQLite, and fail instead under
    TELEHEALTH_REQUIRE_SERVICES=1 (CI's PostgreSQL pass must run them)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        if os.environ.get("TELEHEALTH_REQUIRE_SERVICES") == "1":
            pytest.fail("this test needs PostgreSQL (DATABASE_URL)")
        pytest.skip("this test needs PostgreSQL: set DATABASE_URL (CI does)")
