"""A participant on a phone, with the keyboard only, and the waiting room that opens by itself.

Runs on the shared demo server with sessions of its own (made through manage.py shell), so it
neither ends nor changes the demo's group session. The participant's page is driven by Tab,
Enter and the M / H shortcuts only: no clicks. The therapist, on a desktop, may click. axe-core
(vendored, injected by the test) must find no serious or critical problem on the pre-join,
waiting and room pages.

Writes docs/screenshots/room-phone.png.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import PHONE, axe_violations, log_in, new_page, screenshot

pytestmark = pytest.mark.e2e

# A session of the demo's group track (so its therapists and roster apply) that starts `start`
# seconds from now; `policy`: who lets people in.
MAKE_SESSION = """
from datetime import timedelta
from django.utils import timezone
from accounts.models import User
from rooms.models import AdmissionPolicy, RosterEntry, Session
group = Session.objects.filter(title="Coping skills group").order_by("starts_at").first()
start = timezone.now() + timedelta(seconds={start})
s = Session.objects.create(room=group.room, track=group.track, title="{title}", starts_at=start,
                           ends_at=start + timedelta(minutes=60), admission_policy=AdmissionPolicy.{policy})
RosterEntry.objects.create(session=s, participant=User.objects.get(username="{username}"))
print(s.pk)
"""

SENT_AUDIO_ENABLED = """
() => Object.values(window.telehealth.peers()).flatMap((pc) => pc.getSenders())
  .filter((s) => s.track && s.track.kind === "audio").map((s) => s.track.enabled)
"""

# Describes the focused element for the Tab helper: its id, text, label and link target.
FOCUSED = """
() => {
  const a = document.activeElement;
  if (!a) return {};
  return {id: a.id || "", text: (a.innerText || "").trim(), label: a.getAttribute("aria-label") || "",
          href: a.getAttribute("href") || "", tag: a.tagName};
}
"""


def tab_to(page, matches, limit: int = 80, back: bool = False) -> dict:
    """Press Tab (or Shift+Tab) until the focused element satisfies `matches`; fail if it never does."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        focused = page.evaluate(FOCUSED)
        if matches(focused):
            return focused
        seen.append(focused.get("id") or focused.get("text", "")[:30])
    raise AssertionError(f"never reached the element by keyboard; focus went through {seen}")


def focus_is_visible(page) -> bool:
    return page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2; }"
    )


def make_session(server, *, title: str, username: str, start: int, policy: str) -> str:
    script = MAKE_SESSION.format(start=start, title=title, username=username, policy=policy)
    return server.manage("shell", "-c", script).strip().splitlines()[-1]


def test_phone_participant_goes_through_with_the_keyboard_only(demo_server, media_browser):
    session_id = make_session(
        demo_server, title="Phone check-in group", username="demo-p06", start=-60, policy="THERAPIST_ADMITS"
    )
    join_path = f"/sessions/{session_id}/join/"
    contexts = []
    try:
        t_ctx, therapist, t_watch = new_page(media_browser)
        p_ctx, phone, p_watch = new_page(media_browser, **PHONE)
        contexts = [t_ctx, p_ctx]
        for context in contexts:
            context.grant_permissions(["camera", "microphone"], origin=demo_server.url)
        phone.set_default_timeout(20_000)
        therapist.set_default_timeout(20_000)

        # Log in and find the session with Tab and Enter only.
        phone.goto(f"{demo_server.url}/")
        tab_to(phone, lambda f: f["id"] == "id_username")
        phone.keyboard.type("demo-p06")
        tab_to(phone, lambda f: f["id"] == "id_password")
        phone.keyboard.type("calm-harbor-demo")
        phone.keyboard.press("Enter")
        phone.wait_for_url(f"{demo_server.url}/")
        tab_to(phone, lambda f: f["href"] == join_path)
        assert focus_is_visible(phone)
        phone.keyboard.press("Enter")
        phone.get_by_text("Your camera and microphone are ready.").wait_for()
        assert axe_violations(phone) == []

        tab_to(phone, lambda f: f["id"] == "join-button")
        assert focus_is_visible(phone)
        phone.keyboard.press("Enter")
        phone.get_by_role("heading", name="Your therapist will let you in").wait_for()
        assert phone.evaluate("() => document.activeElement.id") == "waiting-heading"
        assert axe_violations(phone) == []

        # The therapist (on a desktop, with a mouse) lets them in.
        log_in(therapist, demo_server, "demo-lead")
        therapist.goto(f"{demo_server.url}{join_path}")
        therapist.get_by_text("Your camera and microphone are ready.").wait_for()
        therapist.get_by_role("button", name="Enter as therapist").click()
        therapist.get_by_role("button", name="Admit Alex F.").click()
        phone.get_by_role("button", name="Mute microphone").wait_for()
        phone.wait_for_function("() => Object.keys(window.telehealth.peers()).length === 1")

        # Shortcuts: M mutes and unmutes (the track itself), H raises the hand.
        phone.keyboard.press("m")
        phone.get_by_role("button", name="Unmute microphone").wait_for()
        assert phone.evaluate(SENT_AUDIO_ENABLED) == [False]
        phone.keyboard.press("m")
        phone.get_by_role("button", name="Mute microphone").wait_for()
        assert phone.evaluate(SENT_AUDIO_ENABLED) == [True]
        phone.keyboard.press("h")
        therapist.locator("#hands-list").get_by_text("Alex F.").wait_for()

        # The therapist's video is the large tile; every control is on screen, nothing scrolls sideways.
        phone.wait_for_function(
            "() => { const v = document.querySelector('.tile--featured video'); return v && v.videoWidth > 0; }"
        )
        featured = phone.locator(".tile--featured")
        assert featured.locator(".tile__name").inner_text() == "Dana W."
        assert featured.bounding_box()["width"] > 2 * phone.locator(".tile--self").bounding_box()["width"]
        for control in phone.locator(".controls .control").all():
            box = control.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
            assert box["y"] >= 0 and box["y"] + box["height"] <= 844, box
            assert box["height"] >= 44  # thumb-sized
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        assert axe_violations(phone) == []
        screenshot(phone, "room-phone.png", full_page=False)

        # Chat by keyboard: to the Chat control, Enter opens it with the cursor in the message box.
        tab_to(phone, lambda f: f["id"] == "ctl-chat")
        assert focus_is_visible(phone)
        phone.keyboard.press("Enter")
        assert phone.evaluate("() => document.activeElement.id") == "chat-input"
        phone.keyboard.type("Hello from my phone")
        phone.keyboard.press("Enter")
        therapist.get_by_role("button", name=re.compile(r"^Chat 1 new$")).wait_for()
        phone.keyboard.press("Escape")
        assert phone.evaluate("() => document.activeElement.id") == "ctl-chat"

        # Leave by keyboard: the confirmation starts on Cancel; Tab to Leave, Enter.
        tab_to(phone, lambda f: f["id"] == "ctl-leave")
        phone.keyboard.press("Enter")
        assert phone.evaluate("() => document.activeElement.id") == "confirm-cancel"
        phone.keyboard.press("Tab")
        assert phone.evaluate("() => document.activeElement.id") == "confirm-ok"
        phone.keyboard.press("Enter")
        phone.get_by_role("heading", name="You left the session").wait_for()
        therapist.locator(".tile", has_text="Alex F.").wait_for(state="detached")

        for watch in (t_watch, p_watch):
            assert watch.violations == [] and watch.errors == []
    finally:
        for context in contexts:
            context.close()


def test_waiting_room_counts_down_to_the_start_and_lets_the_participant_in_by_itself(demo_server, media_browser):
    # Auto admission from the start: the waiting room is open now, the room in twelve seconds.
    session_id = make_session(
        demo_server, title="Morning check-in", username="demo-p08", start=12, policy="AUTO_THEN_KNOCK"
    )
    context, page, watch = new_page(media_browser)
    try:
        context.grant_permissions(["camera", "microphone"], origin=demo_server.url)
        log_in(page, demo_server, "demo-p08")
        page.goto(f"{demo_server.url}/sessions/{session_id}/join/")
        page.get_by_text("Your camera and microphone are ready.").wait_for()
        page.get_by_role("button", name="Join", exact=True).click()

        page.get_by_role("heading", name="The room opens soon").wait_for()
        opens = page.locator("#waiting-opens")
        assert re.fullmatch(r"The room opens in 0:\d\d \(at \d\d:\d\d\)", opens.inner_text())
        first = page.locator("#opens-countdown").inner_text()
        page.wait_for_function(f"() => document.getElementById('opens-countdown').textContent !== '{first}'")
        assert page.locator("#opens-countdown").inner_text() < first  # counting down, not up

        # No therapist acts: at the start the page goes into the room by itself.
        page.get_by_role("button", name="Mute microphone").wait_for(timeout=30_000)
        assert page.locator(".tile--self").count() == 1
        assert watch.violations == [] and watch.errors == []
    finally:
        context.close()


def test_connection_quality_is_graded_and_audio_only_is_suggested_only_when_it_stays_poor(demo_server, media_browser):
    # The pure parts of rtc.js, in the browser that runs them (the module is what the room page imports).
    context, page, watch = new_page(media_browser)
    try:
        page.goto(f"{demo_server.url}/healthz")
        result = page.evaluate(
            """async (base) => {
              const {classifyQuality, QualityWatch} = await import(base + "/static/js/rtc.js");
              const watch = new QualityWatch(10, 7);
              const suggested = [];
              for (const q of ["poor", "poor", "good", "poor", "poor", "poor", "poor", "poor", "fair", "poor"]) {
                suggested.push(watch.push(q));
              }
              return {
                grades: [
                  classifyQuality({}),
                  classifyQuality({loss: 0, rtt: 0.02}),
                  classifyQuality({loss: 0.04, rtt: 0.02}),
                  classifyQuality({loss: 0.0, rtt: 0.5}),
                  classifyQuality({loss: 0.15, rtt: 0.02}),
                  classifyQuality({loss: null, rtt: 1.2}),
                ],
                suggested,
              };
            }""",
            demo_server.url,
        )
        assert result["grades"] == ["unknown", "good", "fair", "fair", "poor", "poor"]
        # Seven poor seconds out of the last ten, not the first bad one.
        assert result["suggested"] == [False] * 7 + [True, True, True]
        assert watch.errors == []
    finally:
        context.close()
