"""Read-only queries for the screens: who may see a session, and who runs it.

Entry decisions for a list of sessions live in ``rooms.services.entry_decisions``
(one fact-gathering implementation for pages and the realtime service).
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import Role, User
from rooms import services
from rooms.models import (
    Enrollment,
    EnrollmentStatus,
    FacilitatorRole,
    RoomTherapist,
    RosterEntry,
    Session,
    SessionRemoval,
    TrackTherapist,
)

# Enrollments that still give a participant a view of their track's schedule. On hold
# keeps the view (the join page then explains why they cannot enter); completed and
# discharged do not.
_OPEN_ENROLLMENT = [EnrollmentStatus.ACTIVE, EnrollmentStatus.ON_HOLD]


def participant_can_see(user: User, session: Session) -> bool:
    """Is this session on the participant's own schedule? The same rule as their home page.

    Explicit roster sessions: listed on the roster. Track sessions: an open
    enrollment in the track that covers the session's local date.
    """
    if user.role != Role.PARTICIPANT:
        return False
    if not session.uses_track_roster:
        return RosterEntry.objects.filter(session=session, participant=user).exists()
    day = services.local_date(session)
    return any(
        e.covers(day)
        for e in Enrollment.objects.filter(participant=user, track_id=session.track_id, status__in=_OPEN_ENROLLMENT)
    )


def can_see_session(user: User, session: Session) -> bool:
    """Clinic admins see every session, therapists the ones they run, participants their own."""
    if user.role == Role.ADMIN or user.is_superuser:
        return True
    if user.role == Role.THERAPIST:
        return services.is_session_therapist(user, session)
    return participant_can_see(user, session)


@dataclass(frozen=True)
class Facilitator:
    user: User
    role: str  # rooms.models.FacilitatorRole value

    @property
    def is_lead(self) -> bool:
        return self.role == FacilitatorRole.LEAD


def session_therapists(session: Session) -> list[Facilitator]:
    """Who runs this session: the track's therapists, then the room's, each person once, leads first."""
    seen: dict = {}
    rows = []
    if session.track_id:
        rows += list(TrackTherapist.objects.filter(track_id=session.track_id).select_related("therapist"))
    rows += list(RoomTherapist.objects.filter(room_id=session.room_id).select_related("therapist"))
    for row in rows:
        seen.setdefault(row.therapist_id, Facilitator(row.therapist, row.role))
    return sorted(seen.values(), key=lambda f: (not f.is_lead, f.user.last_name, f.user.first_name))


def removed_user_ids(session: Session) -> set:
    return set(SessionRemoval.objects.filter(session=session).values_list("user_id", flat=True))
