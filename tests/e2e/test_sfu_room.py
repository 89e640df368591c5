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

from tests.e2e.conftest import _stop, launch_media_browser, make_server, media_page, write_tone
from tests.e2e.test_room_flow import ARRANGE, join_and_wait, open_prejoin, set_audio_only, wait_for_media
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
def talking_browser(tmp_path_factory):
    """Every page's microphone plays a steady tone: someone who talks, until they mute."""
    tone = write_tone(tmp_path_factory.mktemp("tone") / "tone.wav")
    yield from launch_media_browser(f"--use-file-for-fake-audio-capture={tone}")


@pytest.fixture(scope="module")
def group(sfu_server, talking_browser):
    server, _ = sfu_server
    contexts, pages = [], {}
    for key, username in [("therapist", "demo-lead"), ("p1", "demo-p01"), ("p2", "demo-p02"), ("p3", "demo-p03")]:
        context, page, _watch = media_page(talking_browser, server, username)
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

    # Janus's talking events drive the highlight: when everyone but p1 mutes, the others' pages hear
    # from the SFU that p1 alone is talking, and p1's tile is the speaking one.
    for page in (group.therapist, group.p2, group.p3):
        page.get_by_role("button", name="Mute microphone").click()
    talker = group.therapist.evaluate(member_of, "Jordan A.")
    for page in (group.therapist, group.p2):
        page.wait_for_function(
            "(member) => { const s = window.telehealth.state;"
            " return s.talking.size === 1 && s.talking.has(member) && s.speaker === member; }",
            arg=talker,
            timeout=15_000,
        )
        page.locator(f'.tile--speaking[data-member="{talker}"]').wait_for()
        assert page.evaluate("() => window.telehealth.state.talkingEvents") > 0

    # Audio only on a weak phone: the SFU stops forwarding video to that page (every layer "off"),
    # its audio keeps coming, and the others are not affected; video comes back when asked.
    set_audio_only(group.p1, "Switch to audio only")
    group.p1.wait_for_timeout(1500)  # the request, and packets already on their way
    paused = received(group.p1)
    others_before = received(group.p2)
    group.p1.wait_for_timeout(2000)
    paused_after = received(group.p1)
    others_after = received(group.p2)
    for member, (frames, samples) in paused.items():
        assert paused_after[member][0] == frames, ("video still forwarded in audio-only mode", member)
        assert paused_after[member][1] > samples + 16_000, ("audio stopped", member)  # 2 s at 48 kHz is 96,000
    # p2 still gets the video of the two who kept their cameras on (p1 sends none in audio-only mode).
    both = set(others_before) & set(paused)
    assert len(both) == 2 and all(others_after[m][0] > others_before[m][0] + 20 for m in both)

    set_audio_only(group.p1, "Turn video back on")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        resumed = received(group.p1)
        if all(resumed[m][0] > paused_after[m][0] + 10 for m in paused_after):
            break
        group.p1.wait_for_timeout(500)
    assert all(resumed[m][0] > paused_after[m][0] + 10 for m in paused_after), (paused_after, resumed)


def received(page) -> dict[str, tuple[int, int]]:
    """Per member on this page: (video frames decoded, audio samples received) so far."""
    return {s["member"]: (s["frames"], s["samples"]) for s in page.evaluate(SFU_STATS)}


def test_downlink_estimate_falls_with_loss_and_grows_back_until_it_limits_nothing(sfu_server, group):
    # The pure part of sfu.js's bandwidth estimate, in the browser that runs it.
    server, _ = sfu_server
    page = group.p3
    result = page.evaluate(
        """async (base) => {
          const {layoutKbps, nextDownlinkEstimate} = await import(base + "/static/js/sfu.js");
          const wanted = layoutKbps({a: "high", b: "low", c: "low"});
          const steps = [];
          let estimate = null;
          for (const [kbps, loss] of [[2000, 0], [1500, 0.12], [1200, 0.03], [1250, 0], [1300, 0], [1300, 0],
                                      [1300, 0], [1300, 0], [1300, 0]]) {
            estimate = nextDownlinkEstimate(estimate, {kbps, loss, wantedKbps: wanted});
            steps.push(estimate);
          }
          return {wanted, steps, off: layoutKbps({a: "off"})};
        }""",
        server.url,
    )
    assert result["wanted"] == 1200 + 300 + 300 + 3 * 40 and result["off"] == 40
    # clean: no limit; 12 % loss: 85 % of what arrived; 3 %: hold; clean seconds: +15 % each until
    # it exceeds 1.5x what the layout wants, then no limit again.
    assert result["steps"][:5] == [None, 1275, 1275, 1466, 1686]
    assert result["steps"][-1] is None


def test_an_answer_to_the_publisher_before_a_restart_is_dropped_not_applied_to_the_new_one(sfu_server, group):
    # Starting over (a failover, a reconnect) makes a new publishing connection at once, but its offer
    # goes out only after the browser built it; the old connection's answer can arrive in between.
    # Applied to the new connection it fails ("called in wrong state: stable"); it must be dropped.
    server, _ = sfu_server
    page = group.p3
    result = page.evaluate(
        """async (base) => {
          const {SfuTransport} = await import(base + "/static/js/sfu.js");
          const sent = [];
          const warnings = [];
          const warn = console.warn;
          console.warn = (...args) => warnings.push(String(args[0]));
          const send = (type, data) => { const id = "c" + (sent.length + 1); sent.push({type, data, id}); return id; };
          const transport = new SfuTransport({send, onRemoteStream() {}, onPeerState() {}});
          const publishes = () => sent.filter((f) => f.type === "sfu.publish");
          const settle = async (count) => {
            for (let i = 0; i < 200 && publishes().length < count; i++) await new Promise((r) => setTimeout(r, 10));
          };
          try {
            transport.start();
            await settle(1);
            const first = publishes()[0];
            const answerer = new RTCPeerConnection();
            await answerer.setRemoteDescription({type: "offer", sdp: first.data.sdp});
            const answer = await answerer.createAnswer();
            answerer.close();
            transport.start();
            transport.handleSfu({type: "sfu.answer", re: first.id, sdp: answer.sdp});
            await settle(2);
            await new Promise((r) => setTimeout(r, 200));
            return {warnings, publishes: publishes().length, state: transport.pub.signalingState,
                    current: transport.pubRequest === publishes()[1].id};
          } finally {
            console.warn = warn;
            transport.closeAll();
          }
        }""",
        server.url,
    )
    assert result == {"warnings": [], "publishes": 2, "state": "have-local-offer", "current": True}
