"""Server-rendered screens: each person's home, the session page, the join check.

Outsiders get 404 for any session they have no business with, never 403: a
403 would confirm that a session with that id exists.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.models import Role, User
from rooms import services
from rooms.access import Code, EntryDecision
from rooms.models import Session, SessionStatus


def _window(user: User, now: datetime) -> tuple[datetime, datetime, datetime]:
    """Start of today, start of tomorrow and start of today + 7 days, in the viewer's zone."""
    local_now = timezone.localtime(now, zoneinfo.ZoneInfo(user.time_zone))
    start = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1), start + timedelta(days=7)


def visible_session(user: User, session_id) -> Session:
    """The session if this user may see it at all; 404 otherwise (ids are not confirmed to outsiders)."""
    session = get_object_or_404(Session.objects.select_related("room__program", "track"), pk=session_id)
    if user.role == Role.ADMIN or user.is_superuser:
        return session
    if user.role == Role.THERAPIST and services.is_session_therapist(user, session):
        return session
    if user.role == Role.PARTICIPANT and services.roster(session).filter(pk=user.pk).exists():
        return session
    raise Http404("No such session")


@dataclass
class SessionCard:
    session: Session
    decision: EntryDecision
    roster_count: int | None = None

    @property
    def can_join(self) -> bool:
        return self.decision.allowed

    @property
    def why_not(self) -> str:
        decision = self.decision
        if decision.code == Code.NOT_OPEN and decision.opens_at:
            local = timezone.localtime(decision.opens_at)
            today = timezone.localtime(timezone.now()).date()
            when = f"{local:%H:%M}" if local.date() == today else f"{local:%a %d %b, %H:%M}"
            return f"Opens at {when}"
        return decision.message


@login_required
def home(request):
    user: User = request.user
    now = timezone.now()
    today_start, tomorrow, week_end = _window(user, now)
    if user.role == Role.PARTICIPANT:
        sessions = services.sessions_for_participant(user, today_start, week_end)
        cards = [SessionCard(s, services.check_entry(user, s, now=now)) for s in sessions]
        return render(request, "rooms/home_participant.html", {
            "today": [c for c in cards if c.session.starts_at < tomorrow],
            "later": [c for c in cards if c.session.starts_at >= tomorrow],
            "next_card": next((c for c in cards if c.session.ends_at > now
                               and c.session.status != SessionStatus.CANCELLED), None),
        })
    if user.role == Role.THERAPIST:
        qs = services.sessions_for_therapist(user)
    else:
        qs = Session.objects.all()
    sessions = list(
        qs.filter(starts_at__lt=week_end, ends_at__gt=today_start).select_related("room__program", "track")
        .order_by("starts_at")
    )
    counts = services.roster_counts(sessions)
    cards = [SessionCard(s, services.check_entry(user, s, now=now), counts[s.id]) for s in sessions]
    return render(request, "rooms/home_staff.html", {
        "today": [c for c in cards if c.session.starts_at < tomorrow],
        "later": [c for c in cards if c.session.starts_at >= tomorrow],
    })


@login_required
def session_detail(request, session_id):
    user: User = request.user
    session = visible_session(user, session_id)
    decision = services.check_entry(user, session)
    context = {"session": session, "card": SessionCard(session, decision), "is_staff_view": user.is_clinic_staff}
    if user.is_clinic_staff or user.is_superuser:
        context["roster"] = list(services.roster(session))
        context["is_staff_view"] = True
        services.record_roster_view(user, session)
    return render(request, "rooms/session_detail.html", context)


@login_required
def join(request, session_id):
    """The join check: the same decision the realtime service will enforce, shown as a page."""
    user: User = request.user
    session = visible_session(user, session_id)
    decision = services.check_entry(user, session)
    status = 200 if decision.allowed or decision.code == Code.NOT_OPEN else 403
    return render(request, "rooms/join.html",
                  {"session": session, "card": SessionCard(session, decision)}, status=status)


@require_GET
def healthz(request):
    """Liveness for docker-compose and load balancers: the process is up and the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
