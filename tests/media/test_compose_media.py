"""docker-compose.yml's Janus and coturn agree with the generators and stay closed.

No Docker engine runs here, so the file is read with PyYAML, and the media-config command is
run for real (the generators, with its own arguments) into a temporary folder.
"""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from media import coturnconf, janusconf
from tests.media.conftest import ROOT

pytestmark = pytest.mark.media


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def generator_commands(services) -> list[list[str]]:
    """The media-config shell command as argument lists, $$VAR as compose leaves it for the shell."""
    script = services["media-config"]["command"][2].replace("$$", "$")
    return [shlex.split(part) for part in script.split("&&")]


def test_compose_janus_api_is_not_published(services):
    ports = services["janus"].get("ports", [])

    assert not any("8188" in port or "8088" in port or "7088" in port for port in ports)


def test_compose_published_media_ports_match_generated_ranges(services):
    janus_cmd, coturn_cmd = generator_commands(services)
    rtp = janus_cmd[janus_cmd.index("--rtp-ports") + 1]
    relay = f"{coturn_cmd[coturn_cmd.index('--min-port') + 1]}-{coturn_cmd[coturn_cmd.index('--max-port') + 1]}"

    assert f"{rtp}:{rtp}/udp" in services["janus"]["ports"]
    assert f"{relay}:{relay}/udp" in services["coturn"]["ports"]


def test_compose_media_config_command_writes_safe_configs(services, tmp_path, monkeypatch):
    monkeypatch.setenv("JANUS_API_SECRET", "a" * 32)
    monkeypatch.setenv("JANUS_ADMIN_KEY", "b" * 32)
    monkeypatch.setenv("TURN_SECRET", "c" * 32)
    janus_cmd, coturn_cmd = generator_commands(services)
    assert janus_cmd[:3] == ["python", "-m", "media.janusconf"]
    assert coturn_cmd[:3] == ["python", "-m", "media.coturnconf"]

    def local(args: list[str]) -> list[str]:
        return [
            str(tmp_path) + a.removeprefix("/config") if a.startswith("/config") else "203.0.113.10"
            if a == "$MEDIA_PUBLIC_IP" else a
            for a in args
        ]  # fmt: skip

    assert janusconf.main(local(janus_cmd[3:])) == 0
    assert coturnconf.main(local(coturn_cmd[3:])) == 0

    janus = (tmp_path / "janus" / "janus.jcfg").read_text()
    turn = (tmp_path / "coturn" / "turnserver.conf").read_text().splitlines()
    assert 'nat_1_1_mapping = "203.0.113.10"' in janus
    assert re.search(r'disable = "[^"]*libjanus_http\.so', janus)
    assert "external-ip=203.0.113.10" in turn and "denied-peer-ip=10.0.0.0-10.255.255.255" in turn
    assert "allow-loopback-peers" not in turn


def test_compose_janus_and_coturn_run_the_generated_files(services):
    assert services["janus"]["command"][:5] == ["janus", "-C", "/config/janus/janus.jcfg", "-F", "/config/janus"]
    assert services["coturn"]["command"][:3] == ["turnserver", "-c", "/config/coturn/turnserver.conf"]
    for name in ("janus", "coturn"):
        assert services[name]["volumes"] == ["media-config:/config:ro"]
        assert services[name]["depends_on"] == {"media-config": {"condition": "service_completed_successfully"}}
