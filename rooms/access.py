"""May this person enter this session now, and as what? One pure decision.

``decide_entry`` takes plain facts (``EntryFacts``) and an explicit ``now``; it
never touches the database, so it is tested exhaustively with a table
(tests/rooms/test_access.py) and reused unchanged by the HTTP views and the
WebSocket consumer. ``rooms.services.entry_facts`` builds the facts from the
ORM.

The checks run in a fixed order, and the first refusal wins:

1. account       ``auth.inactive``         the account is disabled
2. removal       ``session.removed``       removed or denied from this session
3. cancellation  ``session.cancelled``
4. end           ``session.ended``         status ended, or the end time passed
5. opening       ``session.not_open``      before the lobby opens (``opens_at`` tells when);
                                           people with no business in the session get
                                           ``roster.not_member`` instead, so the schedule
                                           does not leak to outsiders
6. staff         therapists of the room enter as moderators and clinic admins as
                 observers; both bypass roster, lock and capacity
7. roster        ``roster.not_member``     not on the roster at all
8. enrollment    ``enrollment.not_active`` on the track but on hold, discharged,
                                           completed, or outside their own dates
9. lock          ``room.locked``
10. capacity     ``room.full``

An admitted participant is told how they enter: ``auto`` (straight in when the
session starts, within the late-join window and under the auto policy) or
``knock`` (the therapist decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Capacity(StrEnum):
    PARTICIPANT = "participant"
    MODERATOR = "moderator"
    OBSERVER = "observer"


class Code(StrEnum):
    OK = "ok"
    AUTH_INACTIVE = "auth.inactive"
    REMOVED = "session.removed"
    CANCELLED = "session.cancelled"
    ENDED = "session.ended"
    NOT_OPEN = "session.not_open"
    NOT_ON_ROSTER = "roster.not_member"
    ENROLLMENT_NOT_ACTIVE = "enrollment.not_active"
    LOCKED = "room.locked"
    FULL = "room.full"


class Admission(StrEnum):
    DIRECT = "direct"  # moderators and observers skip the waiting room
    AUTO = "auto"  # participant admitted without a knock
    KNOCK = "knock"  # participant waits for a therapist


# People-facing explanations, one per code (templates and error frames use them).
MESSAGES: dict[Code, str] = {
    Code.OK: "You may enter.",
    Code.AUTH_INACTIVE: "Your account is disabled. Please contact the clinic.",
    Code.REMOVED: "You were removed from this session and cannot rejoin it.",
    Code.CANCELLED: "This session was cancelled.",
    Code.ENDED: "This session has ended.",
    Code.NOT_OPEN: "The waiting room is not open yet.",
    Code.NOT_ON_ROSTER: "You are not on the list for this session.",
    Code.ENROLLMENT_NOT_ACTIVE: "Your enrollment is not active for this date. Please contact the clinic.",
    Code.LOCKED: "The therapist has locked this room.",
    Code.FULL: "This room is full.",
}


@dataclass(frozen=True)
class EntryFacts:
    """Everything the decision needs, read from the database in one place."""

    # the person
    is_active: bool
    is_session_therapist: bool  # assigned to the room (or the session's track)
    is_clinic_admin: bool
    on_roster: bool  # enrolled in the track (any status) or listed on the explicit roster
    enrollment_active: bool  # an active enrollment that covers the session's local date
    removed: bool
    # the session
    status: str  # rooms.models.SessionStatus value
    starts_at: datetime
    ends_at: datetime
    lobby_opens_at: datetime
    late_join_until: datetime
    auto_admit: bool  # admission policy is "auto then knock"
    locked: bool
    capacity: int
    participants_present: int  # participants admitted or waiting, not counting this person


@dataclass(frozen=True)
class EntryDecision:
    allowed: bool
    code: Code
    capacity: Capacity | None = None
    admission: Admission | None = None
    opens_at: datetime | None = None

    @property
    def message(self) -> str:
        return MESSAGES[self.code]


def _refuse(code: Code, *, opens_at: datetime | None = None) -> EntryDecision:
    return EntryDecision(allowed=False, code=code, opens_at=opens_at)


def decide_entry(facts: EntryFacts, now: datetime) -> EntryDecision:
    """Answer "may this person enter now, and in which capacity?" (see the module docstring)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not facts.is_active:
        return _refuse(Code.AUTH_INACTIVE)
    if facts.removed:
        return _refuse(Code.REMOVED)
    if facts.status == "cancelled":
        return _refuse(Code.CANCELLED)
    if facts.status == "ended" or now >= facts.ends_at:
        return _refuse(Code.ENDED)

    staff_capacity = (
        Capacity.MODERATOR if facts.is_session_therapist else Capacity.OBSERVER if facts.is_clinic_admin else None
    )
    if now < facts.lobby_opens_at:
        if staff_capacity is not None or facts.on_roster:
            return _refuse(Code.NOT_OPEN, opens_at=facts.lobby_opens_at)
        return _refuse(Code.NOT_ON_ROSTER)
    if staff_capacity is not None:
        return EntryDecision(True, Code.OK, staff_capacity, Admission.DIRECT)

    if not facts.on_roster:
        return _refuse(Code.NOT_ON_ROSTER)
    if not facts.enrollment_active:
        return _refuse(Code.ENROLLMENT_NOT_ACTIVE)
    if facts.locked:
        return _refuse(Code.LOCKED)
    if facts.participants_present >= facts.capacity:
        return _refuse(Code.FULL)
    admission = Admission.AUTO if facts.auto_admit and now < facts.late_join_until else Admission.KNOCK
    return EntryDecision(True, Code.OK, Capacity.PARTICIPANT, admission)
