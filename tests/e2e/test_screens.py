"""The main screens in a real browser, as each kind of person meets them on a fresh device.

Also writes the screenshots in docs/screenshots/ (participant, therapist, admin, and the
participant's home on a 390x844 phone).
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import PHONE, log_in, new_page, screenshot

pytestmark = pytest.mark.e2e

OTHER_PARTICIPANTS_FULL_NAMES = ["Casey Brooks", "Riley Chen", "Quinn Garcia", "Reese Jordan"]


def test_participant_home_shows_open_session_and_join_opens_the_waiting_room_page(demo_server, browser):
    context, page, csp = new_page(browser)
    try:
        log_in(page, demo_server, "demo-p01")

        next_card = page.locator("section.card--next")
        assert next_card.get_by_role("heading", name="Your next session").is_visible()
        assert next_card.locator(".next__title").inner_text() == "Coping skills group"
        assert next_card.locator(".badge").inner_text() in {"Waiting room open", "In progress"}
        assert page.get_by_role("heading", name="Today").is_visible()
        assert page.get_by_role("heading", name="This week").is_visible()
        assert page.get_by_text("Signed in as Jordan A.").is_visible()
        body = page.content()
        for name in OTHER_PARTICIPANTS_FULL_NAMES:
            assert name not in body
        screenshot(page, "participant-home.png")

        next_card.get_by_role("link", name=re.compile(r"^Join now")).click()
        assert re.search(r"/sessions/[0-9a-f-]{36}/join/$", page.url)
        assert page.get_by_role("heading", name="You're on the list").is_visible()
        assert page.get_by_role("heading", name="Check your camera and microphone").is_visible()
        assert csp.violations == []
    finally:
        context.close()


def test_participant_home_fits_a_phone(demo_server, browser):
    context, page, csp = new_page(browser, **PHONE)
    try:
        log_in(page, demo_server, "demo-p02")

        join = page.locator("section.card--next").get_by_role("link", name=re.compile(r"^Join now"))
        assert join.is_visible()
        box = join.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert box["height"] >= 44  # a thumb-sized target
        assert box["y"] + box["height"] <= 844  # above the fold: one tap after logging in
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        screenshot(page, "participant-home-phone.png")
        assert csp.violations == []
    finally:
        context.close()


def test_skip_link_is_the_first_tab_stop_and_moves_focus_to_main(demo_server, browser):
    context, page, _ = new_page(browser)
    try:
        log_in(page, demo_server, "demo-p03")

        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to main content"
        assert page.locator(".skip-link").is_visible()
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
    finally:
        context.close()


def test_therapist_sees_today_with_roster_counts_and_opens_the_roster(demo_server, browser):
    context, page, csp = new_page(browser)
    try:
        log_in(page, demo_server, "demo-lead")

        today = page.locator("section", has=page.get_by_role("heading", name="Today"))
        row = today.locator("li.session-row", has_text="Coping skills group")
        assert row.is_visible()
        assert row.get_by_text("10 on roster").is_visible()
        assert row.get_by_role("link", name=re.compile("Enter as therapist")).is_visible()
        assert page.get_by_role("heading", name="This week").is_visible()
        assert page.get_by_text("Evening process group").first.is_visible()
        screenshot(page, "therapist-home.png")

        row.get_by_role("link", name="Coping skills group", exact=True).click()
        assert page.get_by_role("heading", name="Coping skills group", level=1).is_visible()
        roster = page.get_by_role("table")
        assert roster.get_by_role("row").count() == 11  # a header and ten participants
        assert roster.get_by_text("Jordan Avery").is_visible()
        assert roster.get_by_text("River").is_visible()  # Quinn's approved alias, as the group sees it
        assert page.get_by_text("recorded in the audit log").is_visible()
        assert csp.violations == []
    finally:
        context.close()


def test_admin_opens_the_session_series_change_page(demo_server, browser):
    series_id = demo_server.manage(
        "shell",
        "--no-imports",
        "-c",
        "from rooms.models import SessionSeries; print(SessionSeries.objects.get(title='Evening process group').pk)",
    ).strip()
    context, page, _ = new_page(browser)
    try:
        log_in(page, demo_server, "demo-admin")
        assert page.get_by_role("heading", name="All sessions").is_visible()
        assert page.get_by_role("link", name="Admin", exact=True).is_visible()

        response = page.goto(f"{demo_server.url}/admin/rooms/sessionseries/{series_id}/change/")
        assert response is not None and response.status == 200
        assert page.locator("input[name=title]").input_value() == "Evening process group"
        screenshot(page, "admin-series.png")
    finally:
        context.close()


def test_join_page_turns_itself_on_when_the_waiting_room_opens(demo_server, browser):
    # An individual session for demo-p01 whose waiting room opens eight seconds from now.
    session_id = demo_server.manage(
        "shell",
        "--no-imports",
        "-c",
        "from datetime import timedelta\n"
        "from django.utils import timezone\n"
        "from accounts.models import User\n"
        "from rooms.models import Room, RosterEntry, Session\n"
        "room = Room.objects.get(name='Individual room')\n"
        "start = timezone.now() + timedelta(minutes=10, seconds=8)\n"
        "s = Session.objects.create(room=room, title='Check-in call', starts_at=start,\n"
        "                           ends_at=start + timedelta(minutes=30))\n"
        "RosterEntry.objects.create(session=s, participant=User.objects.get(username='demo-p01'))\n"
        "print(s.pk)",
    ).strip()
    context, page, csp = new_page(browser)
    try:
        log_in(page, demo_server, "demo-p01")
        page.goto(f"{demo_server.url}/sessions/{session_id}/join/")
        assert page.get_by_role("heading", name=re.compile(r"^The waiting room opens at \d\d:\d\d$")).is_visible()
        # It counts down to the opening, second by second.
        countdown = page.locator("[data-countdown-value]")
        countdown.wait_for()
        first = countdown.inner_text()
        assert re.fullmatch(r"0:0\d", first), first
        page.wait_for_function(f"() => document.querySelector('[data-countdown-value]').textContent !== '{first}'")
        assert page.get_by_text(re.compile(r"^Opens in 0:0\d$")).is_visible()

        # page.js (configured through json_script) reloads the page once the waiting room is open.
        page.get_by_role("heading", name="You're on the list").wait_for(timeout=20_000)
        assert csp.violations == []
    finally:
        context.close()
