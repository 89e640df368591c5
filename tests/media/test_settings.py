"""The Janus and TURN settings: read from the environment (``_FILE`` for secrets), refused loudly when unsafe.

Settings are loaded in a child process with exactly the variables a test gives (``clean_env``),
because Django reads them once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from media import turn

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.media

PROBE = """
import json
from django.conf import settings
import django
django.setup()
print(json.dumps({name: getattr(settings, name) for name in
    ("JANUS_URLS", "JANUS_API_SECRET", "JANUS_ADMIN_KEY", "TURN_URLS", "TURN_SECRET", "TURN_TTL_MARGIN")}))
"""
TURN_SECRET = "t" * 40
JANUS_SECRET = "j" * 30


def load(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def loaded(env: dict[str, str]) -> dict:
    result = load(env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_media_settings_default_is_no_sfu_and_no_turn(clean_env):
    assert loaded(clean_env()) == {
        "JANUS_URLS": [],
        "JANUS_API_SECRET": "",
        "JANUS_ADMIN_KEY": "",
        "TURN_URLS": [],
        "TURN_SECRET": "",
        "TURN_TTL_MARGIN": 3600,
    }


def test_media_settings_secrets_from_files(clean_env, tmp_path):
    for name, value in {"turn": TURN_SECRET, "api": JANUS_SECRET, "key": "k" * 30}.items():
        (tmp_path / name).write_text(value + "\n")

    settings = loaded(
        clean_env(
            TURN_URLS="turn:turn.example.org:3478?transport=udp,turns:turn.example.org:443?transport=tcp",
            TURN_SECRET_FILE=str(tmp_path / "turn"),
            TURN_TTL_MARGIN="600",
            JANUS_URLS="ws://127.0.0.1:8188,ws://10.0.0.7:8188",
            JANUS_API_SECRET_FILE=str(tmp_path / "api"),
            JANUS_ADMIN_KEY_FILE=str(tmp_path / "key"),
        )
    )

    assert settings == {
        "JANUS_URLS": ["ws://127.0.0.1:8188", "ws://10.0.0.7:8188"],
        "JANUS_API_SECRET": JANUS_SECRET,
        "JANUS_ADMIN_KEY": "k" * 30,
        "TURN_URLS": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"],
        "TURN_SECRET": TURN_SECRET,
        "TURN_TTL_MARGIN": 600,
    }


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        pytest.param({"TURN_URLS": "turn:t.example:3478"}, "TURN_SECRET", id="turn-without-secret"),
        pytest.param({"TURN_URLS": "turn:t.example:3478", "TURN_SECRET": "short"}, "TURN_SECRET", id="short-secret"),
        pytest.param({"TURN_SECRET": TURN_SECRET}, "TURN_URLS is empty", id="secret-without-urls"),
        pytest.param(
            {"TURN_URLS": "stun:t.example:3478", "TURN_SECRET": TURN_SECRET}, "TURN_URLS entry", id="not-turn"
        ),
        pytest.param({"TURN_TTL_MARGIN": "5"}, "TURN_TTL_MARGIN=5 is below the minimum 60", id="tiny-margin"),
        pytest.param({"JANUS_URLS": "http://127.0.0.1:8088/janus"}, "JANUS_URLS entry", id="janus-http"),
        pytest.param({"JANUS_URLS": "ws://127.0.0.1:8188"}, "JANUS_API_SECRET", id="janus-without-secrets"),
        pytest.param(
            {"JANUS_URLS": "ws://127.0.0.1:8188", "JANUS_API_SECRET": JANUS_SECRET},
            "JANUS_ADMIN_KEY",
            id="janus-without-admin-key",
        ),
    ],
)
def test_media_settings_refuse_unsafe_values_naming_the_variable(clean_env, variables, message):
    result = load(clean_env(**variables))

    assert result.returncode != 0
    assert "ImproperlyConfiguredEnv" in result.stderr and message in result.stderr


def test_ice_servers_for_uses_settings(settings):
    settings.TURN_URLS = ["turn:turn.example.org:3478"]
    settings.TURN_SECRET = TURN_SECRET
    settings.TURN_TTL_MARGIN = 600
    now = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)

    servers = turn.ice_servers_for("member-1", valid_until=now + timedelta(hours=3), now=now)

    expected = turn.mint(TURN_SECRET, "member-1", valid_until=now + timedelta(hours=3), now=now, margin=timedelta(0))
    username = f"{int((now + timedelta(hours=3, minutes=10)).timestamp())}:{expected.username.split(':')[1]}"
    assert servers == [
        {
            "urls": ["turn:turn.example.org:3478"],
            "username": username,
            "credential": turn.turn_password(TURN_SECRET, username),
        }
    ]


def test_ice_servers_for_without_turn_is_empty(settings):
    settings.TURN_URLS = []

    assert turn.ice_servers_for("m", valid_until=datetime.now(UTC), now=datetime.now(UTC)) == []
