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
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet, prefetch_related_objects
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
    FamilyConsent,
    RoomTherapist,
    RosterEntry,
    Session,
    SessionRemoval,
    SessionSeries,
    SessionStatus,
    TrackTherapist,
)
from rooms.recurrence import SeriesRule, occurrences_between


def audit(
    action: str,
    *,
    actor: User | None = None,
    subject: User | None = None,
    session: Session | None = None,
    code: str = "",
) -> AuditEvent:
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
    # Room kind and program time zone are read per session below: load them in bulk, or every
    # session would cost its own room and program queries.
    if isinstance(sessions, QuerySet):
        sessions = sessions.select_related("room__program")
    sessions = list(sessions)
    prefetch_related_objects(sessions, "room__program")  # no query for rooms already loaded
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


def entry_facts_for(user: User, sessions: Iterable[Session], *, participants_present: dict | None = None) -> dict:
    """Everything ``decide_entry`` needs about this person, for each session, keyed by session id.

    A fixed number of queries whatever the number of sessions (home pages list a
    week). Sessions should come with ``room__program`` selected. The realtime
    service supplies ``participants_present`` (who is in the room or waiting,
    per session id); pages that only preview entry leave it out (0).
    """
    sessions = list(sessions)
    if not sessions:
        return {}
    present = participants_present or {}
    ids = [s.id for s in sessions]
    track_ids = {s.track_id for s in sessions if s.track_id}

    therapist_rooms: set = set()
    therapist_tracks: set = set()
    if user.role == Role.THERAPIST:
        therapist_rooms = set(
            RoomTherapist.objects.filter(therapist=user, room_id__in={s.room_id for s in sessions}).values_list(
                "room_id", flat=True
            )
        )
        therapist_tracks = set(
            TrackTherapist.objects.filter(therapist=user, track_id__in=track_ids).values_list("track_id", flat=True)
        )
    enrollments_by_track: dict = defaultdict(list)
    explicit: set = set()
    if user.role == Role.PARTICIPANT:
        for enrollment in Enrollment.objects.filter(participant=user, track_id__in=track_ids):
            enrollments_by_track[enrollment.track_id].append(enrollment)
        explicit_ids = [s.id for s in sessions if not s.uses_track_roster]  # track sessions go by enrollment
        if explicit_ids:
            explicit = set(
                RosterEntry.objects.filter(participant=user, session_id__in=explicit_ids).values_list(
                    "session_id", flat=True
                )
            )
    removed = set(SessionRemoval.objects.filter(user=user, session_id__in=ids).values_list("session_id", flat=True))
    return {
        s.id: build_entry_facts(
            user,
            s,
            enrollments=enrollments_by_track[s.track_id] if s.track_id else [],
            on_explicit_roster=s.id in explicit,
            is_session_therapist=s.room_id in therapist_rooms or (bool(s.track_id) and s.track_id in therapist_tracks),
            removed=s.id in removed,
            participants_present=present.get(s.id, 0),
        )
        for s in sessions
    }


def build_entry_facts(
    user: User,
    s: Session,
    *,
    enrollments: list[Enrollment],
    on_explicit_roster: bool,
    is_session_therapist: bool,
    removed: bool,
    participants_present: int,
) -> EntryFacts:
    """``EntryFacts`` from what was read about this person and session (the rows come from
    ``entry_facts_for``, or from the realtime join's single round trip: rooms.join_sql)."""
    if s.uses_track_roster:
        day = local_date(s)
        on_roster = bool(enrollments)
        enrollment_active = any(e.status == EnrollmentStatus.ACTIVE and e.covers(day) for e in enrollments)
    else:
        on_roster = enrollment_active = on_explicit_roster
    return EntryFacts(
        is_active=user.is_active,
        is_session_therapist=is_session_therapist,
        is_clinic_admin=user.role == Role.ADMIN,
        on_roster=on_roster and user.role == Role.PARTICIPANT,
        enrollment_active=enrollment_active,
        removed=removed,
        status=s.status,
        starts_at=s.starts_at,
        ends_at=s.ends_at,
        lobby_opens_at=s.lobby_opens_at,
        late_join_until=s.late_join_until,
        auto_admit=s.admission_policy == AdmissionPolicy.AUTO_THEN_KNOCK,
        locked=s.locked,
        capacity=s.room.capacity,
        participants_present=participants_present,
    )


def entry_facts(user: User, session: Session, *, participants_present: int = 0) -> EntryFacts:
    """``entry_facts_for`` for one session."""
    return entry_facts_for(user, [session], participants_present={session.id: participants_present})[session.id]


def entry_decisions(user: User, sessions: Iterable[Session], now: datetime) -> dict:
    """``check_entry`` for a list of sessions (keyed by id), in a fixed number of queries."""
    return {sid: decide_entry(facts, now) for sid, facts in entry_facts_for(user, sessions).items()}


def check_entry(
    user: User, session: Session, *, now: datetime | None = None, participants_present: int = 0
) -> EntryDecision:
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
def generate_occurrences(
    series: SessionSeries, *, now: datetime | None = None, horizon_days: int | None = None
) -> GenerationResult:
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
    first_day = today - timedelta(days=1)
    horizon_end = today + horizon
    rule = SeriesRule.from_series(series)
    # Lock this series' rows so two generators cannot race on the unique (series, date) key.
    existing = {
        s.occurrence_date: s
        for s in Session.objects.select_for_update().filter(series=series, occurrence_date__gte=first_day)
    }
    # Evaluate the rule as far as the furthest existing occurrence, not just this run's horizon:
    # dates an earlier, longer run created are still produced by the rule and must not be
    # cancelled as if an exception had removed them.
    last_day = max([horizon_end, *existing])
    wanted = {o.occurrence_date: o for o in occurrences_between(rule, first_day, last_day)}
    result = GenerationResult()
    for day, occurrence in sorted(wanted.items()):
        if occurrence.starts_at <= now:
            continue
        values = _series_values(series, occurrence.starts_at, occurrence.ends_at)
        session = existing.get(day)
        if session is None:
            if day > horizon_end:
                continue  # beyond this run's horizon: a later run creates it
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
        changes = {name: value for name, value in values.items() if getattr(session, name) != value}
        restoring = session.status == SessionStatus.CANCELLED
        if not changes and not restoring:
            continue
        if restoring or changes.keys() & {"room_id", "starts_at", "ends_at"}:
            # A new time or room, or a restored date, may land on another booking made since:
            # skip and report it, as for a new occurrence, rather than double-book the room.
            probe = Session(
                pk=session.pk, room_id=values["room_id"], starts_at=values["starts_at"], ends_at=values["ends_at"]
            )
            clash = probe.overlapping().first()
            if clash is not None:
                result.conflicts.append((day, clash))
                continue
        if restoring:
            session.status = SessionStatus.SCHEDULED
        for name, value in changes.items():
            setattr(session, name, value)
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
    return [
        o for o in occurrences_between(rule, today, today + timedelta(days=400), limit=count + 2) if o.starts_at > now
    ][:count]


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
    before = (session.starts_at, session.ends_at, session.detached)
    session.starts_at = starts_at
    session.ends_at = ends_at
    session.detached = True
    try:
        session.full_clean()
    except ValidationError:
        # The move did not happen: leave the caller's instance as it was (a form re-renders from it).
        session.starts_at, session.ends_at, session.detached = before
        raise
    session.save()
    audit(AuditAction.SESSION_MOVED, actor=by, session=session)
    return session


@transaction.atomic
def revoke_consents(consents: QuerySet[FamilyConsent], *, by: User) -> int:
    """Revoke each still-active family consent and audit it. Returns how many were revoked.

    A consent records something that happened: it is revoked (revoked_at set), never edited or deleted.
    """
    now = timezone.now()
    count = 0
    for consent in consents.filter(revoked_at__isnull=True).select_related("contact__participant"):
        consent.revoked_at = max(now, consent.consented_at)
        consent.save(update_fields=["revoked_at"])
        audit(AuditAction.CONSENT_REVOKED, actor=by, subject=consent.contact.participant)
        count += 1
    return count


def record_roster_view(viewer: User, session: Session) -> None:
    """Rosters are protected health information: every staff view is logged."""
    audit(AuditAction.ROSTER_VIEWED, actor=viewer, session=session)
