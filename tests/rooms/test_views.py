"""The screens of rooms.views for every persona of the clinic, plus the CSP and privacy rules they keep.

Pages read the real clock, so sessions that must be open, closed or upcoming are
placed relative to ``timezone.now()``; the clinic's own sessions (March 2026)
serve the visibility checks, which do not depend on time.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import date, datetime, timedelta
from html.parser import HTMLParser

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from rooms import services
from rooms.access import MESSAGES, Capacity, Code, EntryDecision
from rooms.models import (
    AuditAction,
    AuditEvent,
    Enrollment,
    EnrollmentStatus,
    RosterEntry,
    Session,
    SessionRemoval,
    SessionStatus,
)
from rooms.views import SessionCard
from tests.factories import enroll, make_room, make_session, make_user

PERSONAS = ["participant", "lead", "co", "admin", "outsider_participant", "outsider_therapist"]
MEMBERS = ["participant", "lead", "co", "admin"]
OUTSIDERS = ["outsider_participant", "outsider_therapist"]


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # The personas' passwords are hashed on creation; PBKDF2 would make each clinic cost seconds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def live(clinic):
    """The clinic with enrollments that cover today, whatever today is."""
    Enrollment.objects.update(start_date=date.today() - timedelta(days=365))
    return clinic


def now_session(clinic, starts_in: timedelta, *, duration=timedelta(hours=3), title="Evening process group", **extra):
    """A group session of the clinic's track, starting ``starts_in`` from now (negative: already started)."""
    starts_at = (timezone.now() + starts_in).replace(microsecond=0)
    return make_session(clinic.group_room, starts_at, track=clinic.track, duration=duration, title=title, **extra)


def clear_of_midnight(clinic_zone: str, starts_in: timedelta) -> timedelta:
    """Shift a start so that it and its lobby opening (10 minutes before) fall on the same local day."""
    zone = zoneinfo.ZoneInfo(clinic_zone)
    while True:
        start = timezone.localtime(timezone.now() + starts_in, zone)
        if (start - timedelta(minutes=11)).date() == start.date():
            return starts_in
        starts_in += timedelta(minutes=15)


def local_hhmm(moment: datetime, zone: str) -> str:
    return timezone.localtime(moment, zoneinfo.ZoneInfo(zone)).strftime("%H:%M")


def get_as(client, user, url):
    if user is not None:
        client.force_login(user)
    return client.get(url)


def detail_url(session) -> str:
    return reverse("session_detail", args=[session.id])


def join_url(session) -> str:
    return reverse("session_join", args=[session.id])


# --- anonymous ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["home", "session_detail", "session_join"])
def test_pages_anonymous_redirect_to_login(client, clinic, name):
    url = reverse(name) if name == "home" else reverse(name, args=[clinic.group_session.id])

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


# --- home -------------------------------------------------------------------------------------------


def test_home_participant_shows_next_session_with_one_click_join_when_open(client, live):
    session = now_session(live, -timedelta(minutes=5), title="Coping skills group")

    response = get_as(client, live.participant, reverse("home"))

    assert response.status_code == 200
    assert response.templates[0].name == "rooms/home_participant.html"
    html = response.content.decode()
    next_card = html.split('id="next-heading"')[1].split("</section>")[0]
    assert "Coping skills group" in next_card
    assert f'href="{join_url(session)}"' in next_card
    assert "Join now" in next_card


def test_home_participant_join_button_says_opens_at_before_the_window(client, live):
    session = now_session(live, clear_of_midnight(live.participant.time_zone, timedelta(hours=2)))
    opens = local_hhmm(session.lobby_opens_at, live.participant.time_zone)

    response = get_as(client, live.participant, reverse("home"))

    html = response.content.decode()
    assert re.search(rf"<button[^>]*disabled[^>]*>\s*Opens at {opens}\s*</button>", html)
    assert join_url(session) not in html


def test_home_participant_sees_cancelled_session_as_cancelled_without_join(client, live):
    session = now_session(live, -timedelta(minutes=5), status=SessionStatus.CANCELLED)

    response = get_as(client, live.participant, reverse("home"))

    html = response.content.decode()
    assert "session-row--cancelled" in html
    assert "badge--cancelled" in html and ">Cancelled<" in html
    assert join_url(session) not in html
    assert response.context["next_card"] is None


def test_home_participant_with_nothing_scheduled_says_so(client, live):
    response = get_as(client, live.participant, reverse("home"))

    assert response.status_code == 200
    assert "You have no more sessions this week" in response.content.decode()


def test_home_renders_times_in_each_viewers_time_zone(client, live):
    tokyo = make_user(Role.PARTICIPANT, first="Kei", last="Tanaka", time_zone="Asia/Tokyo")
    enroll(tokyo, live.track, start=date.today() - timedelta(days=365))
    session = now_session(live, timedelta(days=2))
    seen = {}

    for user in (live.participant, tokyo):
        client.force_login(user)
        seen[user.time_zone] = client.get(reverse("home")).content.decode()

    for zone, html in seen.items():
        local = timezone.localtime(session.starts_at, zoneinfo.ZoneInfo(zone))
        assert f'<time datetime="{local.isoformat()}">{local:%H:%M}</time>' in html
    assert local_hhmm(session.starts_at, "America/New_York") != local_hhmm(session.starts_at, "Asia/Tokyo")
    assert "Times are shown in <strong>Asia/Tokyo</strong>" in seen["Asia/Tokyo"]


@pytest.mark.parametrize("persona", ["lead", "co"])
def test_home_therapist_lists_their_sessions_with_roster_counts(client, live, persona):
    second = make_user(Role.PARTICIPANT, first="Sam", last="Second")
    enroll(second, live.track, start=date.today() - timedelta(days=365))
    session = now_session(live, timedelta(minutes=30), title="Relapse prevention group")

    response = get_as(client, getattr(live, persona), reverse("home"))

    assert response.templates[0].name == "rooms/home_staff.html"
    html = response.content.decode()
    row = html.split("Relapse prevention group")[1].split("</li>")[0]
    assert "2 on roster" in row
    assert f'href="{detail_url(session)}"' in html


def test_home_outsider_therapist_sees_no_session_of_other_rooms(client, live):
    now_session(live, timedelta(minutes=30), title="Relapse prevention group")

    response = get_as(client, live.outsider_therapist, reverse("home"))

    assert response.status_code == 200
    assert "Relapse prevention group" not in response.content.decode()


def test_home_outsider_participant_sees_no_session_of_other_tracks(client, live):
    now_session(live, timedelta(minutes=30), title="Relapse prevention group")

    response = get_as(client, live.outsider_participant, reverse("home"))

    assert response.status_code == 200
    assert "Relapse prevention group" not in response.content.decode()


def test_home_clinic_admin_sees_every_session_and_the_admin_link(client, live):
    live.admin.is_staff = True
    live.admin.save()
    other_room = make_room(live.program)
    make_session(other_room, timezone.now() + timedelta(hours=1), track=live.track, title="Other room group")
    now_session(live, timedelta(minutes=30), title="Relapse prevention group")

    response = get_as(client, live.admin, reverse("home"))

    html = response.content.decode()
    assert "All sessions" in html
    assert "Other room group" in html and "Relapse prevention group" in html
    assert f'href="{reverse("admin:index")}"' in html


def test_home_participant_gets_no_admin_link(client, live):
    response = get_as(client, live.participant, reverse("home"))

    assert reverse("admin:index") not in response.content.decode()


def _queries(client, user, url) -> int:
    client.force_login(user)
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx)


@pytest.mark.parametrize("persona", ["participant", "lead", "admin"])
def test_home_query_count_does_not_grow_with_sessions(client, live, persona):
    user = getattr(live, persona)

    def add(days: int) -> None:
        now_session(live, timedelta(days=days, hours=1))
        individual = make_session(
            live.individual_room, timezone.now() + timedelta(days=days, hours=5), title="Individual"
        )
        RosterEntry.objects.create(session=individual, participant=live.participant)

    add(0)
    one = _queries(client, user, reverse("home"))
    for day in range(1, 6):
        add(day)

    many = _queries(client, user, reverse("home"))

    assert many == one


# --- session page -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "which"),
    [
        *((persona, "group_session") for persona in MEMBERS),
        *((persona, "individual_session") for persona in ["participant", "lead", "admin"]),  # co runs the track only
    ],
)
def test_session_detail_members_see_it(client, clinic, persona, which):
    session = getattr(clinic, which)

    response = get_as(client, getattr(clinic, persona), detail_url(session))

    assert response.status_code == 200
    assert session.title in response.content.decode()


@pytest.mark.parametrize("persona", OUTSIDERS)
@pytest.mark.parametrize("which", ["group_session", "individual_session"])
@pytest.mark.parametrize("url", [detail_url, join_url])
def test_session_pages_outsiders_get_404(client, clinic, persona, which, url):
    response = get_as(client, getattr(clinic, persona), url(getattr(clinic, which)))

    assert response.status_code == 404


def test_session_detail_co_therapist_of_track_only_gets_404_for_the_individual_session(client, clinic):
    # The co-therapist runs the evening track, not the lead's individual room.
    response = get_as(client, clinic.co, detail_url(clinic.individual_session))

    assert response.status_code == 404


def test_session_detail_unknown_id_is_404(client, clinic):
    response = get_as(client, clinic.admin, reverse("session_detail", args=["7f1d0e0e-0000-4000-8000-000000000000"]))

    assert response.status_code == 404


@pytest.mark.parametrize("persona", ["lead", "co", "admin"])
def test_session_detail_staff_see_roster_with_full_names_and_the_view_is_audited(client, clinic, persona):
    user = getattr(clinic, persona)

    response = get_as(client, user, detail_url(clinic.group_session))

    html = response.content.decode()
    assert "Pat Participant" in html
    assert "Pat P." in html  # what the group sees, next to it
    event = AuditEvent.objects.get(action=AuditAction.ROSTER_VIEWED)
    assert (event.actor, event.session) == (user, clinic.group_session)


def test_session_detail_staff_see_removed_people_marked(client, clinic):
    SessionRemoval.objects.create(session=clinic.group_session, user=clinic.participant, removed_by=clinic.lead)

    response = get_as(client, clinic.lead, detail_url(clinic.group_session))

    row = response.content.decode().split("Pat Participant")[1].split("</tr>")[0]
    assert "Removed" in row


def test_session_detail_participant_sees_own_status_only_and_no_audit(client, live):
    session = now_session(live, -timedelta(minutes=5))

    response = get_as(client, live.participant, detail_url(session))

    html = response.content.decode()
    assert "You're on the list" in html
    assert "<table" not in html
    assert "Roster" not in html
    assert not AuditEvent.objects.filter(action=AuditAction.ROSTER_VIEWED).exists()


def test_session_detail_participant_sees_therapists_by_display_name(client, clinic):
    response = get_as(client, clinic.participant, detail_url(clinic.group_session))

    html = response.content.decode()
    assert "Lee L. (lead)" in html
    assert "Lee Lead" not in html


def test_session_detail_on_hold_participant_sees_it_and_join_explains(client, live):
    Enrollment.objects.filter(participant=live.participant).update(status=EnrollmentStatus.ON_HOLD)
    session = now_session(live, -timedelta(minutes=5))

    response = get_as(client, live.participant, join_url(session))

    assert response.status_code == 403
    assert 'data-code="enrollment.not_active"' in response.content.decode()


def test_session_detail_participant_whose_enrollment_ended_before_it_gets_404(client, live):
    Enrollment.objects.filter(participant=live.participant).update(end_date=date.today() - timedelta(days=3))
    session = now_session(live, timedelta(hours=1))

    response = get_as(client, live.participant, detail_url(session))

    assert response.status_code == 404


# --- privacy: what participants never see --------------------------------------------------------


@pytest.fixture
def peer(live):
    """Another participant of the same group, with details a peer must never see."""
    peer = make_user(Role.PARTICIPANT, first="Morgana", last="Quillfeather", phone="+1 202 555 0199")
    enroll(peer, live.track, start=date.today() - timedelta(days=365))
    return peer


@pytest.mark.parametrize("page", ["home", "detail", "join", "profile"])
def test_participant_pages_never_show_other_participants_details(client, live, peer, page):
    session = now_session(live, -timedelta(minutes=5))
    url = {
        "home": reverse("home"),
        "detail": detail_url(session),
        "join": join_url(session),
        "profile": reverse("profile"),
    }[page]

    response = get_as(client, live.participant, url)

    assert response.status_code == 200
    html = response.content.decode()
    for secret in ("Quillfeather", peer.email, peer.phone, peer.username, "Morgana Q"):
        assert secret not in html


def test_staff_roster_shows_the_peer_for_contrast(client, live, peer):
    session = now_session(live, -timedelta(minutes=5))

    response = get_as(client, live.lead, detail_url(session))

    assert "Morgana Quillfeather" in response.content.decode()


# --- join -----------------------------------------------------------------------------------------------


def test_join_allowed_participant_is_told_they_are_on_the_list(client, live):
    session = now_session(live, -timedelta(minutes=5))

    response = get_as(client, live.participant, join_url(session))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-code="ok"' in html
    assert "You're on the list" in html
    assert "The waiting room opens here" in html
    assert "Check your camera and microphone" in html


def room_config(html: str) -> dict:
    found = re.search(r'<script id="room-config" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def test_join_allowed_participant_gets_the_prejoin_screen_and_the_client_config(client, live):
    session = now_session(live, -timedelta(minutes=5))

    response = get_as(client, live.participant, join_url(session))

    html = response.content.decode()
    config = room_config(html)
    assert config == {
        "wsPath": f"/ws/sessions/{session.id}/",
        "title": session.title,
        "when": config["when"],
        "startsAt": session.starts_at.isoformat(),
        "endsAt": session.ends_at.isoformat(),
        "userName": live.participant.display_name,
        "capacity": "participant",
        "homeUrl": reverse("home"),
        "joinUrl": join_url(session),
    }
    assert config["when"].startswith("Today, ")
    assert '<script src="/static/js/room.js" type="module"></script>' in html
    assert 'id="page-config"' not in html
    assert "Therapist controls" not in html
    # Only the viewer's own name goes out with the page; the others' arrive over the socket.
    assert live.co.display_name not in html.split('id="room-config"')[1]


@pytest.mark.parametrize("persona", ["lead", "co"])
def test_join_therapist_gets_the_room_client_with_the_therapist_panel(client, live, persona):
    session = now_session(live, -timedelta(minutes=5))

    response = get_as(client, getattr(live, persona), join_url(session))

    html = response.content.decode()
    assert room_config(html)["capacity"] == "moderator"
    assert "Therapist controls" in html
    assert "End session for everyone" in html


def test_join_observer_gets_the_room_client_without_the_therapist_panel(client, live):
    session = now_session(live, -timedelta(minutes=5))

    html = get_as(client, live.admin, join_url(session)).content.decode()

    assert room_config(html)["capacity"] == "observer"
    assert "Therapist controls" not in html


def test_join_refused_or_not_open_pages_carry_no_room_client(client, live):
    removed = now_session(live, -timedelta(minutes=5))
    SessionRemoval.objects.create(session=removed, user=live.participant, removed_by=live.lead)
    later = now_session(live, clear_of_midnight(live.participant.time_zone, timedelta(hours=2)), title="Later group")

    for session in (removed, later):
        html = get_as(client, live.participant, join_url(session)).content.decode()

        assert 'id="room-config"' not in html
        assert "room.js" not in html


def test_join_before_the_window_shows_the_opening_time_and_reloads_then(client, live):
    session = now_session(live, clear_of_midnight(live.participant.time_zone, timedelta(hours=2)))

    response = get_as(client, live.participant, join_url(session))

    assert response.status_code == 200
    html = response.content.decode()
    assert f"The waiting room opens at {local_hhmm(session.lobby_opens_at, live.participant.time_zone)}" in html
    assert '<script id="page-config" type="application/json">' in html
    assert session.lobby_opens_at.isoformat() in html


@pytest.mark.parametrize(
    ("arrange", "code", "text"),
    [
        ("ended", "session.ended", "This session has ended"),
        ("cancelled", "session.cancelled", "This session was cancelled"),
        ("removed", "session.removed", "You can't rejoin this session"),
        ("locked", "room.locked", "The room is locked"),
    ],
)
def test_join_refusals_explain_themselves_with_403(client, live, arrange, code, text):
    session = now_session(live, -timedelta(minutes=5))
    if arrange == "ended":
        session.status = SessionStatus.ENDED
    elif arrange == "cancelled":
        session.status = SessionStatus.CANCELLED
    elif arrange == "locked":
        session.locked = True
    else:
        SessionRemoval.objects.create(session=session, user=live.participant, removed_by=live.lead)
    session.save()

    response = get_as(client, live.participant, join_url(session))

    assert response.status_code == 403
    html = response.content.decode()
    assert f'data-code="{code}"' in html
    assert text in html


@pytest.mark.parametrize(
    ("persona", "heading"),
    [
        ("lead", "You can enter as the therapist"),
        ("co", "You can enter as the therapist"),
        ("admin", "You can enter as an observer"),
    ],
)
def test_join_staff_enter_in_their_capacity(client, live, persona, heading):
    session = now_session(live, -timedelta(minutes=5))

    response = get_as(client, getattr(live, persona), join_url(session))

    assert response.status_code == 200
    assert heading in response.content.decode()


@pytest.mark.parametrize("code", list(Code))
def test_join_template_has_a_clear_message_for_every_code(rf, clinic, code):
    now = timezone.now()
    opens_at = now + timedelta(hours=1) if code == Code.NOT_OPEN else None
    capacity = Capacity.PARTICIPANT if code == Code.OK else None
    card = SessionCard(clinic.group_session, EntryDecision(code == Code.OK, code, capacity, None, opens_at), now)
    request = rf.get("/")
    request.user = clinic.participant

    html = render_to_string(
        "rooms/join.html", {"session": clinic.group_session, "card": card, "on_join_page": True}, request=request
    )

    block = html.split(f'data-code="{code}"')[1]
    heading = re.search(r'<h2 class="entry__heading">([^<]+)</h2>', block).group(1)
    assert heading.strip() and heading.strip() != "You can't enter this session"
    if code not in {
        Code.OK,
        Code.NOT_OPEN,
        Code.ENDED,
        Code.CANCELLED,
        Code.NOT_ON_ROSTER,
        Code.FULL,
        Code.ENROLLMENT_NOT_ACTIVE,
    }:
        assert MESSAGES[code].replace("'", "&#x27;") in block


# --- the bulk entry decisions agree with check_entry ----------------------------------------------


def test_entry_decisions_match_check_entry_for_every_persona_and_session(live):
    sessions = [
        now_session(live, -timedelta(minutes=5)),
        now_session(live, timedelta(hours=2)),
        now_session(live, -timedelta(hours=4)),
        now_session(live, timedelta(minutes=5), status=SessionStatus.CANCELLED),
        now_session(live, timedelta(minutes=1), locked=True),
        live.group_session,
        live.individual_session,
    ]
    SessionRemoval.objects.create(session=sessions[0], user=live.co, removed_by=live.lead)
    on_hold = make_user(Role.PARTICIPANT)
    enroll(on_hold, live.track, start=date.today() - timedelta(days=9), status=EnrollmentStatus.ON_HOLD)
    people = [getattr(live, p) for p in PERSONAS] + [on_hold]
    now = timezone.now()
    loaded = list(Session.objects.filter(pk__in=[s.pk for s in sessions]).select_related("room__program"))

    for user in people:
        bulk = services.entry_decisions(user, loaded, now)
        assert bulk == {s.id: services.check_entry(user, s, now=now) for s in loaded}, user


# --- healthz ---------------------------------------------------------------------------------------


def test_healthz_returns_ok_without_login(client, db):
    response = client.get(reverse("healthz"))

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_refuses_post(client, db):
    assert client.post(reverse("healthz")).status_code == 405


# --- CSP and the templates' own rules -------------------------------------------------------------


class _InlineFinder(HTMLParser):
    """Everything a strict CSP would block: inline scripts, inline styles, event-handler attributes."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and "src" not in attributes and attributes.get("type") != "application/json":
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style> element")
        for name in attributes:
            if name == "style":
                self.problems.append(f"style= on <{tag}>")
            if name.startswith("on"):
                self.problems.append(f"{name}= on <{tag}>")


def _pages(client, live):
    """(label, response) for every page each persona can reach, and the anonymous ones."""
    session = now_session(live, -timedelta(minutes=5))
    later = now_session(live, timedelta(days=1))
    yield "login", client.get(reverse("login"))
    yield "password_reset", client.get(reverse("password_reset"))
    yield "password_reset_done", client.get(reverse("password_reset_done"))
    yield "password_reset_confirm", client.get(reverse("password_reset_confirm", args=["x", "y"]))
    yield "password_reset_complete", client.get(reverse("password_reset_complete"))
    yield "404", client.get("/no/such/page/")
    for persona in PERSONAS:
        user = getattr(live, persona)
        client.force_login(user)
        yield f"{persona} home", client.get(reverse("home"))
        yield f"{persona} profile", client.get(reverse("profile"))
        for s in (session, later, live.individual_session):
            yield f"{persona} detail", client.get(detail_url(s))
            yield f"{persona} join", client.get(join_url(s))
        client.logout()


def test_every_page_sends_the_strict_csp_header(client, live):
    for label, response in _pages(client, live):
        policy = response.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, label
        assert "unsafe-inline" not in policy, label


def test_rendered_pages_have_no_inline_scripts_styles_or_handlers(client, live):
    checked = 0
    for label, response in _pages(client, live):
        finder = _InlineFinder()
        finder.feed(response.content.decode())
        assert finder.problems == [], label
        checked += 1
    assert checked > 30


def test_error_pages_render_without_a_request(db):
    html = render_to_string("500.html")

    assert "Something went wrong on our side" in html
    finder = _InlineFinder()
    finder.feed(html)
    assert finder.problems == []


def test_unknown_url_uses_the_friendly_404(client, clinic):
    response = get_as(client, clinic.participant, "/no/such/page/")

    assert response.status_code == 404
    assert "We can't find that page" in response.content.decode()


def test_expired_form_uses_the_friendly_csrf_page(db):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(reverse("login"), {"username": "x", "password": "y"})

    assert response.status_code == 403
    assert "That form has expired" in response.content.decode()
