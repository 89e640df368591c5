"""The live session in real browsers: a therapist and three participants, each in their own browser
context (own cookies), against a live daphne on its own seeded database (this module ends the
session, so it must not share the demo server with the screen tests).

The tests run in file order and share the people (one browser context each, logged in once):
waiting and admission, media and chat, hands, spotlight, mute and hard mute, a dropped socket,
audio only, removal, and the end. Chromium's fake camera and microphone feed the media; a remote
video counts as playing when getStats shows frames decoded going up and the <video> element knows
its size, remote audio as arriving when bytes and samples received go up.

Writes docs/screenshots/prejoin.png, waiting-room.png, room-therapist.png, room-participant.png
and removed.png.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.e2e.conftest import _stop, axe_violations, console_of, log_in, make_server, media_page, new_page, screenshot

pytestmark = pytest.mark.e2e

# The therapist admits everyone here (the demo's own session lets people in by itself).
ARRANGE = """
from rooms.models import Session, AdmissionPolicy
s = Session.objects.get(title="Coping skills group", status="scheduled")
s.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
s.save(update_fields=["admission_policy"])
print(s.id)
"""

THERAPIST, P1, P2, P3 = "Dana W.", "Jordan A.", "Casey B.", "Riley C."

# Inbound media per peer connection: video frames decoded and the <video>'s size; audio bytes and samples.
MEDIA_STATS = """
async () => {
  const out = [];
  for (const [member, pc] of Object.entries(window.telehealth.peers())) {
    const s = {member, frames: 0, audioBytes: 0, samples: 0, state: pc.connectionState, signaling: pc.signalingState};
    (await pc.getStats()).forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      if (r.kind === "video") s.frames += r.framesDecoded || 0;
      if (r.kind === "audio") { s.audioBytes += r.bytesReceived || 0; s.samples += r.totalSamplesReceived || 0; }
    });
    const video = document.querySelector(`.tile[data-member="${member}"] video`);
    s.width = video ? video.videoWidth : 0;
    s.paused = video ? video.paused : true;
    out.push(s);
  }
  return out;
}
"""

# Every outgoing audio track, as the peer connections send it.
SENT_AUDIO_ENABLED = """
() => Object.values(window.telehealth.peers()).flatMap((pc) => pc.getSenders())
  .filter((s) => s.track && s.track.kind === "audio").map((s) => s.track.enabled)
"""


# What a page's session socket is doing (the page's own objects: static/js/protocol.js, room.js).
SOCKET_STATE = """() => {
  const {socket, state} = window.telehealth;
  return {open: socket.ws ? socket.ws.readyState : null, failed: socket.failed, stopped: socket.stopped,
          admitted: socket.admitted, closing: state.closing};
}"""


def wait_for_media(page, count: int, timeout: float = 45.0, stats: str = MEDIA_STATS) -> list[dict]:
    """`count` remote peers whose video is playing (frames decoded rising, a known size) and audio arriving.

    The default wait is generous: four chromium pages encoding and decoding each other's video on two
    slow shared cores take a while to connect (how fast is for bench/, not for this test).

    ``stats`` reads them in the page: per peer connection (mesh), or per member of the SFU subscription."""
    deadline = time.monotonic() + timeout
    last: list[dict] = []
    while time.monotonic() < deadline:
        first = {s["member"]: s for s in page.evaluate(stats)}
        page.wait_for_timeout(700)
        last = page.evaluate(stats)
        flowing = [
            s
            for s in last
            if s["member"] in first
            and s["frames"] > first[s["member"]]["frames"]
            and s["width"] > 0
            and not s["paused"]
            and s["audioBytes"] > first[s["member"]]["audioBytes"]
            and s["samples"] > first[s["member"]]["samples"]
        ]
        if len(flowing) == count and len(last) == count:
            return last
    raise AssertionError(
        f"expected {count} remote peers with video playing and audio arriving, got {last}; "
        f"the page's console: {console_of(page)[-30:]}"
    )


def open_prejoin(page, server, join_path: str) -> None:
    page.goto(f"{server.url}{join_path}")
    page.get_by_text("Your camera and microphone are ready.").wait_for()


def join_and_wait(page, server, join_path: str) -> None:
    open_prejoin(page, server, join_path)
    page.get_by_role("button", name="Join", exact=True).click()
    page.get_by_role("heading", name="Your therapist will let you in").wait_for()


def set_audio_only(page, button: str) -> None:
    """Settings -> "Switch to audio only" or "Turn video back on" -> Done."""
    page.get_by_role("button", name="Settings").click()
    page.get_by_role("dialog").get_by_role("button", name=button).click()
    page.get_by_role("button", name="Done").click()


def tile(page, name: str):
    return page.locator(".tile", has=page.locator(".tile__name", has_text=name))


# Devtools injects init scripts, so the strict CSP does not apply to this stand-in for a refusal.
DENY_MEDIA = """
navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("denied", "NotAllowedError"));
"""


@pytest.fixture(scope="module")
def room_server(tmp_path_factory):
    server, proc, log, session_id = make_server(tmp_path_factory, "room", ARRANGE)
    try:
        yield server, f"/sessions/{session_id.splitlines()[-1]}/join/"
    finally:
        _stop(proc)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def people(room_server, media_browser):
    """The therapist and three participants, logged in, each in a browser context of their own."""
    server, _ = room_server
    contexts, watches, pages = [], [], {}
    for key, username in [("therapist", "demo-lead"), ("p1", "demo-p01"), ("p2", "demo-p02"), ("p3", "demo-p03")]:
        # Therapists run groups from a desktop screen; participants here from a laptop.
        size = {"viewport": {"width": 1440, "height": 900}} if key == "therapist" else {}
        context, page, watch = media_page(media_browser, server, username, **size)
        contexts.append(context)
        watches.append(watch)
        pages[key] = page
    try:
        yield SimpleNamespace(**pages)
    finally:
        for context in contexts:
            context.close()
    for watch in watches:
        assert watch.violations == [] and watch.errors == []


# Runs before the main scenario below, which ends the session.
def test_participant_with_camera_and_microphone_blocked_is_told_and_can_still_wait(room_server, media_browser):
    server, join_path = room_server
    context, page, csp = new_page(media_browser)
    try:
        context.add_init_script(DENY_MEDIA)
        log_in(page, server, "demo-p05")
        page.goto(f"{server.url}{join_path}")

        page.get_by_text("Your browser is blocking the camera and microphone.").wait_for()
        assert page.get_by_role("button", name="No microphone").is_disabled()
        assert page.get_by_role("button", name="No camera").is_disabled()
        assert page.get_by_role("button", name="Try again").is_visible()
        assert not page.get_by_label("Camera", exact=True).is_visible()  # no picker for a device we can't open
        page.get_by_role("button", name="Join", exact=True).click()
        page.get_by_role("heading", name="Your therapist will let you in").wait_for()
        page.get_by_role("button", name="Leave the waiting room").click()
        page.get_by_role("heading", name="You left the session").wait_for()
        assert csp.violations == [] and csp.errors == []
    finally:
        context.close()


def test_precall_check_from_the_prejoin_screen_says_what_arrived(room_server, media_browser):
    server, join_path = room_server
    context, page, csp = new_page(media_browser)
    try:
        log_in(page, server, "demo-p06")
        open_prejoin(page, server, join_path)

        page.get_by_role("button", name="Test my connection").click()
        result = page.locator("#precall-result")
        verdict_shown = "() => (document.getElementById('precall-result').dataset.code || '') !== ''"
        page.wait_for_function(verdict_shown, timeout=20000)

        # The fake camera (640x480 at up to 15 fps here) reaches the server's probe over real WebRTC.
        assert result.get_attribute("data-code") == "precall.good_video", result.text_content()
        assert result.text_content().startswith("Good for video. (640×480 at ")
        assert "ms round trip" in result.text_content()
        assert page.locator("#precall-relay").is_hidden()  # no TURN configured in the demo
        assert page.get_by_role("button", name="Test my connection").is_enabled()
        assert csp.violations == [] and csp.errors == []
        screenshot(page, "precall.png")
    finally:
        context.close()


def test_participants_wait_therapist_admits_one_then_all_and_media_chat_and_hands_work(
    room_server, media_browser, people
):
    server, join_path = room_server
    therapist, p1, p2, p3 = people.therapist, people.p1, people.p2, people.p3

    # Pre-join: preview, device pickers, level meter, toggles; the session's title and time.
    open_prejoin(p1, server, join_path)
    assert p1.get_by_role("heading", name="Coping skills group").is_visible()
    assert p1.get_by_label("Camera", exact=True).locator("option").count() >= 1
    assert p1.get_by_label("Microphone", exact=True).locator("option").count() >= 1
    assert p1.get_by_role("button", name="Microphone on").is_enabled()
    p1.get_by_role("button", name="Camera on").click()
    assert p1.get_by_role("button", name="Camera off").get_attribute("data-on") == "false"
    assert p1.get_by_text("Your camera is off").is_visible()
    p1.get_by_role("button", name="Camera off").click()
    p1.wait_for_function("() => document.getElementById('preview').videoWidth > 0")
    p1.wait_for_function("() => document.getElementById('mic-meter').value > 0")
    assert axe_violations(p1) == []
    screenshot(p1, "prejoin.png")

    # Three participants wait, in this order.
    p1.get_by_role("button", name="Join", exact=True).click()
    p1.get_by_role("heading", name="Your therapist will let you in").wait_for()
    join_and_wait(p2, server, join_path)
    join_and_wait(p3, server, join_path)

    # The therapist goes straight in and sees all three waiting, earliest first.
    open_prejoin(therapist, server, join_path)
    therapist.get_by_role("button", name="Enter as therapist").click()
    waiting = therapist.locator("#waiting-list")
    waiting.locator("li").nth(2).wait_for()
    assert waiting.locator(".person__name").all_inner_texts() == [P1, P2, P3]
    assert waiting.locator(".person__detail").first.inner_text().startswith("waiting ")
    therapist.get_by_role("timer").get_by_text(re.compile(r"Session time \d+:\d\d")).wait_for()

    # A message to the waiting room reaches everyone there.
    therapist.get_by_text("Message to the waiting room").click()
    therapist.get_by_label("Everyone waiting sees this").fill("We start in two minutes. Grab some water.")
    therapist.get_by_role("button", name="Send to the waiting room").click()
    therapist.get_by_text("Sent to the 3 people waiting.").wait_for()
    for page in (p1, p2, p3):
        page.locator("#waiting-message").get_by_text("We start in two minutes. Grab some water.").wait_for()
    p2.wait_for_function("() => document.getElementById('waited').textContent !== '0:00'")
    assert axe_violations(p2) == []
    screenshot(p2, "waiting-room.png")

    # Admit one, then all.
    therapist.get_by_role("button", name=f"Admit {P1}").click()
    p1.get_by_role("button", name="Mute microphone").wait_for()  # in the room, without a reload
    assert p2.get_by_role("heading", name="Your therapist will let you in").is_visible()
    therapist.get_by_role("button", name="Admit all").click()
    p2.get_by_role("button", name="Mute microphone").wait_for()
    p3.get_by_role("button", name="Mute microphone").wait_for()
    therapist.locator("#waiting-empty").wait_for()

    # Someone new starts waiting: the therapist hears the chime and sees it written; a denial with a message.
    chimes = therapist.evaluate("() => window.telehealth.state.chimes")
    late_ctx, late, late_watch = new_page(media_browser)
    try:
        late.set_default_timeout(20_000)
        late_ctx.add_init_script(DENY_MEDIA)  # joining without devices, as many phones do
        log_in(late, server, "demo-p04")
        late.goto(f"{server.url}{join_path}")
        late.get_by_role("button", name="Join", exact=True).click()
        late.get_by_role("heading", name="Your therapist will let you in").wait_for()
        therapist.locator("#waiting-flag", has_text="Taylor D. is in the waiting room.").wait_for()
        therapist.wait_for_function(f"() => window.telehealth.state.chimes > {chimes}")
        assert therapist.title().startswith("(1 waiting)")
        therapist.get_by_role("button", name="Deny Taylor D.").click()
        therapist.get_by_label("Message to them (optional)").fill(
            "Today's group is full. Your therapist will call you."
        )
        therapist.get_by_role("button", name="Turn away").click()
        late.get_by_role("heading", name="Your therapist couldn't let you in").wait_for()
        assert late.get_by_text("Today's group is full. Your therapist will call you.").is_visible()
        assert late_watch.errors == []
    finally:
        late_ctx.close()

    # Every page shows the three others' video playing and hears their audio.
    for page in (therapist, p1, p2, p3):
        wait_for_media(page, 3)
    assert p1.locator(".tile").count() == 4

    # Room chat, both ways, rendered as text; an unread badge while the panel is closed.
    p1.get_by_role("button", name="Chat").click()
    p1.get_by_label("Message to everyone").fill("Hello <b>everyone</b>")
    p1.get_by_label("Message to everyone").press("Enter")
    p3.get_by_role("button", name=re.compile(r"^Chat 1 new$")).wait_for()
    therapist.get_by_role("button", name=re.compile(r"^Chat")).click()
    therapist.locator("#chat-log").get_by_text("Hello <b>everyone</b>").wait_for()
    assert therapist.locator("#chat-log b").count() == 0
    therapist.get_by_label("Message to everyone").fill("Welcome, Jordan")
    therapist.get_by_role("button", name="Send", exact=True).click()
    p1.locator("#chat-log").get_by_text("Welcome, Jordan").wait_for()
    assert p1.locator("#chat-log .chat-item__author").nth(1).inner_text() == THERAPIST

    # A private thread: Casey writes to the therapists only; the therapist answers into it.
    p2.get_by_role("button", name="Chat").click()
    p2.get_by_role("tab", name="Therapists only").click()
    p2.get_by_label("Private message to the therapists").fill("I may need to leave early today.")
    p2.get_by_role("button", name="Send privately").click()
    therapist.get_by_role("tab", name=re.compile(r"^Private 1 new$")).wait_for()
    therapist.get_by_role("tab", name=re.compile(r"^Private")).click()
    therapist.locator("#private-log").get_by_text("I may need to leave early today.").wait_for()
    assert therapist.locator("#private-log .chat-item__private").last.inner_text() == f"Private · from {P2}"
    assert therapist.get_by_label("Reply to").input_value() == p2.evaluate("() => window.telehealth.state.me")
    therapist.get_by_label("Private message", exact=True).fill("Thanks for telling me. That's fine.")
    therapist.get_by_role("button", name="Send privately").click()
    p2.locator("#private-log").get_by_text("Thanks for telling me. That's fine.").wait_for()
    assert p2.locator("#private-log .chat-item__private").last.inner_text() == "Private · from your therapist"
    # Nobody else in the group sees the thread.
    p1.locator("#chat-log").get_by_text("Welcome, Jordan").wait_for()
    assert p1.locator("#private-log li").count() == 0
    assert p1.evaluate("() => [...window.telehealth.state.chat.values()].every((m) => m.thread === null)")
    therapist.get_by_role("tab", name="Everyone").click()

    # Raised hands reach the therapist's queue in the order they went up.
    p3.get_by_role("button", name="Raise hand").click()
    therapist.locator("#hands-list").get_by_text(P3).wait_for()
    p1.get_by_label("Message to everyone").press("Escape")  # out of the chat box: shortcuts work again
    p1.keyboard.press("h")
    p1.get_by_role("button", name="Lower hand").wait_for()
    therapist.locator("#hands-list li").nth(1).wait_for()
    assert therapist.locator("#hands-list .person__name").all_inner_texts() == [P3, P1]
    tile(therapist, P3).get_by_text("Hand raised").wait_for()

    # What each of them sees on their screen (the therapist's side column scrolls on its own).
    for page in (therapist, p1):
        page.evaluate("() => window.scrollTo(0, 0)")
    screenshot(therapist, "room-therapist.png", full_page=False)
    screenshot(p1, "room-participant.png", full_page=False)

    # Lower one (the first), then all.
    therapist.get_by_role("button", name=f"Lower hand of {P3}").click()
    p3.get_by_role("button", name="Raise hand").wait_for()
    therapist.wait_for_function("() => document.querySelectorAll('#hands-list li').length === 1")
    p2.get_by_role("button", name="Raise hand").click()
    therapist.locator("#hands-list").get_by_text(P2).wait_for()
    therapist.get_by_role("button", name="Lower all hands").click()
    for page in (p1, p2):
        page.get_by_role("button", name="Raise hand").wait_for()
    therapist.locator("#hands-empty").wait_for()

    # Spotlight: the tile is the large one on everyone's screen, until cleared.
    therapist.get_by_label(f"More for {P2}").click()
    therapist.get_by_role("button", name=f"Spotlight {P2}").click()
    for page in (p1, p3):
        tile(page, P2).and_(page.locator(".tile--featured")).wait_for()
        big = tile(page, P2).bounding_box()
        small = tile(page, THERAPIST).bounding_box()
        assert big["width"] > 2 * small["width"]
    therapist.get_by_text(f"Spotlight: {P2}").wait_for()
    therapist.get_by_role("button", name="Clear spotlight", exact=True).click()
    p1.wait_for_function("() => document.querySelectorAll('.tile--featured').length === 0")

    assert axe_violations(p1) == []
    assert axe_violations(therapist) == []


def test_mute_and_hard_mute_turn_the_outgoing_audio_off_until_released(people):
    therapist, p1 = people.therapist, people.p1

    # A soft mute: the track goes out disabled, the page says so, and the participant may unmute.
    therapist.get_by_role("button", name=f"Mute {P1}").click()
    p1.locator("#mod-note", has_text="A therapist muted your microphone.").wait_for()
    assert p1.get_by_role("button", name="Unmute microphone").get_attribute("aria-disabled") == "false"
    assert p1.evaluate(SENT_AUDIO_ENABLED) == [False, False, False]
    tile(therapist, P1).get_by_text("Muted", exact=True).wait_for()
    therapist.get_by_role("button", name=f"Ask to unmute {P1}").click()
    p1.locator("#mod-note", has_text="Your therapist asks you to unmute.").wait_for()
    p1.get_by_role("button", name="Unmute microphone").click()
    p1.get_by_role("button", name="Mute microphone").wait_for()
    assert p1.evaluate(SENT_AUDIO_ENABLED) == [True, True, True]
    tile(therapist, P1).get_by_text("Muted", exact=True).wait_for(state="detached")

    # A hard mute: the button says why and neither a click nor the M key turns the microphone on.
    therapist.get_by_label(f"More for {P1}").click()
    therapist.get_by_role("button", name=f"Mute and lock {P1}").click()
    locked = p1.get_by_role("button", name="Muted by therapist")
    locked.wait_for()
    assert locked.get_attribute("aria-disabled") == "true"
    locked.focus()  # still focusable (aria-disabled), so the reason can be found
    p1.keyboard.press("Enter")
    p1.keyboard.press("m")
    p1.locator("#mod-note", has_text="You can't unmute until they allow it.").wait_for()
    assert p1.evaluate(SENT_AUDIO_ENABLED) == [False, False, False]
    assert p1.evaluate("() => window.telehealth.state.mic") is False
    tile(therapist, P1).get_by_text("Muted by therapist").wait_for()

    # Released: the participant may unmute again, and does.
    therapist.get_by_role("button", name=f"Allow unmute for {P1}").click()
    p1.locator("#mod-note", has_text="Your therapist allows you to unmute again.").wait_for()
    p1.get_by_role("button", name="Unmute microphone").click()
    p1.get_by_role("button", name="Mute microphone").wait_for()
    assert p1.evaluate(SENT_AUDIO_ENABLED) == [True, True, True]
    tile(therapist, P1).get_by_text("Muted", exact=False).wait_for(state="detached")


def test_therapist_turns_a_camera_off_and_the_participant_can_turn_it_back_on(people):
    therapist, p3 = people.therapist, people.p3
    therapist.get_by_label(f"More for {P3}").click()
    therapist.get_by_role("button", name=f"Camera off for {P3}").click()
    p3.locator("#mod-note", has_text="A therapist turned your camera off.").wait_for()
    assert p3.evaluate("() => window.telehealth.media.videoTrack.enabled") is False
    tile(therapist, P3).get_by_text("Camera off").wait_for()
    p3.get_by_role("button", name="Turn camera on").click()
    tile(therapist, P3).get_by_text("Camera off").wait_for(state="detached")
    assert p3.evaluate("() => window.telehealth.media.videoTrack.enabled") is True


def test_audio_only_stops_video_both_ways_and_comes_back(people):
    therapist, p3 = people.therapist, people.p3
    set_audio_only(p3, "Switch to audio only")
    p3.locator("#audio-only-chip").wait_for()
    # Every video transceiver negotiated to inactive: nothing sent, nothing received.
    p3.wait_for_function(
        "() => Object.values(window.telehealth.peers()).every((pc) => pc.getTransceivers()"
        ".filter((t) => t.receiver.track.kind === 'video').every((t) => t.currentDirection === 'inactive'))"
    )
    tile(therapist, P3).get_by_text("Camera off").wait_for()
    # Audio keeps flowing.
    before = p3.evaluate(MEDIA_STATS)
    p3.wait_for_timeout(700)
    after = {s["member"]: s for s in p3.evaluate(MEDIA_STATS)}
    assert all(after[s["member"]]["audioBytes"] > s["audioBytes"] for s in before)

    p3.get_by_role("button", name="Turn camera on").click()
    p3.locator("#audio-only-chip").wait_for(state="hidden")
    wait_for_media(p3, 3)
    tile(therapist, P3).get_by_text("Camera off").wait_for(state="detached")


def test_dropped_socket_comes_back_to_the_same_seat_with_the_missed_chat_and_media(people):
    therapist, p1 = people.therapist, people.p1
    roster = therapist.evaluate("() => window.telehealth.state.roster.size")
    chat_before = p1.locator("#chat-log li").count()
    p1.evaluate("() => window.telehealth.socket.dropForTest()")
    therapist.get_by_label("Message to everyone").fill("While you were away")
    therapist.get_by_role("button", name="Send", exact=True).click()
    p1.locator("#chat-log").get_by_text("While you were away").wait_for()
    p1.wait_for_timeout(500)
    assert p1.locator("#chat-log").get_by_text("While you were away").count() == 1
    assert p1.locator("#chat-log li").count() == chat_before + 1
    assert therapist.evaluate("() => window.telehealth.state.roster.size") == roster
    for page in (therapist, p1):
        wait_for_media(page, 3)


def test_removed_participant_sees_the_removed_page_and_cannot_come_back(people):
    therapist, p2 = people.therapist, people.p2
    therapist.get_by_label(f"More for {P2}").click()
    therapist.get_by_role("button", name=f"Remove {P2}").click()
    therapist.get_by_role("button", name="Remove", exact=True).click()
    try:
        p2.get_by_role("heading", name="You were removed from this session").wait_for()
    except PlaywrightTimeoutError:
        # This wait once timed out in CI and passed on every rerun: say what each side saw next time.
        raise AssertionError(
            f"no removed page: p2 shows {p2.locator('h1:visible, h2:visible').all_inner_texts()}, its socket "
            f"{p2.evaluate(SOCKET_STATE)}, its console {console_of(p2)[-20:]}; the therapist's tile of "
            f"{P2} is {'still there' if tile(therapist, P2).count() else 'gone'}, its console "
            f"{console_of(therapist)[-20:]}"
        ) from None
    screenshot(p2, "removed.png")
    tile(therapist, P2).wait_for(state="detached")
    p2.reload()
    assert p2.get_by_role("heading", name="You can't rejoin this session").is_visible()
    assert p2.locator("#room-app").count() == 0


def test_a_knock_on_the_locked_room_reaches_the_therapist_and_unlocking_lets_them_wait(
    room_server, media_browser, people
):
    server, join_path = room_server
    therapist = people.therapist
    context, page, watch = new_page(media_browser)
    try:
        page.set_default_timeout(20_000)
        context.add_init_script(DENY_MEDIA)
        log_in(page, server, "demo-p06")
        page.goto(f"{server.url}{join_path}")
        page.get_by_role("button", name="Join", exact=True).wait_for()
        chimes = therapist.evaluate("() => window.telehealth.state.chimes")
        therapist.get_by_role("button", name="Lock the room").click()
        therapist.get_by_role("button", name="Unlock the room").wait_for()

        page.get_by_role("button", name="Join", exact=True).click()
        # The server refuses the connection and tells the therapists; the page keeps trying and says so.
        therapist.locator("#waiting-flag", has_text="Alex F. is knocking: the room is locked.").wait_for()
        therapist.wait_for_function(f"() => window.telehealth.state.chimes === {chimes + 1}")
        page.get_by_role("button", name="Still trying to get in…").wait_for()
        page.get_by_text("The room may be locked for a moment").wait_for()

        therapist.get_by_role("button", name="Unlock the room").click()
        page.get_by_role("heading", name="Your therapist will let you in").wait_for()
        therapist.locator("#waiting-list").get_by_text("Alex F.").wait_for()
        # One knock, one chime: the retries while it was locked did not ring again.
        assert therapist.evaluate("() => window.telehealth.state.chimes") == chimes + 2  # + the waiting list
        page.get_by_role("button", name="Leave the waiting room").click()
        page.get_by_role("heading", name="You left the session").wait_for()
        assert watch.violations == [] and watch.errors == []
    finally:
        context.close()


def test_therapist_ends_the_session_and_everyone_sees_the_closing_page(people):
    therapist = people.therapist
    therapist.get_by_role("button", name="End session for everyone").click()
    therapist.get_by_role("button", name="End session", exact=True).click()
    for page in (therapist, people.p1, people.p3):
        page.get_by_role("heading", name="The session has ended").wait_for()
