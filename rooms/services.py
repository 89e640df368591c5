"""State changes and reads of the scheduling domain, one transaction each.

Views, the admin and (later) the WebSocket consumer call these; they never
write models directly. Every change a clinic might be asked about is audited.
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import Role, User
from rooms.access import EntryDecision, EntryFacts, decide_entry
from rooms.models import (
    TRACK_ROSTER_KINDS,
    AdmissionPolicy,
    AuditAction,
    AuditEvent,
    Enrollment,
    EnrollmentStatus,
    RosterEntry,
    Session,
    SessionRemoval,
    SessionSeries,
    SessionStatus,
    TrackTherapist,
)
from rooms.recurrence import SeriesRule, occurrences_between


def audit(action: str, *, actor: User | None = None, subject: User | None = None,
          session: Session | None = None, code: str = "") -> AuditEvent:
    """Append one audit row. Ids only: never names, chat text or secrets."""
    return AuditEvent.objects.create(action=action, actor=actor, subject=subject, session=session, code=code)


# --- rosters -----------------------------------------------------------------------------------


def local_date(session: Session) -> date:
    return timezone.localtime(session.starts_at, zoneinfo.ZoneInfo(session.room.program.time_zone)).date()


def _covering(day: date) -> Q:
    return Q(start_date__lte=day) & (Q(end_date__isnull=True) | Q(end_date__gte=day))


def roster(session: Session) -> QuerySet[User]:
    """Participants expected in this session.

    Group kinds: the track's active enrollments that cover the session's local
    date (rolling admission). Individual, family and medication sessions: the
    explicit roster.
    """
    if session.room.kind in TRACK_ROSTER_KINDS and session.track_id:
        day = local_date(session)
        enrollment_ids = Enrollment.objects.filter(
            _covering(day), track_id=session.track_id, status=EnrollmentStatus.ACTIVE
        ).values("participant_id")
        return User.objects.filter(id__in=enrollment_ids).order_by("last_name", "first_name")
    return User.objects.filter(roster_entries__session=session).order_by("last_name", "first_name")


def roster_counts(sessions: Iterable[Session]) -> dict:
    """Roster size per session id, in a fixed number of queries whatever the number of sessions."""
    sessions = list(sessions)
    counts: dict = {}
    track_ids = {s.track_id for s in sessions if s.room.kind in TRACK_ROSTER_KINDS and s.track_id}
    enrollments_by_track: dict = defaultdict(list)
    if track_ids:
        for enrollment in Enrollment.objects.filter(track_id__in=track_ids, status=EnrollmentStatus.ACTIVE):
            enrollments_by_track[enrollment.track_id].append(enrollment)
    explicit_ids = [s.id for s in sessions if not (s.room.kind in TRACK_ROSTER_KINDS and s.track_id)]
    explicit: dict = defaultdict(int)
    if explicit_ids:
        for entry in RosterEntry.objects.filter(session_id__in=explicit_ids).values("session_id"):
            explicit[entry["session_id"]] += 1
    for s in sessions:
        if s.room.kind in TRACK_ROSTER_KINDS and s.track_id:
            day = local_date(s)
            counts[s.id] = sum(1 for e in enrollments_by_track[s.track_id] if e.covers(day))
        else:
            counts[s.id] = explicit[s.id]
    return counts


def is_session_therapist(user: User, session: Session) -> bool:
    if user.role != Role.THERAPIST:
        return False
    if session.room.facilitators.filter(therapist=user).exists():
        return True
    return bool(session.track_id) and TrackTherapist.objects.filter(track_id=session.track_id, therapist=user).exists()


def sessions_for_therapist(user: User) -> QuerySet[Session]:
    return Session.objects.filter(
        Q(room__facilitators__therapist=user) | Q(track__facilitators__therapist=user)
    ).distinct()


def sessions_for_participant(user: User, first: datetime, last: datetime) -> list[Session]:
    """Sessions in [first, last) that this participant is on the roster of (by date)."""
    enrollments = list(
        Enrollment.objects.filter(participant=user).exclude(
            status__in=[EnrollmentStatus.COMPLETED, EnrollmentStatus.DISCHARGED]
        )
    )
    by_track = defaultdict(list)
    for enrollment in enrollments:
        by_track[enrollment.track_id].append(enrollment)
    candidates = (
        Session.objects.filter(starts_at__lt=last, ends_at__gt=first)
        .filter(
            Q(track_id__in=list(by_track), room__kind__in=list(TRACK_ROSTER_KINDS))
            | Q(roster_entries__participant=user)
        )
        .select_related("room__program", "track")
        .distinct()
        .order_by("starts_at")
    )
    result = []
    for session in candidates:
        if session.room.kind in TRACK_ROSTER_KINDS and session.track_id in by_track:
            day = local_date(session)
            if not any(e.covers(day) for e in by_track[session.track_id]):
                continue
        result.append(session)
    return result


# --- entry ---------------------------------------------------------------------------------


def entry_facts(user: User, session: Session, *, participants_present: int = 0) -> EntryFacts:
    """Read everything ``decide_entry`` needs about this person and session.

    ``participants_present`` is supplied by the realtime service (who is in the
    room or waiting); pages that only preview the decision pass 0.
    """
    day = local_date(session)
    on_roster = False
    enrollment_active = False
    if session.room.kind in TRACK_ROSTER_KINDS and session.track_id:
        enrollments = list(Enrollment.objects.filter(participant=user, track_id=session.track_id))
        on_roster = bool(enrollments)
        enrollment_active = any(e.status == EnrollmentStatus.ACTIVE and e.covers(day) for e in enrollments)
    else:
        on_roster = RosterEntry.objects.filter(session=session, participant=user).exists()
        enrollment_active = on_roster
    return EntryFacts(
        is_active=user.is_active,
        is_session_therapist=is_session_therapist(user, session),
        is_clinic_admin=user.role == Role.ADMIN,
        on_roster=on_roster and user.role == Role.PARTICIPANT,
        enrollment_active=enrollment_active,
        removed=SessionRemoval.objects.filter(session=session, user=user).exists(),
        status=session.status,
        starts_at=session.starts_at,
        ends_at=session.ends_at,
        lobby_opens_at=session.lobby_opens_at,
        late_join_until=session.late_join_until,
        auto_admit=session.admission_policy == AdmissionPolicy.AUTO_THEN_KNOCK,
        locked=session.locked,
        capacity=session.room.capacity,
        participants_present=participants_present,
    )


def check_entry(user: User, session: Session, *, now: datetime | None = None,
                participants_present: int = 0) -> EntryDecision:
    return decide_entry(entry_facts(user, session, participants_present=participants_present), now or timezone.now())


# --- series -------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    created: list[Session] = field(default_factory=list)
    updated: list[Session] = field(default_factory=list)
    cancelled: list[Session] = field(default_factory=list)
    conflicts: list[tuple[date, Session]] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.created)} created", f"{len(self.updated)} updated", f"{len(self.cancelled)} cancelled"]
        if self.conflicts:
            days = ", ".join(day.isoformat() for day, _ in self.conflicts)
            parts.append(f"{len(self.conflicts)} skipped because the room is taken ({days})")
        return "; ".join(parts)


def _series_values(series: SessionSeries, starts_at: datetime, ends_at: datetime) -> dict:
    return {
        "room_id": series.room_id,
        "track_id": series.track_id,
        "title": series.title,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "lobby_opens_before": series.lobby_opens_before,
        "late_join_minutes": series.late_join_minutes,
        "admission_policy": series.effective_admission_policy(),
    }


@transaction.atomic
def generate_occurrences(series: SessionSeries, *, now: datetime | None = None,
                         horizon_days: int | None = None) -> GenerationResult:
    """Materialise the series' occurrences from now to the horizon. Idempotent.

    - Missing occurrences are created (skipped, and reported, when the room is taken).
    - Future occurrences that were not edited by hand follow the series (time, title, room...).
    - Future occurrences the rule no longer produces (a new exception, a removed weekday)
      are cancelled; one the rule produces again is restored.
    - Past and started occurrences are never touched.
    """
    now = now or timezone.now()
    horizon = timedelta(days=horizon_days if horizon_days is not None else settings.SERIES_HORIZON_DAYS)
    zone = zoneinfo.ZoneInfo(series.time_zone)
    today = timezone.localtime(now, zone).date()
    rule = SeriesRule.from_series(series)
    wanted = {o.occurrence_date: o for o in occurrences_between(rule, today - timedelta(days=1), today + horizon)}
    # Lock this series' rows so two generators cannot race on the unique (series, date) key.
    existing = {
        s.occurrence_date: s
        for s in Session.objects.select_for_update().filter(series=series, occurrence_date__gte=today - timedelta(days=1))
    }
    result = GenerationResult()
    for day, occurrence in sorted(wanted.items()):
        if occurrence.starts_at <= now:
            continue
        values = _series_values(series, occurrence.starts_at, occurrence.ends_at)
        session = existing.get(day)
        if session is None:
            candidate = Session(series=series, occurrence_date=day, **values)
            clash = candidate.overlapping().first()
            if clash is not None:
                result.conflicts.append((day, clash))
                continue
            candidate.save()
            result.created.append(candidate)
            continue
        if session.detached or session.starts_at <= now or session.status in {SessionStatus.ENDED, SessionStatus.LIVE}:
            continue
        changed = False
        if session.status == SessionStatus.CANCELLED:
            session.status = SessionStatus.SCHEDULED
            changed = True
        for name, value in values.items():
            if getattr(session, name) != value:
                setattr(session, name, value)
                changed = True
        if changed:
            session.save()
            result.updated.append(session)
    for day, session in existing.items():
        if day in wanted or session.detached or session.starts_at <= now:
            continue
        if session.status == SessionStatus.SCHEDULED:
            session.status = SessionStatus.CANCELLED
            session.save(update_fields=["status"])
            result.cancelled.append(session)
    return result


def preview_occurrences(series: SessionSeries, *, count: int = 8, now: datetime | None = None) -> list:
    """The next ``count`` occurrences the rule produces (for the admin), without writing anything."""
    now = now or timezone.now()
    today = timezone.localtime(now, zoneinfo.ZoneInfo(series.time_zone)).date()
    rule = SeriesRule.from_series(series)
    return [o for o in occurrences_between(rule, today, today + timedelta(days=400), limit=count + 2)
            if o.starts_at > now][:count]


# --- single occurrences ----------------------------------------------------------------------------


@transaction.atomic
def cancel_session(session: Session, *, by: User) -> Session:
    if session.status in {SessionStatus.ENDED, SessionStatus.CANCELLED}:
        return session
    session.status = SessionStatus.CANCELLED
    session.detached = True
    session.save(update_fields=["status", "detached"])
    audit(AuditAction.SESSION_CANCELLED, actor=by, session=session)
    return session


@transaction.atomic
def move_session(session: Session, *, starts_at: datetime, ends_at: datetime, by: User) -> Session:
    """Move one occurrence; it then no longer follows its series. Validates overlap and order."""
    session.starts_at = starts_at
    session.ends_at = ends_at
    session.detached = True
    session.full_clean()
    session.save()
    audit(AuditAction.SESSION_MOVED, actor=by, session=session)
    return session


def record_roster_view(viewer: User, session: Session) -> None:
    """Rosters are protected health information: every staff view is logged."""
    audit(AuditAction.ROSTER_VIEWED, actor=viewer, session=session)
