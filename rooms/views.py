"""Server-rendered screens: each person's home, the session page, the join check.

Outsiders get 404 for any session they have no business with, never 403: a
403 would confirm that a session with that id exists.

Times render in the viewer's own zone: accounts.middleware activates it for
the request, and the day boundaries below are computed in the same zone.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.views.decorators.http import require_GET

from accounts.models import Role, User
from rooms import selectors, services
from rooms.access import Capacity, Code, EntryDecision
from rooms.models import Session, SessionStatus


def _window(user: User, now: datetime) -> tuple[datetime, datetime, datetime]:
    """Start of today, start of tomorrow and start of today + 7 days, in the viewer's zone."""
    local_now = timezone.localtime(now, zoneinfo.ZoneInfo(user.time_zone))
    start = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    # Aware + timedelta is wall-clock arithmetic with zoneinfo, so "tomorrow" stays midnight across DST.
    return start, start + timedelta(days=1), start + timedelta(days=7)


def _zone_name(user: User) -> str:
    return user.time_zone.replace("_", " ")


def _sees_everything(user: User) -> bool:
    return user.role == Role.ADMIN or user.is_superuser


def visible_session(user: User, session_id) -> Session:
    """The session if this user may see it at all; 404 otherwise (ids are not confirmed to outsiders)."""
    session = get_object_or_404(Session.objects.select_related("room__program", "track"), pk=session_id)
    if not selectors.can_see_session(user, session):
        raise Http404("No such session")
    return session


@dataclass
class SessionCard:
    """One session as a screen shows it: the entry decision plus the words around it."""

    session: Session
    decision: EntryDecision
    now: datetime
    roster_count: int | None = None

    @property
    def can_join(self) -> bool:
        return self.decision.allowed

    @property
    def code(self) -> str:
        return str(self.decision.code)

    @property
    def state(self) -> str:
        """Where the session is in its day, for the status badge (not an access decision)."""
        s = self.session
        if s.status == SessionStatus.CANCELLED:
            return "cancelled"
        if s.status == SessionStatus.ENDED or self.now >= s.ends_at:
            return "ended"
        if self.now >= s.starts_at:
            return "in_progress"
        if self.now >= s.lobby_opens_at:
            return "lobby"
        return "scheduled"

    @property
    def state_label(self) -> str:
        return {
            "cancelled": "Cancelled",
            "ended": "Ended",
            "in_progress": "In progress",
            "lobby": "Waiting room open",
            "scheduled": "Scheduled",
        }[self.state]

    @property
    def day_label(self) -> str:
        """ "Wednesday 4 March" in the viewer's zone (the week list groups by it)."""
        return date_format(timezone.localtime(self.session.starts_at), "l j F")

    @property
    def when_label(self) -> str:
        """ "Today", "Tomorrow" or the day label."""
        days = (timezone.localtime(self.session.starts_at).date() - timezone.localtime(self.now).date()).days
        return {0: "Today", 1: "Tomorrow"}.get(days, self.day_label)

    @property
    def opens_label(self) -> str:
        """ "17:50" when the opening falls today or on the session's own day (the row already says
        which day), else "Sun 1 Mar, 23:50"; in the viewer's zone."""
        opens_at = self.decision.opens_at or self.session.lobby_opens_at
        local = timezone.localtime(opens_at)
        own_days = {timezone.localtime(self.now).date(), timezone.localtime(self.session.starts_at).date()}
        if local.date() in own_days:
            return date_format(local, "H:i")
        return date_format(local, "D j M, H:i")

    @property
    def why_not(self) -> str:
        if self.decision.code == Code.NOT_OPEN:
            return f"Opens at {self.opens_label}"
        return self.decision.message

    @property
    def join_label(self) -> str:
        if self.decision.capacity == Capacity.MODERATOR:
            return "Enter as therapist"
        if self.decision.capacity == Capacity.OBSERVER:
            return "Enter as observer"
        return "Join"


def _cards(user: User, sessions: list[Session], now: datetime, counts: dict | None = None) -> list[SessionCard]:
    decisions = services.entry_decisions(user, sessions, now)
    return [SessionCard(s, decisions[s.id], now, counts[s.id] if counts is not None else None) for s in sessions]


@login_required
def home(request):
    user: User = request.user
    now = timezone.now()
    today_start, tomorrow, week_end = _window(user, now)
    if user.role == Role.PARTICIPANT and not user.is_superuser:
        cards = _cards(user, services.sessions_for_participant(user, today_start, week_end), now)
        next_card = next(
            (c for c in cards if c.state not in {"cancelled", "ended"} and c.decision.code != Code.REMOVED), None
        )
        return render(
            request,
            "rooms/home_participant.html",
            {
                "today": [c for c in cards if c.session.starts_at < tomorrow],
                "later": [c for c in cards if c.session.starts_at >= tomorrow],
                "next_card": next_card,
                "zone_name": _zone_name(user),
                # The page reloads itself when this waiting room opens, so Join turns on without a tap.
                "page_config": {"reloadAt": next_card.session.lobby_opens_at.isoformat()}
                if next_card and next_card.state == "scheduled"
                else {},
            },
        )
    qs = Session.objects.all() if _sees_everything(user) else services.sessions_for_therapist(user)
    sessions = list(
        qs.filter(starts_at__lt=week_end, ends_at__gt=today_start)
        .select_related("room__program", "track")
        .order_by("starts_at")
    )
    cards = _cards(user, sessions, now, services.roster_counts(sessions))
    return render(
        request,
        "rooms/home_staff.html",
        {
            "today": [c for c in cards if c.session.starts_at < tomorrow],
            "later": [c for c in cards if c.session.starts_at >= tomorrow],
            "all_sessions": _sees_everything(user),
            "zone_name": _zone_name(user),
        },
    )


@login_required
def session_detail(request, session_id):
    user: User = request.user
    session = visible_session(user, session_id)
    now = timezone.now()
    card = SessionCard(session, services.check_entry(user, session, now=now), now)
    context = {
        "session": session,
        "card": card,
        "therapists": selectors.session_therapists(session),
        "zone_name": _zone_name(user),
        "is_staff_view": user.is_clinic_staff or user.is_superuser,
    }
    if context["is_staff_view"]:
        context["roster"] = list(services.roster(session))
        context["removed_ids"] = selectors.removed_user_ids(session)
        services.record_roster_view(user, session)
    return render(request, "rooms/session_detail.html", context)


@login_required
def join(request, session_id):
    """The join check: the same decision the realtime service will enforce, shown as a page."""
    user: User = request.user
    session = visible_session(user, session_id)
    now = timezone.now()
    card = SessionCard(session, services.check_entry(user, session, now=now), now)
    status = 200 if card.can_join or card.decision.code == Code.NOT_OPEN else 403
    context = {
        "session": session,
        "card": card,
        "on_join_page": True,
        "page_config": {"reloadAt": card.decision.opens_at.isoformat()} if card.decision.opens_at else {},
        # Entry allowed: this page becomes the pre-join check, then the waiting room and the room itself
        # (static/js/room.js), without a reload in between.
        "room_config": _room_config(request, user, session, card) if card.can_join else None,
    }
    return render(request, "rooms/join.html", context, status=status)


def _room_config(request, user: User, session: Session, card: SessionCard) -> dict:
    """What the browser client needs, passed with json_script (the CSP allows no inline script).

    Only this person's own display name goes out: everyone else's name arrives over the socket,
    where the server decides what each member may see.
    """
    starts = timezone.localtime(session.starts_at)
    ends = timezone.localtime(session.ends_at)
    return {
        "wsPath": f"/ws/sessions/{session.id}/",
        "title": session.title,
        "when": f"{card.when_label}, {date_format(starts, 'H:i')} to {date_format(ends, 'H:i')}",
        "startsAt": session.starts_at.isoformat(),
        "endsAt": session.ends_at.isoformat(),
        "userName": user.display_name,
        "capacity": str(card.decision.capacity),
        "homeUrl": reverse("home"),
        "joinUrl": request.path,
    }


@require_GET
def healthz(request):
    """Liveness for docker-compose and load balancers: the process is up and the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
