"""The therapist + 3 participants scenario in an SFU room: real chromium pages, our daphne, a real Janus.

The demo's "Coping skills group" is a group room, so with JANUS_URLS set its media goes through
Janus: every page publishes once and receives everyone else over one subscriber connection, with
SDP and ICE exchanged only with our server (sfu.* frames). Every page must show the other three's
video playing and their audio arriving.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from tests.e2e.conftest import _stop, log_in, make_server, new_page
from tests.e2e.test_room_flow import ARRANGE, join_and_wait, open_prejoin, wait_for_media
from tests.media.conftest import launch_janus, require_binary, stop_janus

pytestmark = [pytest.mark.e2e, pytest.mark.media]

# What arrives from each member over the subscriber connection, and what their tile shows.
SFU_STATS = """
async () => {
  const stats = await window.telehealth.memberStats();
  return Object.entries(stats).map(([member, kinds]) => {
    const video = document.querySelector(`.tile[data-member="${member}"] video`);
    return {
      member,
      frames: kinds.video ? kinds.video.framesDecoded : 0,
      audioBytes: kinds.audio ? kinds.audio.bytesReceived : 0,
      samples: kinds.audio ? kinds.audio.totalSamplesReceived : 0,
      width: video ? video.videoWidth : 0,
      paused: video ? video.paused : true,
      received: kinds.video ? kinds.video.frameWidth : 0,
    };
  });
}
"""


@pytest.fixture(scope="module")
def sfu_server(tmp_path_factory):
    node = launch_janus(require_binary("janus"), tmp_path_factory.mktemp("janus"))
    try:
        server, proc, log, session_id = make_server(
            tmp_path_factory,
            "sfu-room",
            ARRANGE,
            JANUS_URLS=node.url,
            JANUS_API_SECRET=node.api_secret,
            JANUS_ADMIN_KEY=node.admin_key,
        )
        try:
            yield server, f"/sessions/{session_id.splitlines()[-1]}/join/"
        finally:
            _stop(proc)
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        stop_janus(node)


@pytest.fixture(scope="module")
def group(sfu_server, media_browser):
    server, _ = sfu_server
    contexts, pages = [], {}
    for key, username in [("therapist", "demo-lead"), ("p1", "demo-p01"), ("p2", "demo-p02"), ("p3", "demo-p03")]:
        context, page, _watch = new_page(media_browser)
        page.set_default_timeout(20_000)
        context.grant_permissions(["camera", "microphone"], origin=server.url)
        log_in(page, server, username)
        contexts.append(context)
        pages[key] = page
    try:
        yield SimpleNamespace(**pages)
    finally:
        for context in contexts:
            context.close()


def test_four_people_in_an_sfu_room_see_and_hear_each_other_through_janus(sfu_server, group):
    server, join_path = sfu_server
    everyone = [group.therapist, group.p1, group.p2, group.p3]
    for page in (group.p1, group.p2, group.p3):
        join_and_wait(page, server, join_path)
    open_prejoin(group.therapist, server, join_path)
    group.therapist.get_by_role("button", name="Enter as therapist").click()
    group.therapist.locator("#waiting-list li").nth(2).wait_for()

    group.therapist.get_by_role("button", name="Admit all").click()

    for page in everyone:
        page.get_by_role("button", name="Mute microphone").wait_for()
    for page in everyone:
        stats = wait_for_media(page, 3, timeout=30, stats=SFU_STATS)
        assert page.evaluate("() => window.telehealth.mediaPath()") == "sfu"
        # Two connections whatever the group's size: one publishing, one receiving everyone.
        assert sorted(page.evaluate("() => Object.keys(window.telehealth.peers())")) == ["publisher", "subscriber"]
        assert all(s["width"] > 0 for s in stats)

    # Simulcast: with the spotlight on Casey B., the others receive Casey's high picture and
    # everyone else's low one (four equal tiles had all been high).
    spotlit, thumbnail = "Casey B.", "Riley C."
    group.therapist.get_by_label(f"More for {spotlit}").click()
    group.therapist.get_by_role("button", name=f"Spotlight {spotlit}").click()
    member_of = (
        "(name) => [...document.querySelectorAll('.tile')].find((t) => t.textContent.includes(name)).dataset.member"
    )
    widths = """async ([big, small]) => {
      const stats = await window.telehealth.memberStats();
      return [stats[big].video.frameWidth, stats[small].video.frameWidth];
    }"""
    for page in (group.p1, group.therapist):
        big, small = page.evaluate(member_of, spotlit), page.evaluate(member_of, thumbnail)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            spotlight_width, thumbnail_width = page.evaluate(widths, [big, small])
            if spotlight_width >= 2 * thumbnail_width > 0:
                break
            page.wait_for_timeout(500)
        assert spotlight_width >= 2 * thumbnail_width > 0, (spotlight_width, thumbnail_width)
        print(f"simulcast: spotlight received {spotlight_width} px wide, a thumbnail {thumbnail_width} px")
