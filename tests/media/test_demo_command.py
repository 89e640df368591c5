"""The README's run command (scripts/demo) starts Janus with a generated config when the binary is
installed, group rooms then go through it, and stopping the command stops both servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest
import websockets

from tests.media.conftest import ROOT, free_port, require_binary, wait_until

pytestmark = pytest.mark.media

WELCOME = """
import json
from accounts.models import User
from media.seating import login_cookie
from rooms.models import Session
session = Session.objects.filter(title="Coping skills group").order_by("-status", "starts_at").first()
print(json.dumps({"session": str(session.pk), "cookie": login_cookie(User.objects.get(username="demo-lead"))}))
"""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


async def test_demo_command_runs_group_rooms_through_janus_and_stops_both_servers(tmp_path):
    require_binary("janus")
    port, janus_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        "DEMO_PORT": str(port),
        "DEMO_JANUS_PORT": str(janus_port),
        "DEMO_JANUS_DIR": str(tmp_path / "janus"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
    }
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen(["bash", "scripts/demo"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), 120, "the demo to serve", demo, log)
        janus = subprocess.run(["pgrep", "-f", f"{tmp_path}/janus/janus.jcfg"], capture_output=True, text=True)
        found = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "manage.py", "shell", "-c", WELCOME],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "telehealth.settings"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        ids = json.loads(found.stdout.strip().splitlines()[-1])
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/sessions/{ids['session']}/",
            subprotocols=["telehealth.v1"],
            additional_headers={"Cookie": f"sessionid={ids['cookie']}", "Origin": url},
        ) as ws:
            welcome = json.loads(await ws.recv())
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(20)
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", f"-p {port} telehealth|{tmp_path}/janus/"], capture_output=True, text=True)

    assert janus.stdout.strip(), log.read_text()
    assert f"media: group rooms through Janus on 127.0.0.1:{janus_port}" in log.read_text()
    assert (welcome["type"], welcome["room"]["media"]["mode"]) == ("welcome", "sfu")
    assert left.stdout.strip() == ""  # daphne and Janus went with the command
