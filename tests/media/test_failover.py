"""Several Janus nodes: a session is pinned to a healthy node, and moves when its node dies.

Two Janus processes share one api secret and admin key (one deployment); daphne checks them
every second (JANUS_HEALTH_SECONDS=1) and marks a node down after two failed checks. The node
a live group runs on is killed with SIGKILL mid-session: the session must move to the other
node and every participant must receive every other one's media again, with no help from
the test (the synthetic participants do what the browser does on ``sfu.link``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Iterator

import pytest

from media.synthetic import SyntheticParticipant, wait_for_frames
from tests.media.conftest import Server, launch_janus, require_binary, run_daphne, stop_janus
from tests.media.test_broker import clinic, close_all, counts, person

pytestmark = pytest.mark.media

PLACEMENT = """
import json
from media.models import JanusNode, SfuRoom
row = SfuRoom.objects.get(session_id="{session}")
down = sorted(JanusNode.objects.filter(down_since__isnull=False).values_list("url", flat=True))
print(json.dumps({{"node": row.node, "room": row.janus_room, "down": down}}))
"""
PLACED = 'from media.models import SfuRoom; print(SfuRoom.objects.filter(session_id="{session}").exists())'


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Iterator[tuple[Server, list]]:
    binary = require_binary("janus")
    folder = tmp_path_factory.mktemp("failover")
    api_secret, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    nodes = [
        launch_janus(binary, folder / f"janus-{n}", rtp_ports=120, api_secret=api_secret, admin_key=admin_key)
        for n in range(2)
    ]
    try:
        extra = {
            "JANUS_URLS": ",".join(node.url for node in nodes),
            "JANUS_API_SECRET": api_secret,
            "JANUS_ADMIN_KEY": admin_key,
            "JANUS_HEALTH_SECONDS": "1",
            "JANUS_HEALTH_FAILURES": "2",
        }
        for server in run_daphne(folder / "daphne", extra):
            yield server, nodes
    finally:
        for node in nodes:
            stop_janus(node)


def placement(server: Server, session: str) -> dict:
    done = server.manage("shell", "-c", PLACEMENT.format(session=session))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


async def wait_for_more_frames(group: list[SyntheticParticipant], before: dict, video: int, timeout: float) -> float:
    """Seconds until every participant got ``video`` more frames from every other one than in ``before``."""
    started = time.monotonic()

    def more(me: SyntheticParticipant) -> bool:
        return all(
            counts(me, other.member_id)["video"] - before[me.label][other.member_id] >= video
            for other in group
            if other is not me
        )

    while not all(more(me) for me in group):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"media did not resume within {timeout} s: {[p.frames_from() for p in group]}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_janus_node_killed_mid_session_moves_the_session_and_media_resumes(two_nodes):
    server, nodes = two_nodes
    ids = clinic(server)
    group = [person(server, ids, name) for name in ("lead", "pat", "sam")]
    try:
        for participant in group:
            await participant.start()
        await wait_for_frames(group, video=10, audio=10, timeout=30)
        before_kill = placement(server, ids["session"])
        dead = next(node for node in nodes if node.url == before_kill["node"])
        alive = next(node for node in nodes if node is not dead)

        dead.process.send_signal(signal.SIGKILL)
        dead.process.wait(timeout=5)
        killed_at = time.monotonic()
        before = {
            me.label: {o.member_id: counts(me, o.member_id)["video"] for o in group if o is not me} for me in group
        }
        resumed = await wait_for_more_frames(group, before, video=15, timeout=40)
        after = placement(server, ids["session"])

        # A session opening now goes to the live node, though the dead one has no rooms left.
        newcomer_ids = clinic(server)
        newcomer = person(server, newcomer_ids, "lead")
        await newcomer.start()
        await wait_until_placed(server, newcomer_ids["session"])
        newcomer_node = placement(server, newcomer_ids["session"])["node"]
        await newcomer.close()
    finally:
        await close_all(group)

    assert before_kill["down"] == []
    assert after["node"] == alive.url and after["room"] != before_kill["room"]
    assert after["down"] == [dead.url]
    assert newcomer_node == alive.url
    for participant in group:
        states = [f["state"] for f in participant.frames if f["type"] == "sfu.link"]
        assert "moved" in states, (participant.label, states)
        assert participant.sfu_restarts >= 1
    log = server.log.read_text()
    assert f"janus node {dead.url} is down: 1 live rooms moved" in log
    print(f"node killed -> every participant has 15 new video frames from every other one after {resumed:.2f} s")
    assert time.monotonic() - killed_at < 60


async def wait_until_placed(server: Server, session: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = server.manage(
            "shell",
            "-c",
            f'from media.models import SfuRoom; print(SfuRoom.objects.filter(session_id="{session}").exists())',
        )
        if done.stdout.strip().endswith("True"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the new session got no SFU room")
        await asyncio.sleep(0.2)
