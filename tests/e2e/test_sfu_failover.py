"""A Janus node dies under a live SFU room of browsers: the session moves and every page sees and hears again.

Two Janus processes (one deployment: one API secret and admin key), our daphne checking them every
second. A therapist and two participants in chromium exchange media through the node the session
was pinned to; that node is killed with SIGKILL. Nothing is done for the pages: the server marks the
node down, moves the room and tells them `sfu.link` `moved`; each page publishes and subscribes again
on new connections (sfu.js) and the others' video and audio flow again.
"""

from __future__ import annotations

import secrets
import signal
from types import SimpleNamespace

import pytest

from tests.e2e.conftest import _stop, make_server, media_page
from tests.e2e.test_room_flow import ARRANGE, join_and_wait, open_prejoin, wait_for_media
from tests.e2e.test_sfu_room import SFU_STATS
from tests.media.conftest import launch_janus, require_binary, stop_janus

pytestmark = [pytest.mark.e2e, pytest.mark.media]

NEW_SUBSCRIBER = (
    "() => { const sub = window.telehealth.peers().subscriber; return sub && sub !== window.oldSubscriber; }"
)
PLACEMENT = "from media.models import SfuRoom; print(SfuRoom.objects.get(session_id='{session}').node)"


def placement(server, session: str) -> str:
    """The Janus node the session's room is on (the command's last line of output)."""
    return server.manage("shell", "-c", PLACEMENT.format(session=session)).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def two_node_server(tmp_path_factory):
    binary = require_binary("janus")
    api_secret, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    folder = tmp_path_factory.mktemp("janus-nodes")
    nodes = [
        launch_janus(binary, folder / f"node-{n}", rtp_ports=120, api_secret=api_secret, admin_key=admin_key)
        for n in range(2)
    ]
    try:
        server, proc, log, session_id = make_server(
            tmp_path_factory,
            "sfu-failover",
            ARRANGE,
            JANUS_URLS=",".join(node.url for node in nodes),
            JANUS_API_SECRET=api_secret,
            JANUS_ADMIN_KEY=admin_key,
            JANUS_HEALTH_SECONDS="1",
        )
        session_id = session_id.splitlines()[-1]
        try:
            yield SimpleNamespace(server=server, nodes=nodes, session=session_id, join=f"/sessions/{session_id}/join/")
        finally:
            _stop(proc)
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        for node in nodes:
            stop_janus(node)


def test_pages_get_media_again_after_the_sessions_janus_node_is_killed(two_node_server, media_browser):
    setup = two_node_server
    server = setup.server
    contexts, pages = [], []
    try:
        for username in ("demo-p01", "demo-p02", "demo-lead"):
            context, page, _watch = media_page(media_browser, server, username)
            contexts.append(context)
            pages.append(page)
        p1, p2, therapist = pages
        for page in (p1, p2):
            join_and_wait(page, server, setup.join)
        open_prejoin(therapist, server, setup.join)
        therapist.get_by_role("button", name="Enter as therapist").click()
        therapist.locator("#waiting-list li").nth(1).wait_for()
        therapist.get_by_role("button", name="Admit all").click()
        for page in pages:
            page.get_by_role("button", name="Mute microphone").wait_for()
        for page in pages:
            assert page.evaluate("() => window.telehealth.mediaPath()") == "sfu"
            wait_for_media(page, 2, timeout=30, stats=SFU_STATS)
            page.evaluate("() => { window.oldSubscriber = window.telehealth.peers().subscriber; }")

        pinned = placement(server, setup.session)
        dead = next(node for node in setup.nodes if node.url == pinned)
        alive = next(node for node in setup.nodes if node is not dead)
        dead.process.send_signal(signal.SIGKILL)
        dead.process.wait(timeout=5)

        for page in pages:
            # A new receiving connection (the page started over when told the session moved) ...
            page.wait_for_function(
                NEW_SUBSCRIBER,
                timeout=30_000,
            )
        for page in pages:
            # ... over which the other two's video plays and their audio arrives again.
            stats = wait_for_media(page, 2, timeout=40, stats=SFU_STATS)
            assert all(s["width"] > 0 for s in stats)
        moved_to = placement(server, setup.session)
    finally:
        for context in contexts:
            context.close()

    assert moved_to == alive.url != pinned
