"""May X enter session Y at time T? The pure decision, table by table, then through the ORM.

The unit tables drive ``rooms.access.decide_entry`` with hand-built ``EntryFacts``
(no database). The integration tests at the end go through
``rooms.services.check_entry`` with the clinic personas, where the time zone and
the enrollment dates are real.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from accounts.models import Role
from rooms.access import Admission, Capacity, Code, EntryDecision, EntryFacts, decide_entry
from rooms.models import AdmissionPolicy, EnrollmentStatus, SessionRemoval, SessionStatus
from rooms.services import check_entry
from tests.factories import enroll, make_session, make_user

SECOND = timedelta(seconds=1)
# Monday 2 March 2026, 18:00 in New York (EST): 23:00 UTC. A 3-hour group.
START = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
END = START + timedelta(hours=3)
LOBBY = START - timedelta(minutes=10)
LATE_LIMIT = START + timedelta(minutes=10)
IN_SESSION = START + timedelta(minutes=5)  # open, started, still auto-admitting

# The people, as facts. An outsider is anyone with no business in the session: a
# participant of another track, or a therapist assigned to another room.
PARTICIPANT: dict = {}
THERAPIST = {"is_session_therapist": True, "on_roster": False, "enrollment_active": False}
ADMIN = {"is_clinic_admin": True, "on_roster": False, "enrollment_active": False}
OUTSIDER = {"on_roster": False, "enrollment_active": False}


def facts(**changes) -> EntryFacts:
    """An enrolled, active participant and a scheduled, unlocked, empty session; override what a case needs."""
    base = EntryFacts(
        is_active=True,
        is_session_therapist=False,
        is_clinic_admin=False,
        on_roster=True,
        enrollment_active=True,
        removed=False,
        status=SessionStatus.SCHEDULED,
        starts_at=START,
        ends_at=END,
        lobby_opens_at=LOBBY,
        late_join_until=LATE_LIMIT,
        auto_admit=True,
        locked=False,
        capacity=15,
        participants_present=0,
    )
    return replace(base, **changes)


def refused(code: Code, *, opens_at: datetime | None = None) -> EntryDecision:
    return EntryDecision(allowed=False, code=code, opens_at=opens_at)


AS_PARTICIPANT_AUTO = EntryDecision(True, Code.OK, Capacity.PARTICIPANT, Admission.AUTO)
AS_PARTICIPANT_KNOCK = EntryDecision(True, Code.OK, Capacity.PARTICIPANT, Admission.KNOCK)
AS_MODERATOR = EntryDecision(True, Code.OK, Capacity.MODERATOR, Admission.DIRECT)
AS_OBSERVER = EntryDecision(True, Code.OK, Capacity.OBSERVER, Admission.DIRECT)


# --- every refusal code ------------------------------------------------------------------------

REFUSALS = [
    pytest.param(facts(is_active=False), IN_SESSION, refused(Code.AUTH_INACTIVE), id="auth.inactive"),
    pytest.param(facts(removed=True), IN_SESSION, refused(Code.REMOVED), id="session.removed"),
    pytest.param(facts(status=SessionStatus.CANCELLED), IN_SESSION, refused(Code.CANCELLED), id="session.cancelled"),
    pytest.param(facts(status=SessionStatus.ENDED), IN_SESSION, refused(Code.ENDED), id="session.ended-status"),
    pytest.param(facts(), END, refused(Code.ENDED), id="session.ended-time-passed"),
    pytest.param(facts(), LOBBY - SECOND, refused(Code.NOT_OPEN, opens_at=LOBBY), id="session.not_open"),
    pytest.param(facts(**OUTSIDER), IN_SESSION, refused(Code.NOT_ON_ROSTER), id="roster.not_member"),
    pytest.param(
        facts(enrollment_active=False), IN_SESSION, refused(Code.ENROLLMENT_NOT_ACTIVE), id="enrollment.not_active"
    ),
    pytest.param(facts(locked=True), IN_SESSION, refused(Code.LOCKED), id="room.locked"),
    pytest.param(facts(participants_present=15), IN_SESSION, refused(Code.FULL), id="room.full"),
]


@pytest.mark.parametrize(("entry_facts", "now", "expected"), REFUSALS)
def test_decide_entry_refuses_with_stable_code(entry_facts, now, expected):
    # Arrange: the table row. Act
    decision = decide_entry(entry_facts, now)

    # Assert
    assert decision == expected
    assert decision.message  # every code has a people-facing explanation


def test_decide_entry_codes_are_stable_strings():
    # Arrange / Act
    values = {code.name: code.value for code in Code}

    # Assert: clients and templates key on these strings; renaming one is a protocol change.
    assert values == {
        "OK": "ok",
        "AUTH_INACTIVE": "auth.inactive",
        "REMOVED": "session.removed",
        "CANCELLED": "session.cancelled",
        "ENDED": "session.ended",
        "NOT_OPEN": "session.not_open",
        "NOT_ON_ROSTER": "roster.not_member",
        "ENROLLMENT_NOT_ACTIVE": "enrollment.not_active",
        "LOCKED": "room.locked",
        "FULL": "room.full",
    }


# --- every role -------------------------------------------------------------------------------

ROLES = [
    pytest.param(PARTICIPANT, IN_SESSION, AS_PARTICIPANT_AUTO, id="participant"),
    pytest.param(THERAPIST, IN_SESSION, AS_MODERATOR, id="session-therapist-moderates"),
    pytest.param(ADMIN, IN_SESSION, AS_OBSERVER, id="clinic-admin-observes"),
    pytest.param({**THERAPIST, **ADMIN}, IN_SESSION, AS_MODERATOR, id="therapist-and-admin-moderates"),
    pytest.param(OUTSIDER, IN_SESSION, refused(Code.NOT_ON_ROSTER), id="outsider-or-unassigned-therapist"),
    # Before the lobby opens: people with business in the session learn when it opens...
    pytest.param(PARTICIPANT, LOBBY - SECOND, refused(Code.NOT_OPEN, opens_at=LOBBY), id="participant-early"),
    pytest.param(THERAPIST, LOBBY - SECOND, refused(Code.NOT_OPEN, opens_at=LOBBY), id="therapist-early"),
    pytest.param(ADMIN, LOBBY - SECOND, refused(Code.NOT_OPEN, opens_at=LOBBY), id="admin-early"),
    # ...outsiders do not: the schedule of a group is itself protected.
    pytest.param(OUTSIDER, LOBBY - SECOND, refused(Code.NOT_ON_ROSTER), id="outsider-early-learns-nothing"),
    # Staff do not outlive the session either.
    pytest.param(THERAPIST, END, refused(Code.ENDED), id="therapist-after-end"),
    pytest.param(ADMIN, END, refused(Code.ENDED), id="admin-after-end"),
]


@pytest.mark.parametrize(("person", "now", "expected"), ROLES)
def test_decide_entry_role_decides_capacity(person, now, expected):
    # Arrange
    entry_facts = facts(**person)

    # Act
    decision = decide_entry(entry_facts, now)

    # Assert
    assert decision == expected


# --- window edges, one second either side -------------------------------------------------------

EDGES = [
    pytest.param(LOBBY - SECOND, refused(Code.NOT_OPEN, opens_at=LOBBY), id="lobby-1s-before"),
    pytest.param(LOBBY, AS_PARTICIPANT_AUTO, id="lobby-opens"),
    pytest.param(LOBBY + SECOND, AS_PARTICIPANT_AUTO, id="lobby-1s-after"),
    pytest.param(START, AS_PARTICIPANT_AUTO, id="start"),
    pytest.param(LATE_LIMIT - SECOND, AS_PARTICIPANT_AUTO, id="late-limit-1s-before"),
    pytest.param(LATE_LIMIT, AS_PARTICIPANT_KNOCK, id="late-limit"),
    pytest.param(LATE_LIMIT + SECOND, AS_PARTICIPANT_KNOCK, id="late-limit-1s-after"),
    pytest.param(END - SECOND, AS_PARTICIPANT_KNOCK, id="end-1s-before"),
    pytest.param(END, refused(Code.ENDED), id="end"),
    pytest.param(END + SECOND, refused(Code.ENDED), id="end-1s-after"),
]


@pytest.mark.parametrize(("now", "expected"), EDGES)
def test_decide_entry_window_edges_for_participant(now, expected):
    # Arrange
    entry_facts = facts()

    # Act
    decision = decide_entry(entry_facts, now)

    # Assert
    assert decision == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(LOBBY - SECOND, refused(Code.NOT_OPEN, opens_at=LOBBY), id="lobby-1s-before"),
        pytest.param(LOBBY, AS_MODERATOR, id="lobby-opens"),
        pytest.param(END - SECOND, AS_MODERATOR, id="end-1s-before"),
        pytest.param(END, refused(Code.ENDED), id="end"),
    ],
)
def test_decide_entry_window_edges_for_therapist(now, expected):
    # Arrange
    entry_facts = facts(**THERAPIST)

    # Act
    decision = decide_entry(entry_facts, now)

    # Assert
    assert decision == expected


# --- the fixed order of checks: the first refusal wins ---------------------------------------------

ORDER = [
    pytest.param(facts(is_active=False, removed=True), IN_SESSION, Code.AUTH_INACTIVE, id="inactive-before-removed"),
    pytest.param(facts(removed=True, locked=True), IN_SESSION, Code.REMOVED, id="removed-before-locked"),
    pytest.param(
        facts(removed=True, status=SessionStatus.CANCELLED), IN_SESSION, Code.REMOVED, id="removed-before-cancelled"
    ),
    pytest.param(facts(removed=True, **THERAPIST), IN_SESSION, Code.REMOVED, id="removed-therapist-stays-out"),
    pytest.param(facts(status=SessionStatus.CANCELLED), END + SECOND, Code.CANCELLED, id="cancelled-before-ended"),
    pytest.param(facts(status=SessionStatus.CANCELLED), LOBBY - SECOND, Code.CANCELLED, id="cancelled-before-not-open"),
    pytest.param(facts(status=SessionStatus.ENDED), LOBBY - SECOND, Code.ENDED, id="ended-before-not-open"),
    pytest.param(
        facts(locked=True, enrollment_active=False),
        LOBBY - SECOND,
        Code.NOT_OPEN,
        id="not-open-before-enrollment-and-lock",
    ),
    pytest.param(
        facts(locked=True, participants_present=15, **OUTSIDER),
        IN_SESSION,
        Code.NOT_ON_ROSTER,
        id="not-member-before-locked-and-full",
    ),
    pytest.param(
        facts(enrollment_active=False, locked=True, participants_present=15),
        IN_SESSION,
        Code.ENROLLMENT_NOT_ACTIVE,
        id="enrollment-before-locked-and-full",
    ),
    pytest.param(facts(locked=True, participants_present=15), IN_SESSION, Code.LOCKED, id="locked-before-full"),
]


@pytest.mark.parametrize(("entry_facts", "now", "expected_code"), ORDER)
def test_decide_entry_first_failing_check_wins(entry_facts, now, expected_code):
    # Act
    decision = decide_entry(entry_facts, now)

    # Assert
    assert (decision.allowed, decision.code) == (False, expected_code)


# --- staff bypass, capacity, admission policy ---------------------------------------------------------


@pytest.mark.parametrize(
    ("person", "expected"),
    [pytest.param(THERAPIST, AS_MODERATOR, id="therapist"), pytest.param(ADMIN, AS_OBSERVER, id="admin")],
)
def test_decide_entry_staff_bypass_lock_and_capacity(person, expected):
    # Arrange: locked and over capacity
    entry_facts = facts(locked=True, capacity=8, participants_present=12, **person)

    # Act
    decision = decide_entry(entry_facts, IN_SESSION)

    # Assert
    assert decision == expected


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        pytest.param(13, AS_PARTICIPANT_AUTO, id="one-seat-left"),
        pytest.param(14, refused(Code.FULL), id="exactly-full"),
        pytest.param(20, refused(Code.FULL), id="over-full"),
    ],
)
def test_decide_entry_capacity_counts_others_present(present, expected):
    # Arrange: 14 seats; ``participants_present`` excludes the person asking
    entry_facts = facts(capacity=14, participants_present=present)

    # Act
    decision = decide_entry(entry_facts, IN_SESSION)

    # Assert
    assert decision == expected


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(LOBBY, id="lobby"),
        pytest.param(START, id="start"),
        pytest.param(LATE_LIMIT - SECOND, id="within-late-join"),
        pytest.param(LATE_LIMIT + SECOND, id="after-late-join"),
    ],
)
def test_decide_entry_therapist_admits_policy_always_knocks(now):
    # Arrange
    entry_facts = facts(auto_admit=False)

    # Act
    decision = decide_entry(entry_facts, now)

    # Assert
    assert decision == AS_PARTICIPANT_KNOCK


def test_decide_entry_naive_now_raises():
    # Arrange
    naive = datetime(2026, 3, 2, 23, 5)

    # Act / Assert
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_entry(facts(), naive)


def test_decide_entry_other_zone_now_is_the_same_instant():
    # Arrange: 18:05 in New York is 23:05 UTC, inside the late-join window
    now_in_new_york = datetime(2026, 3, 2, 18, 5, tzinfo=ZoneInfo("America/New_York"))

    # Act
    decision = decide_entry(facts(), now_in_new_york)

    # Assert
    assert decision == AS_PARTICIPANT_AUTO


# --- integration through rooms.services.check_entry -----------------------------------------------------

# Monday 9 March 2026, the day after the US spring-forward: 18:00 in New York is EDT, 22:00 UTC.
DST_MONDAY_START = datetime(2026, 3, 9, 22, 0, tzinfo=UTC)
# The same Monday at 21:00 in New York is already Tuesday 10 March in UTC.
LATE_MONDAY_START = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)


def test_check_entry_dst_monday_lobby_opens_on_local_time(clinic):
    # Arrange: a session at 18:00 local on the Monday after spring-forward
    session = make_session(clinic.group_room, DST_MONDAY_START, track=clinic.track)
    lobby = DST_MONDAY_START - timedelta(minutes=10)

    # Act
    early = check_entry(clinic.participant, session, now=lobby - SECOND)
    on_time = check_entry(clinic.participant, session, now=lobby)
    # 18:05 EDT; the same wall time in EST (23:05 UTC) would already be past the late-join limit
    started = check_entry(clinic.participant, session, now=datetime(2026, 3, 9, 22, 5, tzinfo=UTC))

    # Assert
    assert early == refused(Code.NOT_OPEN, opens_at=datetime(2026, 3, 9, 21, 50, tzinfo=UTC))
    assert on_time == AS_PARTICIPANT_AUTO
    assert started == AS_PARTICIPANT_AUTO


@pytest.mark.parametrize(
    ("start", "end", "status", "expected"),
    [
        pytest.param(date(2026, 3, 9), None, EnrollmentStatus.ACTIVE, AS_PARTICIPANT_AUTO, id="starts-that-day"),
        pytest.param(
            date(2026, 1, 5), date(2026, 3, 9), EnrollmentStatus.ACTIVE, AS_PARTICIPANT_AUTO, id="ends-that-local-day"
        ),
        pytest.param(
            date(2026, 1, 5),
            date(2026, 3, 8),
            EnrollmentStatus.ACTIVE,
            refused(Code.ENROLLMENT_NOT_ACTIVE),
            id="ended-the-day-before",
        ),
        pytest.param(
            date(2026, 3, 10),
            None,
            EnrollmentStatus.ACTIVE,
            refused(Code.ENROLLMENT_NOT_ACTIVE),
            id="starts-on-the-utc-date-only",
        ),
        pytest.param(
            date(2026, 1, 5), None, EnrollmentStatus.ON_HOLD, refused(Code.ENROLLMENT_NOT_ACTIVE), id="on-hold"
        ),
        pytest.param(
            date(2026, 1, 5),
            date(2026, 3, 9),
            EnrollmentStatus.DISCHARGED,
            refused(Code.ENROLLMENT_NOT_ACTIVE),
            id="discharged",
        ),
    ],
)
def test_check_entry_enrollment_dates_are_local_dates(clinic, start, end, status, expected):
    # Arrange: Monday 9 March at 21:00 in New York (Tuesday 01:00 UTC)
    session = make_session(clinic.group_room, LATE_MONDAY_START, track=clinic.track)
    newcomer = make_user(Role.PARTICIPANT, first="Nia", last="Newcomer")
    enroll(newcomer, clinic.track, start=start, end=end, status=status)

    # Act
    decision = check_entry(newcomer, session, now=LATE_MONDAY_START)

    # Assert
    assert decision == expected


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        pytest.param("participant", AS_PARTICIPANT_AUTO, id="enrolled-participant"),
        pytest.param("lead", AS_MODERATOR, id="lead-of-room-and-track"),
        pytest.param("co", AS_MODERATOR, id="co-facilitator-of-track"),
        pytest.param("admin", AS_OBSERVER, id="clinic-admin"),
        pytest.param("outsider_participant", refused(Code.NOT_ON_ROSTER), id="participant-of-another-track"),
        pytest.param("outsider_therapist", refused(Code.NOT_ON_ROSTER), id="therapist-of-no-room"),
    ],
)
def test_check_entry_group_session_personas(clinic, persona, expected):
    # Arrange
    user = getattr(clinic, persona)
    now = clinic.group_session.starts_at

    # Act
    decision = check_entry(user, clinic.group_session, now=now)

    # Assert
    assert decision == expected


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        pytest.param("participant", AS_PARTICIPANT_AUTO, id="listed-participant"),
        pytest.param("lead", AS_MODERATOR, id="room-therapist"),
        pytest.param("co", refused(Code.NOT_ON_ROSTER), id="therapist-of-the-track-not-the-room"),
        pytest.param("outsider_participant", refused(Code.NOT_ON_ROSTER), id="not-listed"),
    ],
)
def test_check_entry_individual_session_uses_explicit_roster(clinic, persona, expected):
    # Arrange
    user = getattr(clinic, persona)
    now = clinic.individual_session.starts_at

    # Act
    decision = check_entry(user, clinic.individual_session, now=now)

    # Assert
    assert decision == expected


def test_check_entry_removed_participant_is_refused(clinic):
    # Arrange
    SessionRemoval.objects.create(session=clinic.group_session, user=clinic.participant, removed_by=clinic.lead)

    # Act
    decision = check_entry(clinic.participant, clinic.group_session, now=clinic.group_session.starts_at)

    # Assert
    assert decision == refused(Code.REMOVED)


def test_check_entry_inactive_account_is_refused(clinic):
    # Arrange
    clinic.participant.is_active = False
    clinic.participant.save(update_fields=["is_active"])

    # Act
    decision = check_entry(clinic.participant, clinic.group_session, now=clinic.group_session.starts_at)

    # Assert
    assert decision == refused(Code.AUTH_INACTIVE)


def test_check_entry_room_capacity_comes_from_the_room(clinic):
    # Arrange: the individual room seats one participant
    session = clinic.individual_session

    # Act
    decision = check_entry(clinic.participant, session, now=session.starts_at, participants_present=1)

    # Assert
    assert decision == refused(Code.FULL)


def test_check_entry_session_policy_therapist_admits_knocks(clinic):
    # Arrange
    session = make_session(
        clinic.group_room, DST_MONDAY_START, track=clinic.track, admission_policy=AdmissionPolicy.THERAPIST_ADMITS
    )

    # Act
    decision = check_entry(clinic.participant, session, now=DST_MONDAY_START)

    # Assert
    assert decision == AS_PARTICIPANT_KNOCK
