"""The realtime session domain (rooms.live): seats, waiting room, moderation, chat, presence.

Every call takes an explicit ``now``: the group session of ``make_live_clinic``
starts at 23:00 UTC and NOW is 23:01, one minute in (auto-admission applies
until 23:10).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from psycopg import pq

from rooms import live
from rooms.models import (
    AdmissionPolicy,
    AuditAction,
    AuditEvent,
    ChatMessage,
    Seat,
    SeatState,
    Session,
    SessionRemoval,
    SessionStatus,
)
from tests.factories import LiveClinic, make_live_clinic

START = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
NOW = START + timedelta(minutes=1)


@pytest.fixture
def clinic(db) -> LiveClinic:
    return make_live_clinic(START, starts_in=timedelta(0))


def join(clinic: LiveClinic, user, now=NOW, session=None) -> tuple[live.Actor, live.JoinResult]:
    session = session or clinic.session
    result = live.join(session.pk, user, now=now)
    return live.Actor(session.pk, user.pk, result.epoch), result


def seat_of(clinic: LiveClinic, user) -> Seat:
    return Seat.objects.get(session=clinic.session, user=user)


def audit_rows(clinic: LiveClinic) -> list[tuple[str, object, object, str]]:
    rows = AuditEvent.objects.filter(session=clinic.session).order_by("at", "action")
    return [(e.action, e.actor_id, e.subject_id, e.code) for e in rows]


def knock_policy(clinic: LiveClinic) -> None:
    clinic.session.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
    clinic.session.save()


# --- join ------------------------------------------------------------------------------------------


def test_join_therapist_enters_room_as_moderator(clinic):
    _, result = join(clinic, clinic.lead)

    assert (result.capacity, result.state, result.epoch, result.replaced) == ("moderator", "admitted", 1, False)
    assert result.room == live.RoomView(
        roster=(result.member,),
        spotlight=None,
        locked=False,
        chat_seq=0,
        hands=(),
        kind="group",
        media_preference="auto",
        ends_at=clinic.session.ends_at,
    )
    assert result.waiting_list == ()
    assert result.member.name == "Lee L."
    seat = seat_of(clinic, clinic.lead)
    # Only a hash of the resume token is stored; the member id is not the user id.
    assert seat.resume_token_hash == live._hash(result.resume_token) != result.resume_token
    assert seat.member_id == result.member.member_id != str(clinic.lead.pk)


def test_join_participant_admitted_automatically_after_start(clinic):
    _, result = join(clinic, clinic.pat)

    assert (result.capacity, result.state, result.waiting) == ("participant", "admitted", None)
    assert result.changes.joined == [result.member]
    assert audit_rows(clinic) == [(AuditAction.JOINED, clinic.pat.pk, None, "auto")]


def test_join_participant_waits_in_lobby_until_start(clinic):
    _, result = join(clinic, clinic.pat, now=START - timedelta(minutes=5))

    assert result.state == "waiting"
    assert result.room is None
    assert result.waiting == live.WaitingInfo(opens_at=START, message="")
    assert [w.member_id for w in result.changes.waiting_list] == [result.member.member_id]


def test_join_participant_knocks_after_late_join_limit(clinic):
    _, result = join(clinic, clinic.pat, now=START + timedelta(minutes=11))

    assert result.state == "waiting"
    assert result.waiting == live.WaitingInfo(opens_at=None, message="")
    assert audit_rows(clinic) == [(AuditAction.JOINED, clinic.pat.pk, None, "knock")]


def test_join_participant_knocks_when_therapist_admits_everyone(clinic):
    knock_policy(clinic)

    _, result = join(clinic, clinic.pat)

    assert (result.state, result.waiting.opens_at) == ("waiting", None)


def test_join_clinic_admin_observes(clinic):
    _, result = join(clinic, clinic.admin)

    assert (result.capacity, result.state, result.waiting_list) == ("observer", "admitted", None)


@pytest.mark.parametrize(
    ("who", "now", "code"),
    [
        ("outsider", NOW, "roster.not_member"),
        ("outsider_therapist", NOW, "roster.not_member"),
        ("pat", START - timedelta(minutes=11), "session.not_open"),
        ("pat", START + timedelta(hours=3), "session.ended"),
    ],
)
def test_join_refused_with_access_code_and_audited(clinic, who, now, code):
    user = getattr(clinic, who)

    with pytest.raises(live.LiveError) as refused:
        join(clinic, user, now=now)

    assert refused.value.code == code
    assert audit_rows(clinic) == [(AuditAction.HANDSHAKE_REFUSED, user.pk, None, code)]
    assert not Seat.objects.filter(user=user).exists()


def test_join_unknown_session_refused(clinic):
    with pytest.raises(live.LiveError) as refused:
        live.join(clinic.pat.pk, clinic.pat, now=NOW)  # a UUID that is no session

    assert refused.value.code == "session.not_found"
    assert AuditEvent.objects.filter(action=AuditAction.HANDSHAKE_REFUSED, session=None, code="session.not_found")


def test_join_locked_room_refuses_new_participant_but_not_therapist(clinic):
    lead, _ = join(clinic, clinic.lead)
    live.lock(lead, now=NOW)

    with pytest.raises(live.LiveError) as refused:
        join(clinic, clinic.pat)
    _, co = join(clinic, clinic.co)

    assert refused.value.code == "room.locked"
    assert co.state == "admitted"


def test_join_reconnect_keeps_place_in_locked_room(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, first = join(clinic, clinic.pat)
    live.disconnect(pat, now=NOW)
    live.lock(lead, now=NOW)

    _, again = join(clinic, clinic.pat, now=NOW + timedelta(seconds=5))

    assert (again.state, again.epoch, again.replaced) == ("admitted", 2, False)
    assert again.member.member_id == first.member.member_id
    assert again.changes.updated == [again.member]  # peers: connected again, not joined
    assert again.changes.joined == []


def test_join_second_tab_replaces_older_connection(clinic):
    _, first = join(clinic, clinic.pat)

    _, second = join(clinic, clinic.pat)

    assert (second.replaced, second.epoch) == (True, 2)
    assert [m.member_id for m in second.room.roster] == [first.member.member_id]
    assert Seat.objects.filter(user=clinic.pat).count() == 1


def test_join_room_full_counts_participants_present(clinic):
    clinic.session.room.capacity = 1
    clinic.session.room.save()
    join(clinic, clinic.pat)

    with pytest.raises(live.LiveError) as refused:
        join(clinic, clinic.sam)

    assert refused.value.code == "room.full"


# --- disconnect, expiry, tick ------------------------------------------------------------------------


def test_disconnect_marks_seat_reconnecting(clinic):
    pat, _ = join(clinic, clinic.pat)

    changes = live.disconnect(pat, now=NOW)

    assert [(m.member_id, m.connected) for m in changes.updated] == [(seat_of(clinic, clinic.pat).member_id, False)]


def test_disconnect_of_stale_connection_changes_nothing(clinic):
    old, _ = join(clinic, clinic.pat)
    join(clinic, clinic.pat)  # a second tab took over

    changes = live.disconnect(old, now=NOW)

    assert changes == live.Changes()
    assert seat_of(clinic, clinic.pat).connected is True


def test_expire_seats_after_grace_period(clinic, settings):
    settings.SEAT_GRACE_SECONDS = 30
    lead, _ = join(clinic, clinic.lead)
    pat, joined = join(clinic, clinic.pat)
    live.raise_hand(pat, now=NOW)
    live.spotlight(lead, joined.member.member_id, now=NOW)
    live.disconnect(pat, now=NOW)

    early = live.expire_seats(clinic.session.pk, now=NOW + timedelta(seconds=29))
    late = live.expire_seats(clinic.session.pk, now=NOW + timedelta(seconds=30))
    again = live.expire_seats(clinic.session.pk, now=NOW + timedelta(seconds=31))

    assert early == live.Changes()
    assert late == live.Changes(left=[joined.member.member_id], hands=(), spotlight_changed=True, spotlight=None)
    assert again == live.Changes()
    assert seat_of(clinic, clinic.pat).state == SeatState.LEFT


def test_tick_closes_logged_out_and_disabled(clinic):
    client = Client()
    client.force_login(clinic.pat)
    key = client.session.session_key
    pat, _ = join(clinic, clinic.pat)

    assert live.tick(pat, key, now=NOW).close is None
    client.logout()
    assert live.tick(pat, key, now=NOW).close == "auth.logged_out"
    client.force_login(clinic.pat)
    clinic.pat.is_active = False
    clinic.pat.save()
    assert live.tick(pat, client.session.session_key, now=NOW).close == "auth.inactive"


def test_tick_closes_when_schedule_ends_session(clinic):
    client = Client()
    client.force_login(clinic.pat)
    pat, _ = join(clinic, clinic.pat)

    result = live.tick(pat, client.session.session_key, now=clinic.session.ends_at)
    again = live.tick(pat, client.session.session_key, now=clinic.session.ends_at)

    clinic.session.refresh_from_db()
    assert result.close == again.close == "session.ended"
    assert clinic.session.status == SessionStatus.ENDED
    assert [row for row in audit_rows(clinic) if row[0] == AuditAction.ENDED] == [
        (AuditAction.ENDED, None, None, "schedule")
    ]


def test_tick_admits_waiting_participant_at_start(clinic):
    client = Client()
    client.force_login(clinic.pat)
    pat, joined = join(clinic, clinic.pat, now=START - timedelta(minutes=5))

    before = live.tick(pat, client.session.session_key, now=START - timedelta(seconds=1))
    at_start = live.tick(pat, client.session.session_key, now=START)

    assert (before.close, before.admitted) == (None, None)
    assert [m.member_id for m in at_start.admitted.roster] == [joined.member.member_id]
    assert at_start.changes.waiting_list == ()
    assert seat_of(clinic, clinic.pat).state == SeatState.ADMITTED


# --- the process-wide periodic check (survey) ------------------------------------------------------


def logged_in(user) -> str:
    client = Client()
    client.force_login(user)
    return client.session.session_key


def probe(actor: live.Actor, key: str, *, waiting=False, mark=0, due=None) -> live.Probe:
    return live.Probe(actor, key, waiting, mark, due)


def test_survey_leaves_quiet_connections_alone_and_names_the_ones_to_check(clinic):
    lead_key, pat_key = logged_in(clinic.lead), logged_in(clinic.pat)
    lead, _ = join(clinic, clinic.lead)
    pat_old_tab, _ = join(clinic, clinic.pat)
    pat, _ = join(clinic, clinic.pat)
    sam, _ = join(clinic, clinic.sam)
    Client().logout()  # someone else's logout changes nothing for these logins

    result = live.survey(
        [
            probe(lead, lead_key),
            probe(pat, pat_key),
            probe(pat_old_tab, pat_key),  # its seat belongs to the newer tab now
            probe(sam, "not-a-session-key"),  # logged out
        ],
        now=NOW,
    )

    assert result.due == [False, False, True, True]
    assert result.chat_seq == {clinic.session.pk: 0}


def test_survey_names_waiting_and_ended_and_disabled(clinic):
    knock_policy(clinic)
    pat_key, lead_key, sam_key = logged_in(clinic.pat), logged_in(clinic.lead), logged_in(clinic.sam)
    pat, _ = join(clinic, clinic.pat)
    lead, _ = join(clinic, clinic.lead)
    sam, _ = join(clinic, clinic.sam)
    clinic.sam.is_active = False
    clinic.sam.save()

    now_due = live.survey([probe(pat, pat_key, waiting=True), probe(lead, lead_key), probe(sam, sam_key)], now=NOW)
    at_end = live.survey([probe(lead, lead_key)], now=clinic.session.ends_at)

    assert now_due.due == [True, False, True]
    assert at_end.due == [True]


def test_survey_notices_a_password_change_and_a_logout_after_earlier_rounds(clinic):
    client = Client()
    client.force_login(clinic.pat)
    key = client.session.session_key
    pat, _ = join(clinic, clinic.pat)

    before = live.survey([probe(pat, key)], now=NOW)  # decodes and remembers the login
    clinic.pat.set_password("a-new-password-123")
    clinic.pat.save()
    after_password = live.survey([probe(pat, key)], now=NOW)
    client.force_login(clinic.pat)
    key = client.session.session_key
    relogged = live.survey([probe(pat, key)], now=NOW)
    client.logout()
    after_logout = live.survey([probe(pat, key)], now=NOW)

    assert [before.due, after_password.due, relogged.due, after_logout.due] == [[False], [True], [False], [True]]


def test_survey_names_a_connection_only_once_a_message_is_overdue(clinic):
    pat_key = logged_in(clinic.pat)
    lead, _ = join(clinic, clinic.lead)
    pat, _ = join(clinic, clinic.pat)
    live.post_chat(lead, "c-1", "one", now=NOW)
    live.post_chat(lead, "c-2", "two", now=NOW)

    first = live.survey([probe(pat, pat_key, mark=1)], now=NOW)  # 2 may still be on its way
    second = live.survey([probe(pat, pat_key, mark=1, due=first.chat_seq[clinic.session.pk])], now=NOW)
    caught_up = live.survey([probe(pat, pat_key, mark=2, due=2)], now=NOW)

    assert (first.due, first.chat_seq) == ([False], {clinic.session.pk: 2})
    assert second.due == [True]
    assert caught_up.due == [False]


def test_survey_names_one_connection_per_session_for_stale_seats(clinic):
    lead_key, sam_key = logged_in(clinic.lead), logged_in(clinic.sam)
    lead, _ = join(clinic, clinic.lead)
    sam, _ = join(clinic, clinic.sam)
    pat, _ = join(clinic, clinic.pat)
    live.disconnect(pat, now=NOW)
    grace = timedelta(seconds=30)

    within = live.survey([probe(lead, lead_key), probe(sam, sam_key)], now=NOW + grace - timedelta(seconds=1))
    after = live.survey([probe(lead, lead_key), probe(sam, sam_key)], now=NOW + grace)

    assert within.due == [False, False]
    assert after.due == [True, False]


def test_survey_query_count_does_not_grow_with_connections(clinic, django_assert_max_num_queries, round_trips):
    people = [clinic.lead, clinic.co, clinic.pat, clinic.sam, clinic.kim]
    probes = [probe(join(clinic, person)[0], logged_in(person)) for person in people]
    round_trips.clear()

    with django_assert_max_num_queries(4):
        few = live.survey(probes[:1], now=NOW)
    with django_assert_max_num_queries(4):
        many = live.survey(probes, now=NOW)

    assert few.due == [False] and many.due == [False] * 5
    if connection.vendor == "postgresql":
        # Sessions, seats, logins and users: four prepared statements in one round trip, nothing
        # through the ORM, for one connection as for five.
        assert [len(trip) for trip in round_trips] == [4, 4]


def test_a_join_reads_the_sessions_seats_once_however_many_are_in(clinic, round_trips):
    # The lock, the seats (this person's, those present, the room and the waiting list all come from
    # one list), the enrollment and removal facts, the seat write and the audit row: six statements
    # in a room of three as in a room of one (nine before; a join storm's cost is mostly these). On
    # PostgreSQL the reads are three prepared statements sent together (the seats come with the
    # entry facts) and the two writes two more, sent together after them (rooms.join_sql).
    join(clinic, clinic.lead)
    join(clinic, clinic.sam)
    join(clinic, clinic.kim)
    round_trips.clear()

    with CaptureQueriesContext(connection) as joining:
        pat, result = join(clinic, clinic.pat)

    statements = [q["sql"] for q in joining.captured_queries if "SAVEPOINT" not in q["sql"]]
    if connection.vendor == "postgresql":
        reads, writes = round_trips
        assert [sql.split()[0] for sql in reads] == ["SELECT"] * 3
        assert sum(sql.startswith("SELECT f.*, seat.") for sql in reads) == 1
        # The seat and the audit row: written together, in a second round trip, nothing through the ORM.
        assert statements == []
        assert [sql.split()[0] for sql in writes] == ["INSERT", "INSERT"]
    else:
        assert len(statements) == 6, statements
        assert sum('FROM "rooms_seat"' in sql for sql in statements) == 1
    # The room built from that list is the room a fresh read shows, in the same order.
    assert result.room == live.room_snapshot(pat, now=NOW)
    assert {m.name for m in result.room.roster} == {
        person.display_name for person in (clinic.lead, clinic.sam, clinic.kim, clinic.pat)
    }


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_the_joins_statements_on_postgresql_read_what_the_orm_reads(clinic, require_postgres):
    from rooms import join_sql, services

    join(clinic, clinic.lead)
    join(clinic, clinic.pat)
    SessionRemoval.objects.create(session=clinic.session, user=clinic.kim, removed_by=clinic.lead)
    people = [clinic.lead, clinic.co, clinic.admin, clinic.pat, clinic.sam, clinic.kim, clinic.outsider]
    people.append(clinic.outsider_therapist)
    expected_session = Session.objects.select_related("room__program").get(pk=clinic.session.pk)
    expected_seats = sorted(Seat.objects.select_related("user").filter(session=clinic.session), key=lambda s: s.pk)
    for person in people:
        with transaction.atomic():
            found = join_sql.read(clinic.session.pk, person)
        assert _fields(found.session) == _fields(expected_session)
        assert _fields(found.session.room) == _fields(expected_session.room)
        assert _fields(found.session.room.program) == _fields(expected_session.room.program)
        seats = sorted(found.seats, key=lambda s: s.pk)
        assert [_fields(s) for s in seats] == [_fields(s) for s in expected_seats]
        assert [_fields(s.user) for s in seats] == [_fields(s.user) for s in expected_seats]
        facts = found.entry_facts(participants_present=2)
        assert facts == services.entry_facts(person, expected_session, participants_present=2), person

    # The facts differ where they should (so the comparison above compares something).
    def facts_of(person):
        with transaction.atomic():
            found = join_sql.read(clinic.session.pk, person)
        return found.entry_facts(participants_present=0)

    assert facts_of(clinic.lead).is_session_therapist and facts_of(clinic.co).is_session_therapist
    assert not facts_of(clinic.outsider_therapist).is_session_therapist
    assert facts_of(clinic.pat).enrollment_active and not facts_of(clinic.pat).removed
    assert facts_of(clinic.kim).removed
    assert not facts_of(clinic.outsider).on_roster
    with transaction.atomic():
        assert join_sql.read(uuid.uuid4(), clinic.pat) is None
        assert join_sql.read("not-a-session-id", clinic.pat) is None


def test_the_joins_statements_read_the_facts_of_a_session_nobody_has_joined_yet(clinic, require_postgres):
    # The seats come with the person's facts (one LEFT JOIN): no seats must still give the facts.
    from rooms import join_sql

    with transaction.atomic():
        lead = join_sql.read(clinic.session.pk, clinic.lead)
        kim = join_sql.read(clinic.session.pk, clinic.kim)

    assert lead.seats == [] and kim.seats == []
    assert lead.entry_facts(participants_present=0).is_session_therapist
    assert kim.entry_facts(participants_present=0).enrollment_active


@pytest.fixture
def committed_clinic(transactional_db) -> LiveClinic:
    return make_live_clinic(now=NOW)


def test_a_join_outside_a_transaction_opens_and_commits_its_own_in_its_round_trips(
    committed_clinic, require_postgres, round_trips
):
    # No atomic block around it (the consumer's case): BEGIN goes with the reads, COMMIT with the
    # writes: two round trips and no third for the commit.
    clinic = committed_clinic
    join(clinic, clinic.lead)
    round_trips.clear()

    with CaptureQueriesContext(connection) as orm:
        join(clinic, clinic.pat)

    sent = [[sql.split()[0] for sql in trip] for trip in round_trips]
    assert sent == [["BEGIN", "SELECT", "SELECT", "SELECT"], ["INSERT", "INSERT", "COMMIT"]]
    assert orm.captured_queries == []  # nothing through Django (no atomic block, no separate COMMIT)
    assert connection.connection.info.transaction_status == pq.TransactionStatus.IDLE
    assert seat_of(clinic, clinic.pat).state == SeatState.ADMITTED


def test_a_refused_join_outside_a_transaction_leaves_nothing_open_and_is_audited(committed_clinic, require_postgres):
    clinic = committed_clinic
    SessionRemoval.objects.create(session=clinic.session, user=clinic.kim, removed_by=clinic.lead)

    with pytest.raises(live.LiveError):
        join(clinic, clinic.kim)
    with pytest.raises(live.LiveError):
        live.join(uuid.uuid4(), clinic.pat, now=NOW)

    assert connection.connection.info.transaction_status == pq.TransactionStatus.IDLE
    assert not Seat.objects.filter(session=clinic.session, user=clinic.kim).exists()
    refusals = [row for row in audit_rows(clinic) if row[0] == AuditAction.HANDSHAKE_REFUSED]
    assert len(refusals) == 1  # the one for this session (the unknown session's has no session)
    join(clinic, clinic.pat)  # the connection is usable
    assert seat_of(clinic, clinic.pat).state == SeatState.ADMITTED


def _names(room: live.RoomView) -> list[str]:
    return sorted(m.name for m in room.roster)  # (all admitted at the same NOW: the order is the tie's)


def test_joins_together_are_decided_in_order_as_if_one_after_the_other(committed_clinic, round_trips):
    clinic = committed_clinic
    SessionRemoval.objects.create(session=clinic.session, user=clinic.kim, removed_by=clinic.lead)
    here = clinic.session.pk
    round_trips.clear()

    lead, pat, kim, nowhere, pat_again, sam = live.join_many(
        [(here, clinic.lead), (here, clinic.pat), (here, clinic.kim), (uuid.uuid4(), clinic.sam)]
        + [(here, clinic.pat), (here, clinic.sam)],
        now=NOW,
    )

    # Each saw the ones decided before it, and only those.
    assert _names(lead.room) == ["Lee L."]
    assert _names(pat.room) == ["Lee L.", "Pat P."]
    assert _names(sam.room) == ["Lee L.", "Pat P.", "Sam S."]
    assert (kim.code, nowhere.code) == ("session.removed", "session.not_found")
    # The second tab of Pat took the seat the first one took in the same batch.
    assert not pat.replaced and pat_again.replaced
    assert (pat_again.member.member_id, pat_again.epoch) == (pat.member.member_id, pat.epoch + 1)
    assert seat_of(clinic, clinic.pat).epoch == pat_again.epoch
    assert Seat.objects.filter(session=clinic.session).count() == 3
    joined = AuditAction.JOINED
    assert audit_rows(clinic) == [
        (joined, clinic.lead.pk, None, "direct"),
        (joined, clinic.pat.pk, None, "auto"),
        (AuditAction.RECONNECTED, clinic.pat.pk, None, "replaced"),
        (joined, clinic.sam.pk, None, "auto"),
        (AuditAction.HANDSHAKE_REFUSED, clinic.kim.pk, None, "session.removed"),
    ]
    if connection.vendor == "postgresql":
        assert connection.connection.info.transaction_status == pq.TransactionStatus.IDLE
        # Two round trips for all six: the two sessions' locks (one does not exist) and every join's
        # reads, then the writes.
        reads, writes = [[sql.split()[0] for sql in trip] for trip in round_trips]
        assert reads == ["BEGIN"] + ["SELECT"] * (2 + 2 * 6)
        assert writes == ["INSERT"] * 4 + ["UPDATE", "INSERT", "INSERT", "INSERT", "COMMIT"]


def test_a_batch_the_database_fails_is_joined_one_by_one(committed_clinic, require_postgres, monkeypatch):
    from django.db import IntegrityError

    from rooms import join_sql

    clinic = committed_clinic
    original = join_sql.write_many
    failed = []

    def refuse_sams_row(writes, **kwargs):
        # As PostgreSQL refusing one join's row: every join of the call fails with it.
        if any(w.seat.user_id == clinic.sam.pk for w in writes):
            failed.append(len(writes))
            raise IntegrityError("new row violates check constraint")
        return original(writes, **kwargs)

    monkeypatch.setattr(join_sql, "write_many", refuse_sams_row)
    here = clinic.session.pk

    lead, sam, pat = live.join_many([(here, clinic.lead), (here, clinic.sam), (here, clinic.pat)], now=NOW)

    assert failed == [3, 1]  # the batch, then Sam's join alone
    assert isinstance(sam, IntegrityError)  # only Sam's join answers the error
    assert _names(pat.room) == ["Lee L.", "Pat P."]
    assert {s.user_id for s in Seat.objects.filter(session=clinic.session)} == {clinic.lead.pk, clinic.pat.pk}
    assert connection.connection.info.transaction_status == pq.TransactionStatus.IDLE
    with pytest.raises(IntegrityError):  # and one join alone raises it
        live.join(here, clinic.sam, now=NOW)


# --- waiting room and admission --------------------------------------------------------------------


def test_admit_one_and_all_in_waiting_order(clinic):
    knock_policy(clinic)
    lead, _ = join(clinic, clinic.lead)
    _, pat = join(clinic, clinic.pat, now=NOW)
    _, sam = join(clinic, clinic.sam, now=NOW + timedelta(seconds=1))
    _, kim = join(clinic, clinic.kim, now=NOW + timedelta(seconds=2))
    assert [w.member_id for w in live.waiting_list(lead, now=NOW)] == [m.member.member_id for m in (pat, sam, kim)]

    one = live.admit(lead, sam.member.member_id, now=NOW)
    rest = live.admit_all(lead, now=NOW)

    assert one.admitted == [sam.member.member_id]
    assert [w.member_id for w in one.waiting_list] == [pat.member.member_id, kim.member.member_id]
    assert rest.admitted == [pat.member.member_id, kim.member.member_id]
    assert rest.waiting_list == ()
    assert seat_of(clinic, clinic.sam).admitted_by == clinic.lead


def test_deny_with_message_bans_from_session(clinic):
    knock_policy(clinic)
    lead, _ = join(clinic, clinic.lead)
    _, pat = join(clinic, clinic.pat)

    changes = live.deny(lead, pat.member.member_id, "  Please call the clinic.  ", now=NOW)

    assert changes.denied == [(pat.member.member_id, "Please call the clinic.")]
    assert SessionRemoval.objects.get(session=clinic.session, user=clinic.pat).reason == "denied"
    with pytest.raises(live.LiveError) as refused:
        join(clinic, clinic.pat)
    assert refused.value.code == "session.removed"


def test_admit_target_not_waiting_refused(clinic):
    lead, _ = join(clinic, clinic.lead)
    _, pat = join(clinic, clinic.pat)  # already in the room

    with pytest.raises(live.LiveError) as refused:
        live.admit(lead, pat.member.member_id, now=NOW)

    assert refused.value.code == "target.not_waiting"


def test_waiting_message_to_everyone_waiting(clinic):
    knock_policy(clinic)
    lead, _ = join(clinic, clinic.lead)
    join(clinic, clinic.pat)

    changes = live.waiting_message(lead, "Starting in five minutes", now=NOW)
    _, later = join(clinic, clinic.sam)  # starts waiting after the message was sent

    assert changes.waiting_room == live.WaitingInfo(opens_at=None, message="Starting in five minutes")
    assert later.waiting == live.WaitingInfo(opens_at=None, message="Starting in five minutes")
    assert live.waiting_state(live.Actor(clinic.session.pk, clinic.pat.pk, 1), now=NOW).message == (
        "Starting in five minutes"
    )


def test_waiting_message_to_one_person_outranks_the_one_to_everyone(clinic):
    knock_policy(clinic)
    lead, _ = join(clinic, clinic.lead)
    pat, pat_join = join(clinic, clinic.pat)
    sam, _ = join(clinic, clinic.sam)
    live.waiting_message(lead, "Starting in five minutes", now=NOW)

    live.waiting_message(lead, "Pat, your therapist will call you first", pat_join.member.member_id, now=NOW)

    assert live.waiting_state(pat, now=NOW).message == "Pat, your therapist will call you first"
    assert live.waiting_state(sam, now=NOW).message == "Starting in five minutes"


# --- moderation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        (live.mute, {"member_id": "x", "hard": True}),
        (live.remove, {"member_id": "x"}),
        (live.end, {}),
        (live.lock, {}),
        (live.admit_all, {}),
        (live.spotlight, {"member_id": None}),
    ],
)
def test_moderator_command_from_participant_refused_and_audited(clinic, command, arguments):
    join(clinic, clinic.lead)
    pat, _ = join(clinic, clinic.pat)
    sam, _ = join(clinic, clinic.sam)
    arguments = {k: (seat_of(clinic, clinic.sam).member_id if v == "x" else v) for k, v in arguments.items()}
    before = list(Seat.objects.order_by("pk").values())

    with pytest.raises(live.LiveError) as refused:
        command(pat, **arguments, now=NOW)

    assert refused.value.code == "perm.denied"
    assert list(Seat.objects.order_by("pk").values()) == before
    clinic.session.refresh_from_db()
    assert (clinic.session.status, clinic.session.locked) == (SessionStatus.SCHEDULED, False)
    assert audit_rows(clinic)[-1] == (AuditAction.COMMAND_REFUSED, clinic.pat.pk, None, "perm.denied")


def test_moderator_of_another_session_cannot_act_here(clinic):
    join(clinic, clinic.pat)
    other, _ = join(clinic, clinic.outsider_therapist, session=clinic.other_session)
    pat_member = seat_of(clinic, clinic.pat).member_id
    # The other session's therapist, acting through their own session, names a member of this one.
    with pytest.raises(live.LiveError) as refused:
        live.mute(other, pat_member, hard=True, now=NOW)

    assert refused.value.code == "target.not_found"
    assert seat_of(clinic, clinic.pat).hard_muted is False
    assert AuditEvent.objects.filter(
        action=AuditAction.COMMAND_REFUSED, session=clinic.other_session, actor=clinic.outsider_therapist
    ).exists()


def test_hard_mute_refuses_unmute_until_released(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, joined = join(clinic, clinic.pat)
    live.set_media(pat, True, True, now=NOW)

    muted = live.mute(lead, joined.member.member_id, hard=True, now=NOW)
    with pytest.raises(live.LiveError) as refused:
        live.set_media(pat, True, True, now=NOW)
    live.release_mute(lead, joined.member.member_id, now=NOW)
    unmuted = live.set_media(pat, True, True, now=NOW)

    assert muted.notices == [live.Notice(joined.member.member_id, "muted", True)]
    assert (muted.updated[0].mic, muted.updated[0].hard_muted) == (False, True)
    assert refused.value.code == "mute.hard"
    assert (unmuted.updated[0].mic, unmuted.updated[0].hard_muted) == (True, False)


def test_soft_mute_participant_may_unmute(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, joined = join(clinic, clinic.pat)

    live.mute(lead, joined.member.member_id, now=NOW)
    changes = live.set_media(pat, True, False, now=NOW)

    assert changes.updated[0].mic is True


def test_camera_off_hard_blocks_camera(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, joined = join(clinic, clinic.pat)

    live.camera_off(lead, joined.member.member_id, hard=True, now=NOW)

    with pytest.raises(live.LiveError) as refused:
        live.set_media(pat, False, True, now=NOW)
    assert refused.value.code == "camera.blocked"


def test_remove_bans_and_clears_spotlight(clinic):
    lead, _ = join(clinic, clinic.lead)
    _, pat = join(clinic, clinic.pat)
    live.spotlight(lead, pat.member.member_id, now=NOW)

    changes = live.remove(lead, pat.member.member_id, now=NOW)

    assert changes == live.Changes(
        left=[pat.member.member_id], removed=[pat.member.member_id], spotlight_changed=True, spotlight=None
    )
    assert SessionRemoval.objects.get(session=clinic.session, user=clinic.pat).removed_by == clinic.lead
    with pytest.raises(live.LiveError) as refused:
        join(clinic, clinic.pat)
    assert refused.value.code == "session.removed"


def test_remove_therapist_refused(clinic):
    lead, _ = join(clinic, clinic.lead)
    _, co = join(clinic, clinic.co)

    with pytest.raises(live.LiveError) as refused:
        live.remove(lead, co.member.member_id, now=NOW)

    assert refused.value.code == "perm.denied"


def test_end_closes_session_for_everyone(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, _ = join(clinic, clinic.pat)

    changes = live.end(lead, now=NOW)

    clinic.session.refresh_from_db()
    assert changes == live.Changes(ended=True)
    assert clinic.session.status == SessionStatus.ENDED
    assert set(Seat.objects.values_list("state", flat=True)) == {SeatState.LEFT}
    with pytest.raises(live.LiveError) as refused:
        live.post_chat(pat, "c-1", "still here?", now=NOW)
    assert refused.value.code == "session.ended"


def test_hand_queue_in_raising_order_and_lower_all(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, pat_join = join(clinic, clinic.pat)
    sam, sam_join = join(clinic, clinic.sam)

    live.raise_hand(sam, now=NOW)
    raised = live.raise_hand(pat, now=NOW + timedelta(seconds=1))
    lowered = live.lower_all_hands(lead, now=NOW)

    assert raised.hands == (sam_join.member.member_id, pat_join.member.member_id)
    assert lowered.hands == ()
    assert [m.hand_raised_at for m in lowered.updated] == [None, None]


def test_commands_from_replaced_connection_refused(clinic):
    old, _ = join(clinic, clinic.pat)
    join(clinic, clinic.pat)

    with pytest.raises(live.LiveError) as refused:
        live.raise_hand(old, now=NOW)

    assert refused.value.code == "conn.replaced"


# --- chat ------------------------------------------------------------------------------------------


def test_post_chat_numbers_messages_and_resend_is_idempotent(clinic):
    pat, joined = join(clinic, clinic.pat)
    sam, _ = join(clinic, clinic.sam)

    first = live.post_chat(pat, "c-1", "  hello  ", now=NOW)
    second = live.post_chat(sam, "c-1", "hi", now=NOW)
    resend = live.post_chat(pat, "c-1", "hello (resent)", now=NOW + timedelta(seconds=3))

    assert (first.created, first.message.seq, first.message.text) == (True, 1, "hello")
    assert (second.created, second.message.seq) == (True, 2)
    assert resend == live.ChatPosted(message=first.message, created=False)
    assert ChatMessage.objects.count() == 2
    clinic.session.refresh_from_db()
    assert clinic.session.chat_seq == 2


@pytest.fixture
def round_trips(monkeypatch):
    """What went to PostgreSQL below Django's cursors (``rooms.pg.run``): one list per round trip, of
    each statement's first 40 characters, BEGIN and COMMIT included."""
    from rooms import pg

    sent: list[list[str]] = []
    original = pg.run

    def spy(calls, *, begin=False, commit=False):
        trip = [" ".join(statement.sql.split())[:40] for statement, _ in calls]
        sent.append(["BEGIN"] * begin + trip + ["COMMIT"] * commit)
        return original(calls, begin=begin, commit=commit)

    monkeypatch.setattr(pg, "run", spy)
    return sent


def test_post_chat_on_postgresql_is_one_statement_and_keeps_every_check(clinic, require_postgres, round_trips):
    pat, joined = join(clinic, clinic.pat)
    round_trips.clear()  # the join's own reads

    with CaptureQueriesContext(connection) as queries:
        room = live.post_chat(pat, "c-1", "hello", now=NOW)
        private = live.post_chat(pat, "c-2", "only for my therapist", to_therapists=True, now=NOW)

    # Per message: one call of rooms_store_chats (the lock and the checked insert); nothing through
    # the ORM (the savepoints are the test's own transaction).
    assert [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]] == []
    assert round_trips == [["SELECT batch_index, stored_seq, sender_m"]] * 2
    with connection.cursor() as cursor:  # planned once per connection, not per message
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%rooms_store_chats(%%'")
        assert cursor.fetchone() == (1,)
    me = joined.member.member_id
    assert room.message == live.ChatView(1, me, "hello", None, NOW, False)
    assert private.message == live.ChatView(2, me, "only for my therapist", me, NOW, False)
    stored = ChatMessage.objects.order_by("seq").values_list(
        "seq", "sender__member_id", "thread_participant__member_id"
    )
    assert list(stored) == [(1, me, None), (2, me, me)]


def test_post_chats_stores_a_batch_in_order_and_answers_each_refusal_and_resend(clinic, round_trips):
    lead, lead_join = join(clinic, clinic.lead)
    old_tab, _ = join(clinic, clinic.pat)
    pat, pat_join = join(clinic, clinic.pat)
    sam, _ = join(clinic, clinic.sam)
    earlier = live.post_chat(sam, "s-0", "earlier", now=NOW)
    round_trips.clear()

    results = live.post_chats(
        [
            live.ChatRequest(pat, "p-1", "first"),
            live.ChatRequest(old_tab, "o-1", "from the replaced tab"),
            live.ChatRequest(sam, "s-0", "earlier (resent)"),
            live.ChatRequest(pat, "p-2", "  to my therapist  ", to_therapists=True),
            live.ChatRequest(lead, "l-1", "a private reply", thread=pat_join.member.member_id),
            live.ChatRequest(sam, "s-1", "   "),
            live.ChatRequest(lead, "l-2", "last"),
        ],
        now=NOW,
    )

    pat_id, lead_id = pat_join.member.member_id, lead_join.member.member_id
    created = {
        i: (r.message.author, r.message.text, r.message.thread)
        for i, r in enumerate(results)
        if isinstance(r, live.ChatPosted) and r.created
    }
    assert created == {
        0: (pat_id, "first", None),
        3: (pat_id, "to my therapist", pat_id),
        4: (lead_id, "a private reply", pat_id),
        6: (lead_id, "last", None),
    }
    seqs = {i: results[i].message.seq for i in created}
    # Gap-free after the earlier message; those of one kind in the order given (on PostgreSQL the
    # common ones are numbered in the batch, before the therapist's private reply).
    assert sorted(seqs.values()) == [2, 3, 4, 5]
    assert seqs[0] < seqs[3] < seqs[6]
    assert isinstance(results[1], live.LiveError) and results[1].code == "conn.replaced"
    assert results[2] == live.ChatPosted(message=earlier.message, created=False)
    assert isinstance(results[5], live.LiveError) and results[5].code == "chat.empty"
    # Nothing of the refused ones kept; what is stored is what was answered.
    clinic.session.refresh_from_db()
    assert clinic.session.chat_seq == 5
    stored = dict(ChatMessage.objects.values_list("seq", "text"))
    assert stored == {1: "earlier", **{seqs[i]: results[i].message.text for i in created}}
    if connection.vendor == "postgresql":
        # The five candidates (not the private reply, not the empty one) went in one statement; the
        # refused and the resent one were answered by the ORM path, not tried again.
        assert round_trips == [["SELECT batch_index, stored_seq, sender_m"]]


@pytest.mark.django_db(transaction=True)
def test_post_chats_in_its_own_transaction_keeps_nothing_of_a_failed_batch(require_postgres):
    from django.db import DataError

    clinic = make_live_clinic(START, starts_in=timedelta(0))
    pat, _ = join(clinic, clinic.pat)
    live.post_chats([live.ChatRequest(pat, "c-1", "before")], now=NOW)
    # Outside any transaction (as in the server) the batch is one statement in its own transaction;
    # a failure inside it (here the second message's client id, too long for its column, after the
    # first was inserted) must leave nothing behind and the connection usable.
    assert not connection.in_atomic_block
    with pytest.raises(DataError):
        live.post_chats([live.ChatRequest(pat, "c-2", "lost"), live.ChatRequest(pat, "c" * 65, "lost too")], now=NOW)

    (after,) = live.post_chats([live.ChatRequest(pat, "c-4", "after")], now=NOW)

    assert after.message.seq == 2
    assert list(ChatMessage.objects.order_by("seq").values_list("seq", "text")) == [(1, "before"), (2, "after")]


@pytest.mark.django_db(transaction=True)
def test_post_chats_from_two_connections_at_once_numbers_every_message_once_and_in_order(require_postgres):
    import threading

    from django.db import connections

    clinic = make_live_clinic(START, starts_in=timedelta(0))
    senders = [join(clinic, clinic.pat)[0], join(clinic, clinic.sam)[0]]
    answers: dict[int, list] = {}
    ready = threading.Barrier(len(senders))

    def send(k: int, actor: live.Actor) -> None:
        try:  # each thread has its own database connection, as two server processes do
            ready.wait()
            answers[k] = [
                result
                for m in range(25)
                for result in live.post_chats([live.ChatRequest(actor, f"{k}-{m}", f"message {m}")], now=NOW)
            ]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(k, actor)) for k, actor in enumerate(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Two stores of one session at the same moment: every message stored once, numbered without a
    # gap, each sender's in the order it sent them.
    seqs = {
        k: [r.message.seq for r in results if isinstance(r, live.ChatPosted) and r.created]
        for k, results in answers.items()
    }
    assert [len(seqs[k]) for k in (0, 1)] == [25, 25]
    assert sorted(seqs[0] + seqs[1]) == list(range(1, 51))
    assert all(s == sorted(s) for s in seqs.values())
    clinic.session.refresh_from_db()
    assert clinic.session.chat_seq == 50


@pytest.mark.django_db(transaction=True)
def test_post_chats_waits_for_the_sessions_lock_and_then_sees_a_removal_committed_under_it(require_postgres):
    import threading
    import time

    from django.db import connections

    clinic = make_live_clinic(START, starts_in=timedelta(0))
    pat, _ = join(clinic, clinic.pat)
    locked, store_started = threading.Event(), threading.Event()
    answer: list = []

    def remove_under_the_lock() -> None:  # what a moderator's command does: lock, change the seat, commit
        try:
            with transaction.atomic():
                Session.objects.select_for_update().get(pk=clinic.session.pk)
                locked.set()
                store_started.wait(5)
                time.sleep(0.3)  # the store is now waiting for the lock
                Seat.objects.filter(session=clinic.session, user=clinic.pat).update(state=SeatState.REMOVED)
        finally:
            connections.close_all()

    def store() -> None:
        try:
            locked.wait(5)
            store_started.set()
            answer.extend(live.post_chats([live.ChatRequest(pat, "c-1", "after my removal?")], now=NOW))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=remove_under_the_lock), threading.Thread(target=store)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The store's checks ran after the lock was granted, so they saw the removal: refused, no number used.
    assert len(answer) == 1 and isinstance(answer[0], live.LiveError)
    assert not ChatMessage.objects.filter(session=clinic.session).exists()
    clinic.session.refresh_from_db()
    assert clinic.session.chat_seq == 0


def test_post_chat_from_a_replaced_connection_refused_and_uses_no_number(clinic):
    old_tab, _ = join(clinic, clinic.pat)
    new_tab, _ = join(clinic, clinic.pat)

    with pytest.raises(live.LiveError) as refused:
        live.post_chat(old_tab, "c-1", "from the old tab", now=NOW)
    posted = live.post_chat(new_tab, "c-1", "from the new tab", now=NOW)

    assert refused.value.code == "conn.replaced"
    assert posted.message.seq == 1
    clinic.session.refresh_from_db()
    assert clinic.session.chat_seq == 1


def test_post_chat_after_the_session_ended_refused_and_uses_no_number(clinic):
    pat, _ = join(clinic, clinic.pat)

    with pytest.raises(live.LiveError) as refused:
        live.post_chat(pat, "c-1", "too late", now=clinic.session.ends_at)

    assert refused.value.code == "session.ended"
    clinic.session.refresh_from_db()
    assert (clinic.session.chat_seq, ChatMessage.objects.count()) == (0, 0)


def test_private_thread_visible_to_participant_and_therapists_only(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, pat_join = join(clinic, clinic.pat)
    sam, _ = join(clinic, clinic.sam)
    observer, _ = join(clinic, clinic.admin)
    live.post_chat(pat, "c-1", "room message", now=NOW)
    private = live.post_chat(pat, "c-2", "I am struggling today", to_therapists=True, now=NOW)
    reply = live.post_chat(lead, "c-1", "Thanks for telling me", thread=pat_join.member.member_id, now=NOW)

    def seqs(actor):
        return [m.seq for m in live.chat_history(actor, 0, now=NOW).messages]

    assert private.message.thread == reply.message.thread == pat_join.member.member_id
    assert seqs(pat) == [1, 2, 3]
    assert seqs(lead) == [1, 2, 3]
    assert seqs(sam) == [1]
    assert seqs(observer) == [1]


@pytest.mark.parametrize("who", ["sam", "admin"])
def test_post_chat_refused_for_participant_thread_and_observer(clinic, who):
    _, pat = join(clinic, clinic.pat)
    actor, _ = join(clinic, getattr(clinic, who))
    thread = pat.member.member_id if who == "sam" else None

    with pytest.raises(live.LiveError) as refused:
        live.post_chat(actor, "c-1", "psst", thread=thread, now=NOW)

    assert refused.value.code == "chat.not_allowed"
    assert ChatMessage.objects.count() == 0


def test_post_chat_from_waiting_room_refused(clinic):
    knock_policy(clinic)
    pat, _ = join(clinic, clinic.pat)

    with pytest.raises(live.LiveError) as refused:
        live.post_chat(pat, "c-1", "let me in", now=NOW)

    assert refused.value.code == "perm.waiting"


def test_delete_chat_keeps_number_and_drops_text(clinic):
    lead, _ = join(clinic, clinic.lead)
    pat, _ = join(clinic, clinic.pat)
    live.post_chat(pat, "c-1", "something I regret", now=NOW)

    deleted = live.delete_chat(lead, 1, now=NOW)

    assert (deleted.seq, deleted.text, deleted.deleted) == (1, "", True)
    assert ChatMessage.objects.get().text == ""
    assert live.chat_history(pat, 0, now=NOW).messages == (deleted,)
    # The audit says who deleted which number, never what it said.
    assert audit_rows(clinic)[-1] == (AuditAction.CHAT_DELETED, clinic.lead.pk, clinic.pat.pk, "1")


def test_chat_history_is_exactly_after_seq(clinic):
    pat, _ = join(clinic, clinic.pat)
    for n in range(1, 6):
        live.post_chat(pat, f"c-{n}", f"message {n}", now=NOW)

    page = live.chat_history(pat, 3, now=NOW)

    assert ([m.seq for m in page.messages], page.more) == ([4, 5], False)


def test_resume_accepts_previous_token_once(clinic):
    pat, first = join(clinic, clinic.pat)
    live.post_chat(pat, "c-1", "before the drop", now=NOW)
    live.disconnect(pat, now=NOW)
    sam, _ = join(clinic, clinic.sam)
    live.post_chat(sam, "c-1", "while you were away", now=NOW)
    pat2, second = join(clinic, clinic.pat, now=NOW + timedelta(seconds=5))

    resumed = live.resume(pat2, first.resume_token, 1, now=NOW)

    assert [m.text for m in resumed.chat.messages] == ["while you were away"]
    with pytest.raises(live.LiveError) as refused:
        live.resume(pat2, first.resume_token, 1, now=NOW)
    assert refused.value.code == "resume.invalid"
    assert live.resume(pat2, second.resume_token, 2, now=NOW).chat.messages == ()


# --- reads and privacy -----------------------------------------------------------------------------


def test_roster_shows_display_names_only(clinic):
    clinic.sam.alias, clinic.sam.alias_approved = "Sunny", True
    clinic.sam.save()
    pat, _ = join(clinic, clinic.pat)
    join(clinic, clinic.sam, now=NOW + timedelta(seconds=1))
    join(clinic, clinic.lead, now=NOW + timedelta(seconds=2))

    view = live.roster(pat, now=NOW)

    assert [m.name for m in view.roster] == ["Pat P.", "Sunny", "Lee L."]
    text = repr(view)
    for person in (clinic.pat, clinic.sam, clinic.lead):
        assert person.email not in text
        assert str(person.pk) not in text
        assert person.last_name not in text


def test_waiting_list_for_therapists_only(clinic):
    pat, _ = join(clinic, clinic.pat)

    with pytest.raises(live.LiveError) as refused:
        live.waiting_list(pat, now=NOW)

    assert refused.value.code == "perm.denied"


def test_signal_route_between_admitted_members_only(clinic):
    knock_policy(clinic)
    lead, lead_join = join(clinic, clinic.lead)
    _, waiting = join(clinic, clinic.pat)
    _, outsider = join(clinic, clinic.outsider_therapist, session=clinic.other_session)
    _, co_join = join(clinic, clinic.co)

    route = live.signal_route(lead, co_join.member.member_id, now=NOW)

    assert route == live.SignalRoute(co_join.member.member_id, co_join.member.member_id < lead_join.member.member_id)
    for target in (waiting.member.member_id, outsider.member.member_id, lead_join.member.member_id, "nobody"):
        with pytest.raises(live.LiveError) as refused:
            live.signal_route(lead, target, now=NOW)
        assert refused.value.code == "target.not_found"


def test_polite_roles_are_complementary(clinic):
    a, a_join = join(clinic, clinic.pat)
    b, b_join = join(clinic, clinic.sam)

    to_b = live.signal_route(a, b_join.member.member_id, now=NOW)
    to_a = live.signal_route(b, a_join.member.member_id, now=NOW)

    assert {to_b.polite, to_a.polite} == {True, False}


def test_audit_never_holds_chat_text_tokens_or_messages(clinic):
    knock_policy(clinic)
    lead, lead_join = join(clinic, clinic.lead)
    pat, pat_join = join(clinic, clinic.pat)
    live.admit(lead, pat_join.member.member_id, now=NOW)
    live.post_chat(pat, "c-1", "my secret text", to_therapists=True, now=NOW)
    live.delete_chat(lead, 1, now=NOW)
    _, sam = join(clinic, clinic.sam)
    live.waiting_message(lead, "a private note", now=NOW)
    live.deny(lead, sam.member.member_id, "another private note", now=NOW)

    rows = list(AuditEvent.objects.values_list("action", "code"))

    assert len(rows) >= 6
    secrets_ = ("my secret text", "a private note", "another private note", pat_join.resume_token)
    assert not [row for row in rows if any(secret in row[1] for secret in secrets_)]
    assert lead_join.resume_token not in repr(rows)


def test_the_chat_store_call_gives_each_message_a_random_version_4_uuid():
    actor = live.Actor(uuid.uuid4(), uuid.uuid4(), 1)
    requests = [live.ChatRequest(actor, f"c-{k}", "hello") for k in range(500)]
    call = live.chat_store_call(requests, NOW)
    made = set(call.parameters[0].strip("{}").split(","))
    assert len(made) == 500
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_actor_as_text_is_its_ids_and_epoch():
    actor = live.Actor(uuid.uuid4(), uuid.uuid4(), 7)
    assert actor.as_text == (str(actor.session_id), str(actor.user_id), "7")
    assert actor == live.Actor(actor.session_id, actor.user_id, 7)  # the cached text is not a field
