"""Settings come from the environment only, and bad values stop the process loudly.

The parsers are tested directly; the settings module as a whole is loaded in a
child process with a controlled environment (``clean_env``), because Django
reads settings once per process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from telehealth.env import SQLITE_OPTIONS, Env, ImproperlyConfiguredEnv, parse_database_url, parse_redis_url
from tests.telehealth.names import ROOT, names_read_by_settings

# --- Env readers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_env_bool_accepts_common_spellings(raw, expected):
    assert Env({"FLAG": raw}).bool("FLAG", not expected) is expected


def test_env_bool_unset_or_empty_gives_default():
    assert Env({}).bool("FLAG", True) is True
    assert Env({"FLAG": ""}).bool("FLAG", False) is False


def test_env_bool_bad_value_names_variable():
    with pytest.raises(ImproperlyConfiguredEnv, match=r"^FLAG='maybe' is not a boolean"):
        Env({"FLAG": "maybe"}).bool("FLAG", False)


def test_env_int_parses_and_defaults():
    assert Env({"N": "42"}).int("N", 1) == 42
    assert Env({}).int("N", 7) == 7


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ten", r"^N='ten' is not an integer"),
        ("-1", r"^N=-1 is below the minimum 0"),
        ("100", r"^N=100 is above the maximum 10"),
    ],
)
def test_env_int_bad_value_names_variable(raw, message):
    with pytest.raises(ImproperlyConfiguredEnv, match=message):
        Env({"N": raw}).int("N", 1, minimum=0, maximum=10)


def test_env_list_splits_on_commas_and_drops_blanks():
    assert Env({"HOSTS": " a.example, b.example ,,"}).list("HOSTS", ["x"]) == ["a.example", "b.example"]
    assert Env({}).list("HOSTS", ["x"]) == ["x"]


def test_env_list_default_is_a_copy():
    default = ["x"]
    Env({}).list("HOSTS", default).append("y")
    assert default == ["x"]


def test_env_choice_accepts_member_and_refuses_others_by_name():
    assert Env({"LEVEL": "DEBUG"}).choice("LEVEL", "INFO", {"DEBUG", "INFO"}) == "DEBUG"
    with pytest.raises(ImproperlyConfiguredEnv, match=r"^LEVEL='LOUD' is not one of \['DEBUG', 'INFO'\]"):
        Env({"LEVEL": "LOUD"}).choice("LEVEL", "INFO", {"DEBUG", "INFO"})


def test_env_name_file_reads_secret_from_file(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("from-a-file\n")
    env = Env({"SECRET_KEY_FILE": str(secret), "SECRET_KEY": "from-the-variable"})
    # The file wins: a mounted secret must not be shadowed by a stale variable.
    assert env.str("SECRET_KEY") == "from-a-file"


def test_env_name_file_applies_to_typed_readers(tmp_path):
    (tmp_path / "port").write_text("2525")
    assert Env({"EMAIL_PORT_FILE": str(tmp_path / "port")}).int("EMAIL_PORT", 25) == 2525


def test_env_name_file_unreadable_names_variable(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ImproperlyConfiguredEnv, match=r"^SECRET_KEY_FILE='.*nope' cannot be read"):
        Env({"SECRET_KEY_FILE": str(missing)}).str("SECRET_KEY")


# --- DATABASE_URL and REDIS_URL ----------------------------------------------------------------


def test_database_url_sqlite_relative_is_under_base_dir():
    db = parse_database_url("sqlite:///var/db.sqlite3", base_dir=Path("/srv/app"))
    assert db == {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/app/var/db.sqlite3", "OPTIONS": SQLITE_OPTIONS}


def test_database_url_sqlite_absolute_and_memory():
    assert parse_database_url("sqlite:////tmp/x.sqlite3", base_dir=Path("/srv"))["NAME"] == "/tmp/x.sqlite3"
    assert parse_database_url("sqlite:///:memory:", base_dir=Path("/srv"))["NAME"] == ":memory:"


def test_database_url_sqlite_without_file_names_variable():
    with pytest.raises(ImproperlyConfiguredEnv, match="DATABASE_URL"):
        parse_database_url("sqlite:///", base_dir=Path("/srv"))


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "pgsql"])
def test_database_url_postgres_fields(scheme):
    db = parse_database_url(f"{scheme}://iop:p%40ss%2Fw@db.example:6543/clinic?sslmode=require", base_dir=Path("/"))
    assert db == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "clinic",
        "USER": "iop",
        "PASSWORD": "p@ss/w",
        "HOST": "db.example",
        "PORT": "6543",
        "OPTIONS": {"sslmode": "require"},
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def test_database_url_postgres_without_port_or_password():
    db = parse_database_url("postgres://postgres@127.0.0.1/test", base_dir=Path("/"))
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == ("postgres", "", "127.0.0.1", "", "test")


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "http://h/db", "postgres://u@h:5432/", "postgres://u@h:notaport/db", "db.sqlite3"],
)
def test_database_url_bad_value_names_variable(url):
    with pytest.raises(ImproperlyConfiguredEnv, match="DATABASE_URL"):
        parse_database_url(url, base_dir=Path("/"))


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:secret@cache.example:6380/1"])
def test_redis_url_accepted_unchanged(url):
    assert parse_redis_url(url) == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis:///0"])
def test_redis_url_bad_value_names_variable(url):
    with pytest.raises(ImproperlyConfiguredEnv, match="REDIS_URL"):
        parse_redis_url(url)


# --- the settings module in a child process -----------------------------------------------------

PROBE = """
import json, django
django.setup()
from django.conf import settings
from channels.layers import get_channel_layer
db = settings.DATABASES["default"]
layer = settings.CHANNEL_LAYERS["default"]
print(json.dumps({
    "debug": settings.DEBUG,
    "engine": db["ENGINE"],
    "db_name": str(db["NAME"]),
    "db_host": db.get("HOST"),
    "layer": layer["BACKEND"],
    "layer_config": layer.get("CONFIG"),
    "layer_class": type(get_channel_layer()).__name__,
    "secret_key": settings.SECRET_KEY,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "staticfiles": settings.STORAGES["staticfiles"]["BACKEND"],
    "session_cookie_secure": settings.SESSION_COOKIE_SECURE,
}))
"""


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def load_settings(env: dict[str, str]) -> dict:
    result = run_python(PROBE, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_settings_default_is_embedded_demo(clean_env):
    loaded = load_settings(clean_env(DATABASE_URL=None))

    assert loaded["debug"] is True
    assert loaded["engine"] == "django.db.backends.sqlite3"
    assert loaded["db_name"] == str(ROOT / "var" / "db.sqlite3")
    assert loaded["layer"] == "channels.layers.InMemoryChannelLayer"
    assert loaded["layer_class"] == "InMemoryChannelLayer"
    assert loaded["allowed_hosts"] == ["127.0.0.1", "localhost", "[::1]"]
    assert loaded["session_cookie_secure"] is False


def test_settings_database_url_switches_to_postgres(clean_env):
    loaded = load_settings(clean_env(DATABASE_URL="postgres://iop:pw@db.example:5432/clinic"))

    assert loaded["engine"] == "django.db.backends.postgresql"
    assert (loaded["db_name"], loaded["db_host"]) == ("clinic", "db.example")


def test_settings_redis_url_switches_to_redis_layer(clean_env):
    loaded = load_settings(clean_env(REDIS_URL="redis://cache.example:6379/2", CHANNEL_LAYER_PREFIX="iop-a"))

    assert loaded["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert loaded["layer_config"] == {"hosts": ["redis://cache.example:6379/2"], "prefix": "iop-a"}
    assert loaded["layer_class"] == "RedisPubSubChannelLayer"


def test_settings_channel_layer_kind_core_selects_the_core_redis_layer(clean_env):
    loaded = load_settings(clean_env(REDIS_URL="redis://cache.example:6379/2", CHANNEL_LAYER_KIND="core"))

    assert loaded["layer"] == "channels_redis.core.RedisChannelLayer"
    assert loaded["layer_class"] == "RedisChannelLayer"


def test_settings_production_values(clean_env, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("k" * 60 + "\n")

    loaded = load_settings(clean_env(DEBUG="false", SECRET_KEY_FILE=str(key_file), ALLOWED_HOSTS="iop.example.org"))

    assert loaded["debug"] is False
    assert loaded["secret_key"] == "k" * 60
    assert loaded["allowed_hosts"] == ["iop.example.org"]
    assert loaded["staticfiles"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert loaded["session_cookie_secure"] is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "sometimes"),
        ("EMAIL_PORT", "smtp"),
        ("SESSION_COOKIE_AGE", "10"),
        ("LOG_LEVEL", "LOUD"),
        ("CLINIC_TIME_ZONE", "Mars/Olympus_Mons"),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("REDIS_URL", "http://cache.example"),
        ("ICE_SERVERS", "https://stun.example.org"),
        ("SEAT_GRACE_SECONDS", "-1"),
        ("SESSION_RECHECK_SECONDS", "120"),
        ("WS_RATE_PER_SECOND", "fast"),
    ],
)
def test_settings_bad_value_exits_naming_variable(clean_env, name, value):
    result = run_python("import django; django.setup()", clean_env(**{name: value}))

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("telehealth.env.ImproperlyConfiguredEnv: ")
    assert name in last_line


# --- manage.py check --deploy -------------------------------------------------------------------

SAFE_KEY = "a-test-only-key-that-is-long-enough-to-pass-the-deploy-check-0123456789"


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_ids(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"\(telehealth\.E\d+\)", result.stdout + result.stderr))


def test_check_deploy_refuses_unsafe_production_settings(clean_env):
    result = check_deploy(clean_env(DEBUG="false", ALLOWED_HOSTS="*"))

    assert result.returncode != 0
    assert check_ids(result) == {"(telehealth.E001)", "(telehealth.E002)", "(telehealth.E003)"}


def test_check_deploy_refuses_short_secret_key(clean_env):
    result = check_deploy(
        clean_env(
            DEBUG="false", REDIS_URL="redis://127.0.0.1:6379/0", ALLOWED_HOSTS="iop.example.org", SECRET_KEY="short"
        )
    )

    assert result.returncode != 0
    assert check_ids(result) == {"(telehealth.E003)"}


def test_check_deploy_passes_safe_production_settings(clean_env):
    result = check_deploy(
        clean_env(
            DEBUG="false", REDIS_URL="redis://127.0.0.1:6379/0", ALLOWED_HOSTS="iop.example.org", SECRET_KEY=SAFE_KEY
        )
    )

    assert result.returncode == 0, result.stderr
    assert check_ids(result) == set()


# --- .env.example -------------------------------------------------------------------------------


def documented_names() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_env_example_documents_every_variable_settings_read():
    missing = names_read_by_settings() - documented_names()

    assert missing == set()


def test_env_example_documents_nothing_settings_or_compose_do_not_read():
    compose = (ROOT / "docker-compose.yml").read_text()
    compose_only = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose))

    stale = documented_names() - names_read_by_settings() - compose_only

    assert stale == set()


# Two threads of one process write to the embedded database: the first reads, the second reads
# and writes, then the first writes. In SQLite's default mode the first one's write fails at once
# ("database is locked": waiting could deadlock); with the settings' options it waits its turn.
CONCURRENT_WRITERS = """
import json, threading, time, django
django.setup()
from django.db import connection, transaction
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE probe (n integer)")
connection.close()
first_began, failures = threading.Event(), []

def writer(n):
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM probe")
            if n == 1:
                first_began.set()
                time.sleep(0.3)
            cursor.execute("INSERT INTO probe VALUES (%s)", [n])
    except Exception as exc:
        failures.append(repr(exc))
    finally:
        connection.close()

first = threading.Thread(target=writer, args=(1,))
first.start()
first_began.wait(5)
second = threading.Thread(target=writer, args=(2,))
second.start()
first.join()
second.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT n FROM probe ORDER BY n")
    rows = [n for (n,) in cursor.fetchall()]
print(json.dumps({"failures": failures, "rows": rows}))
"""


def test_embedded_database_lets_concurrent_writers_wait_their_turn(clean_env, tmp_path):
    result = run_python(CONCURRENT_WRITERS, clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}"))

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"failures": [], "rows": [1, 2]}
