"""The live session in real browsers: pre-join, waiting room, admission, media, chat, hand, removal, end.

A therapist and two participants, each in their own browser context (own cookies), against a
live daphne on its own seeded database: this module ends the session, so it must not share the
demo server with the screen tests. Chromium's fake camera and microphone feed the media; the
remote videos count as playing when getStats shows decoded frames going up and the <video>
element knows its size.

Writes docs/screenshots/prejoin.png, waiting-room.png, room-therapist.png, room-participant.png
and removed.png.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.e2e.conftest import (
    _INHERITED,
    CHROMIUM,
    CHROMIUM_ARGS,
    CLINIC_ZONE,
    DemoServer,
    _start_daphne,
    _stop,
    log_in,
    new_page,
    screenshot,
)

pytestmark = pytest.mark.e2e

# The therapist admits everyone here (the demo's own session lets people in by itself).
ARRANGE = """
from rooms.models import Session, AdmissionPolicy
s = Session.objects.get(title="Coping skills group", status="scheduled")
s.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
s.save(update_fields=["admission_policy"])
print(s.id)
"""

# Inbound video per peer connection: frames decoded, and the size of the <video> showing it.
VIDEO_STATS = """
async () => {
  const out = [];
  for (const [member, pc] of Object.entries(window.telehealth.peers())) {
    let frames = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
    });
    const video = document.querySelector(`.tile[data-member="${member}"] video`);
    out.push({member, frames, width: video ? video.videoWidth : 0, paused: video ? video.paused : true});
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def room_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("room")
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ} | {
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "telehealth.settings",
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "CLINIC_TIME_ZONE": CLINIC_ZONE,
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    server = DemoServer(url="", env=env, seed_output="")
    server.manage("migrate", "--no-input", "-v", "0")
    server.seed_output = server.manage("seed_demo", "--password", "calm-harbor-demo")
    session_id = server.manage("shell", "-c", ARRANGE).strip().splitlines()[-1]
    log = tmp / "daphne.log"
    proc, server.url = _start_daphne(env, log)
    try:
        yield server, f"/sessions/{session_id}/join/"
    finally:
        _stop(proc)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def media_browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
            headless=True,
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_for_videos(page, count: int, timeout: float = 20.0) -> list[dict]:
    """`count` remote videos with frames decoded still increasing and a known size."""
    deadline = time.monotonic() + timeout
    last: list[dict] = []
    while time.monotonic() < deadline:
        first = {s["member"]: s["frames"] for s in page.evaluate(VIDEO_STATS)}
        page.wait_for_timeout(600)
        last = page.evaluate(VIDEO_STATS)
        playing = [s for s in last if s["frames"] > first.get(s["member"], 0) and s["width"] > 0 and not s["paused"]]
        if len(playing) == count and len(last) == count:
            return last
    raise AssertionError(f"expected {count} playing remote videos, got {last}")


def open_prejoin(page, server, join_path: str) -> None:
    page.goto(f"{server.url}{join_path}")
    page.get_by_text("Your camera and microphone are ready.").wait_for()


# Devtools injects init scripts, so the strict CSP does not apply to this stand-in for a refusal.
DENY_MEDIA = """
navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("denied", "NotAllowedError"));
"""


# Runs before the main scenario below, which ends the session.
def test_participant_with_camera_and_microphone_blocked_is_told_and_can_still_wait(room_server, media_browser):
    server, join_path = room_server
    context, page, csp = new_page(media_browser)
    try:
        context.add_init_script(DENY_MEDIA)
        log_in(page, server, "demo-p03")
        page.goto(f"{server.url}{join_path}")

        page.get_by_text("Your browser is blocking the camera and microphone.").wait_for()
        assert page.get_by_role("button", name="No microphone").is_disabled()
        assert page.get_by_role("button", name="No camera").is_disabled()
        page.get_by_role("button", name="Join", exact=True).click()
        page.get_by_role("heading", name="Your therapist will let you in").wait_for()
        page.get_by_role("button", name="Leave the waiting room").click()
        page.get_by_role("heading", name="You left the session").wait_for()
        assert csp.violations == []
    finally:
        context.close()


def test_therapist_admits_participants_and_everyone_sees_video_chats_and_ends(room_server, media_browser):
    server, join_path = room_server
    started = time.monotonic()
    contexts = []
    try:
        therapist_ctx, therapist, t_csp = new_page(media_browser)
        p1_ctx, p1, p1_csp = new_page(media_browser)
        p2_ctx, p2, p2_csp = new_page(media_browser)
        contexts = [therapist_ctx, p1_ctx, p2_ctx]
        for context in contexts:
            context.grant_permissions(["camera", "microphone"], origin=server.url)

        # Pre-join: preview, level meter, toggles; the session's title and time.
        log_in(p1, server, "demo-p01")
        open_prejoin(p1, server, join_path)
        assert p1.get_by_role("heading", name="Coping skills group").is_visible()
        assert p1.get_by_role("button", name="Microphone on").is_enabled()
        p1.get_by_role("button", name="Camera on").click()
        assert p1.get_by_role("button", name="Camera off").get_attribute("data-on") == "false"
        assert p1.get_by_text("Your camera is off").is_visible()
        p1.get_by_role("button", name="Camera off").click()
        p1.wait_for_function("() => document.getElementById('preview').videoWidth > 0")
        p1.wait_for_function("() => document.getElementById('mic-meter').value > 0")
        screenshot(p1, "prejoin.png")

        # Both participants wait.
        p1.get_by_role("button", name="Join", exact=True).click()
        p1.get_by_role("heading", name="Your therapist will let you in").wait_for()
        log_in(p2, server, "demo-p02")
        open_prejoin(p2, server, join_path)
        p2.get_by_role("button", name="Join", exact=True).click()
        p2.get_by_role("heading", name="Your therapist will let you in").wait_for()
        p1.wait_for_function("() => document.getElementById('waited').textContent !== '0:00'")
        screenshot(p1, "waiting-room.png")

        # The therapist goes straight in and sees both waiting.
        log_in(therapist, server, "demo-lead")
        open_prejoin(therapist, server, join_path)
        therapist.get_by_role("button", name="Enter as therapist").click()
        waiting = therapist.locator("#waiting-list")
        waiting.get_by_text("Jordan A.").wait_for()
        waiting.get_by_text("Casey B.").wait_for()
        therapist.get_by_role("button", name="Admit Jordan A.").click()
        p1.get_by_role("button", name="Mute microphone").wait_for()  # in the room, without a reload
        therapist.get_by_role("button", name="Admit all").click()
        p2.get_by_role("button", name="Mute microphone").wait_for()
        assert waiting.locator("li").count() == 0 or therapist.locator("#waiting-empty").is_visible()

        # Every page shows the two others' video, actually playing.
        for page in (therapist, p1, p2):
            wait_for_videos(page, 2)
        assert p1.locator(".tile").count() == 3

        # Chat round trip, rendered as text.
        p1.get_by_role("button", name="Chat").click()
        p1.get_by_label("Message to everyone").fill("Hello <b>everyone</b>")
        p1.get_by_label("Message to everyone").press("Enter")
        therapist.get_by_role("button", name=re.compile(r"^Chat")).click()
        therapist.locator("#chat-log").get_by_text("Hello <b>everyone</b>").wait_for()
        assert therapist.locator("#chat-log b").count() == 0
        therapist.get_by_label("Message to everyone").fill("Welcome, Jordan")
        therapist.get_by_role("button", name="Send").click()
        p1.locator("#chat-log").get_by_text("Welcome, Jordan").wait_for()
        assert p1.locator("#chat-log .chat-item__author").nth(1).inner_text() == "Dana W."

        # A dropped socket comes back by itself: same seat, the missed chat exactly once, media again.
        conn_before = therapist.evaluate("() => window.telehealth.state.roster.size")
        p1.evaluate("() => window.telehealth.socket.dropForTest()")
        therapist.get_by_label("Message to everyone").fill("While you were away")
        therapist.get_by_role("button", name="Send").click()
        p1.locator("#chat-log").get_by_text("While you were away").wait_for()
        p1.wait_for_timeout(500)
        assert p1.locator("#chat-log").get_by_text("While you were away").count() == 1
        assert p1.locator("#chat-log li").count() == 3
        assert therapist.evaluate("() => window.telehealth.state.roster.size") == conn_before
        for page in (therapist, p1):
            wait_for_videos(page, 2)

        # A raised hand reaches the therapist's queue and the tile.
        p2.get_by_role("button", name="Raise hand").click()
        p2.get_by_role("button", name="Lower hand").wait_for()
        therapist.locator("#hands-list").get_by_text("Casey B.").wait_for()
        therapist.locator(".tile", has_text="Casey B.").get_by_text("Hand raised").wait_for()

        screenshot(therapist, "room-therapist.png")
        screenshot(p1, "room-participant.png")

        # A soft mute turns the participant's outgoing audio off and says so; lock and unlock.
        therapist.get_by_role("button", name="Mute Jordan A.").click()
        p1.get_by_text("A therapist muted your microphone.").wait_for()
        assert p1.get_by_role("button", name="Unmute microphone").is_enabled()
        assert p1.evaluate("() => document.querySelector('#ctl-mic').dataset.on") == "false"
        assert p1.evaluate(
            "() => Object.values(window.telehealth.peers()).every((pc) => pc.getSenders()"
            ".filter((s) => s.track && s.track.kind === 'audio').every((s) => !s.track.enabled))"
        )
        therapist.locator(".tile", has_text="Jordan A.").get_by_text("Muted").wait_for()
        therapist.get_by_role("button", name="Lock the room").click()
        therapist.get_by_role("button", name="Unlock the room").click()
        therapist.get_by_role("button", name="Lock the room").wait_for()

        # Removal: confirmed, the removed page, and a reload cannot get back in.
        therapist.get_by_role("button", name="Remove Casey B.").click()
        therapist.get_by_role("button", name="Confirm").click()
        p2.get_by_role("heading", name="You were removed from this session").wait_for()
        screenshot(p2, "removed.png")
        therapist.locator(".tile", has_text="Casey B.").wait_for(state="detached")
        p2.reload()
        assert p2.get_by_role("heading", name="You can't rejoin this session").is_visible()
        assert p2.locator("#room-app").count() == 0

        # The therapist ends the session: everyone left sees the closing page.
        therapist.get_by_role("button", name="End session for everyone").click()
        therapist.get_by_role("button", name="Confirm").click()
        for page in (therapist, p1):
            page.get_by_role("heading", name="The session has ended").wait_for()

        assert t_csp.violations == [] and p1_csp.violations == [] and p2_csp.violations == []
        assert time.monotonic() - started < 90
    finally:
        for context in contexts:
            context.close()
