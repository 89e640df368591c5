"""docker-compose.yml agrees with the settings: no engine is needed to catch drift.

Compose cannot run on the CI machine (no Docker engine), so this reads the file
with PyYAML and checks what would otherwise only fail on a deployment:
variables the settings do not read, a database host that is not the database
service, missing health checks, secrets written into the file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from telehealth.env import parse_database_url, parse_redis_url
from tests.telehealth.names import ROOT, names_read_by_settings

INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def web_env(compose) -> dict[str, str]:
    environment = compose["services"]["web"]["environment"]
    assert isinstance(environment, dict), "keep web.environment a mapping"
    return {name: str(value) for name, value in environment.items()}


def placeholder(value: str) -> str:
    """The value with every ${VAR...} replaced by a plain token, as compose would substitute it."""
    return INTERPOLATION.sub("substituted", value)


def test_compose_has_web_postgres_redis(compose):
    assert {"web", "postgres", "redis"} <= set(compose["services"])


def test_compose_web_sets_only_variables_settings_read(web_env):
    unknown = set(web_env) - names_read_by_settings()

    assert unknown == set()


def test_compose_web_runs_production_mode(web_env):
    assert web_env["DEBUG"] == "false"
    assert web_env["REDIS_URL"], "DEBUG off needs the Redis layer (telehealth.E001)"
    assert "*" not in web_env["ALLOWED_HOSTS"]


def test_compose_database_url_points_at_postgres_service(compose, web_env):
    postgres_env = compose["services"]["postgres"]["environment"]

    db = parse_database_url(placeholder(web_env["DATABASE_URL"]), base_dir=Path("/"))

    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert db["HOST"] == "postgres"
    assert (db["PORT"] or "5432") == "5432"
    assert db["NAME"] == postgres_env["POSTGRES_DB"]
    assert db["USER"] == postgres_env["POSTGRES_USER"]


def test_compose_database_password_is_the_postgres_services(compose, web_env):
    password_in_url = re.search(r"://[^:]+:(\$\{[^}]+\})@", web_env["DATABASE_URL"])

    assert password_in_url is not None
    assert INTERPOLATION.fullmatch(password_in_url.group(1)).group(1) == INTERPOLATION.fullmatch(
        compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    ).group(1)


def test_compose_redis_url_points_at_redis_service(web_env):
    url = parse_redis_url(placeholder(web_env["REDIS_URL"]))

    assert re.match(r"redis://redis(:6379)?/", url)


def test_compose_secret_key_is_required_not_defaulted(web_env):
    # ${VAR:?message} makes compose refuse to start without it; ${VAR:-default} would ship a known key.
    assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", web_env["SECRET_KEY"])


def test_compose_hard_codes_no_secret(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|TOKEN|_KEY$", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), f"{name}.{key} must come from ${{VAR:?}}"


def test_compose_every_service_has_healthcheck(compose):
    tests = {name: " ".join(service["healthcheck"]["test"]) for name, service in compose["services"].items()}

    assert "pg_isready" in tests["postgres"]
    assert "redis-cli ping" in tests["redis"]
    assert "/healthz" in tests["web"]


def test_compose_web_waits_for_healthy_services(compose):
    depends_on = compose["services"]["web"]["depends_on"]

    assert depends_on == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "janus": {"condition": "service_started"},  # the broker reconnects if Janus comes up later
    }


def test_compose_web_is_wired_to_janus_and_turn(compose):
    env = compose["services"]["web"]["environment"]

    assert env["JANUS_URLS"] == "ws://janus:8188"  # the compose network: the API is never published
    assert "janus" in compose["services"] and "coturn" in compose["services"]
    assert env["TURN_URLS"].startswith("turn:${MEDIA_PUBLIC_IP")
    assert all(env[name].startswith("${") for name in ("JANUS_API_SECRET", "JANUS_ADMIN_KEY", "TURN_SECRET"))


def test_compose_postgres_data_on_named_volume(compose):
    volume = next(v for v in compose["services"]["postgres"]["volumes"] if v.endswith(":/var/lib/postgresql/data"))

    assert volume.split(":")[0] in compose["volumes"]


def test_compose_web_builds_dockerfile_serving_daphne(compose):
    assert compose["services"]["web"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM python:3.11-slim" in dockerfile
    assert "collectstatic" in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, flags=re.MULTILINE)
    start = (ROOT / "scripts" / "container-start").read_text()
    assert "check --deploy" in start
    assert "exec python -m telehealth.serve --host 0.0.0.0 --port 8000" in start
    assert any(port.endswith(":8000") for port in compose["services"]["web"]["ports"])


def run_web_healthcheck(compose, base_url: str, allowed_hosts: str) -> subprocess.CompletedProcess:
    """Run the compose web health check's Python, aimed at this daphne instead of port 8000."""
    command = compose["services"]["web"]["healthcheck"]["test"]
    assert command[:3] == ["CMD", "python", "-c"]
    code = command[3].replace("127.0.0.1:8000", f"127.0.0.1:{urlparse(base_url).port}")
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": os.environ["PATH"], "ALLOWED_HOSTS": allowed_hosts},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_compose_web_healthcheck_passes_against_production_daphne(compose, daphne, tmp_path):
    # The production shape: DEBUG off and a public host name first in ALLOWED_HOSTS.
    allowed_hosts = "iop.example.org,127.0.0.1"
    base_url = daphne(DEBUG="false", ALLOWED_HOSTS=allowed_hosts, STATIC_ROOT=str(tmp_path))

    healthy = run_web_healthcheck(compose, base_url, allowed_hosts)
    refused = run_web_healthcheck(compose, base_url, "not-allowed.example")

    assert healthy.returncode == 0, healthy.stderr
    assert refused.returncode != 0
    assert "400" in refused.stderr
