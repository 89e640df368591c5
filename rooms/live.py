"""The realtime session's domain: seats, the waiting room, presence, chat and moderation.

Plain synchronous functions; the WebSocket consumer (signaling/) wraps each call
once. Every state change runs in one transaction that starts by locking the
session's row, so joins, admissions, chat sequence numbers and moderator
commands on one session are serialised (across server processes too). Each takes
an injectable ``now``.

Who is asking is an ``Actor``: the session, the user and the connection epoch the
consumer got from ``join``. A command from a connection that a newer tab has
replaced is refused (``conn.replaced``). Refusals raise ``LiveError`` with a
stable ``code`` (``CODES`` lists them); forbidden commands are audited.

State changes return ``Changes``: what the people connected must be told
(member joined/updated/left, the waiting list, notices to one member, ...). The
consumer turns them into frames; this module never knows about sockets.

Privacy: views hold display names and opaque member ids only (never e-mails, full
names or user ids), and audit rows never hold chat text, SDP or tokens.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.sessions.models import Session as StoredSession
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from accounts.sessions import DB_SESSIONS, judge_logins, login_problem, login_problems
from rooms import join_sql, pg, services
from rooms.access import Admission, Code, EntryFacts, decide_entry
from rooms.models import (
    AdmissionPolicy,
    AuditAction,
    AuditEvent,
    ChatMessage,
    Seat,
    SeatCapacity,
    SeatState,
    Session,
    SessionRemoval,
    SessionStatus,
)

# --- errors ------------------------------------------------------------------------------------

PERM_DENIED = "perm.denied"
PERM_WAITING = "perm.waiting"
TARGET_NOT_FOUND = "target.not_found"
TARGET_NOT_WAITING = "target.not_waiting"
TARGET_NOT_ADMITTED = "target.not_admitted"
SESSION_NOT_FOUND = "session.not_found"
SESSION_ENDED = Code.ENDED.value
SESSION_REMOVED = Code.REMOVED.value
CONN_REPLACED = "conn.replaced"
CHAT_NOT_ALLOWED = "chat.not_allowed"
CHAT_EMPTY = "chat.empty"
MUTE_HARD = "mute.hard"
CAMERA_BLOCKED = "camera.blocked"
RESUME_INVALID = "resume.invalid"
SEAT_LEFT = "seat.left"

CODES: dict[str, str] = {
    PERM_DENIED: "Only the session's therapists may do this, or the target is not yours to act on.",
    PERM_WAITING: "Not available in the waiting room.",
    TARGET_NOT_FOUND: "No such member (or message) in this session.",
    TARGET_NOT_WAITING: "That person is not in the waiting room.",
    TARGET_NOT_ADMITTED: "That person is not in the room.",
    SESSION_NOT_FOUND: "No such session.",
    SESSION_ENDED: "The session has ended.",
    SESSION_REMOVED: "You were removed from this session.",
    CONN_REPLACED: "A newer connection (another tab or device) took over this seat.",
    CHAT_NOT_ALLOWED: "You cannot send this chat message.",
    CHAT_EMPTY: "The message is empty.",
    MUTE_HARD: "A therapist muted you; they have to release the mute first.",
    CAMERA_BLOCKED: "A therapist turned your camera off; they have to release it first.",
    RESUME_INVALID: "The resume token is not valid for this seat; resynchronise from scratch.",
    SEAT_LEFT: "You left this session.",
}

# Refusals that mean "someone tried something they may not": audited as command_refused.
AUDITED_REFUSALS = frozenset({PERM_DENIED, TARGET_NOT_FOUND})


class LiveError(Exception):
    """A refused operation. ``code`` is stable; the consumer sends it as an error frame."""

    def __init__(self, code: str, detail: str = "", *, opens_at: datetime | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail or CODES.get(code, "")
        self.opens_at = opens_at


# --- values handed to the transport ------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who is asking: the session, the user, and the connection epoch that ``join`` returned."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    epoch: int

    @functools.cached_property
    def as_text(self) -> tuple[str, str, str]:
        """Session, user and epoch as text: the chat store's parameters, for every message sent."""
        return str(self.session_id), str(self.user_id), str(int(self.epoch))


@dataclass(frozen=True)
class MemberView:
    """One roster line, as peers may see it: an opaque id and a display name, never more."""

    member_id: str
    name: str
    role: str
    connected: bool
    mic: bool
    camera: bool
    hard_muted: bool
    camera_blocked: bool
    hand_raised_at: datetime | None
    conn: int


@dataclass(frozen=True)
class WaitingView:
    """One person in the waiting room, for the therapists."""

    member_id: str
    name: str
    since: datetime
    connected: bool


@dataclass(frozen=True)
class WaitingInfo:
    """What a waiting person is told: when the room opens by itself (None: a therapist admits) and the
    therapist's latest message."""

    opens_at: datetime | None
    message: str


@dataclass(frozen=True)
class RoomView:
    roster: tuple[MemberView, ...]
    spotlight: str | None
    locked: bool
    chat_seq: int
    hands: tuple[str, ...]  # member ids, earliest raised first
    kind: str = ""  # the room's kind (RoomKind) and media preference: they decide the media path
    media_preference: str = "auto"
    ends_at: datetime | None = None  # TURN credentials handed out with this view stay valid until then


@dataclass(frozen=True)
class ChatView:
    seq: int
    author: str  # member id
    text: str  # empty once deleted
    thread: str | None  # the participant's member id for a private thread, None for the room
    created_at: datetime
    deleted: bool


@dataclass(frozen=True)
class Notice:
    """A moderator's action told to the one member it concerns (``muted``, ``camera_off`` ...)."""

    member_id: str
    kind: str
    hard: bool = False


@dataclass
class Changes:
    """What a state change means for the people connected to the session."""

    joined: list[MemberView] = field(default_factory=list)
    updated: list[MemberView] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)  # waiting -> room: their connections switch over
    denied: list[tuple[str, str]] = field(default_factory=list)  # (member id, therapist's message)
    removed: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    waiting_list: tuple[WaitingView, ...] | None = None  # new list for the therapists
    hands: tuple[str, ...] | None = None  # new hand queue for the therapists
    spotlight_changed: bool = False
    spotlight: str | None = None
    locked: bool | None = None
    ended: bool = False
    waiting_room: WaitingInfo | None = None  # to everyone waiting
    waiting_to: list[tuple[str, WaitingInfo]] = field(default_factory=list)  # to one waiting person


@dataclass(frozen=True)
class JoinResult:
    member: MemberView
    capacity: str
    state: str  # SeatState.ADMITTED or SeatState.WAITING
    epoch: int
    resume_token: str
    replaced: bool  # an older connection of this person holds the seat: it must close (4409)
    room: RoomView | None  # admitted only
    waiting: WaitingInfo | None  # waiting only
    waiting_list: tuple[WaitingView, ...] | None  # moderators only
    changes: Changes


@dataclass(frozen=True)
class TickResult:
    close: str | None  # a code the connection must close with, or None
    admitted: RoomView | None  # this waiting person was let in automatically just now
    changes: Changes
    missed: tuple[ChatView, ...] = ()  # chat after ``chat_after`` this person may read
    chat_upto: int | None = None  # every message up to this number is now covered


@dataclass(frozen=True)
class ChatPosted:
    message: ChatView
    created: bool  # False: a resend of a message already stored (same client id)


@dataclass(frozen=True)
class ChatPage:
    messages: tuple[ChatView, ...]
    more: bool  # more messages after the last one (ask again from its seq)


@dataclass(frozen=True)
class Resumed:
    room: RoomView
    chat: ChatPage


@dataclass(frozen=True)
class SignalRoute:
    target: str
    polite: bool  # the recipient's "perfect negotiation" role towards the sender


CHAT_PAGE_SIZE = 200


# --- helpers -------------------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    now = now or timezone.now()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _audit(action: str, *, session_id=None, actor_id=None, subject_id=None, code: str = "") -> None:
    AuditEvent.objects.create(action=action, session_id=session_id, actor_id=actor_id, subject_id=subject_id, code=code)


def _lock_session(session_id) -> Session:
    try:
        # of=self: lock the session row only, not the room and program joined for the entry facts.
        return Session.objects.select_for_update(of=("self",)).select_related("room__program").get(pk=session_id)
    except (Session.DoesNotExist, ValueError):
        raise LiveError(SESSION_NOT_FOUND) from None


def _get_session(session_id) -> Session:
    """For reads: no lock (select_for_update needs a transaction, and a read needs no serialising)."""
    try:
        return Session.objects.select_related("room__program").get(pk=session_id)
    except (Session.DoesNotExist, ValueError):
        raise LiveError(SESSION_NOT_FOUND) from None


def _ended(session: Session, now: datetime) -> bool:
    return session.status in {SessionStatus.ENDED, SessionStatus.CANCELLED} or now >= session.ends_at


def _actor_seat(session: Session, actor: Actor, now: datetime) -> Seat:
    """The asker's seat, refusing stale connections and people who are out."""
    if _ended(session, now):
        raise LiveError(SESSION_ENDED)
    seat = Seat.objects.select_related("user").filter(session=session, user_id=actor.user_id).first()
    if seat is None:
        raise LiveError(PERM_DENIED)
    if seat.state in {SeatState.REMOVED, SeatState.DENIED}:
        raise LiveError(SESSION_REMOVED)
    if seat.epoch != actor.epoch:
        raise LiveError(CONN_REPLACED)
    return seat


def _member(session: Session, actor: Actor, now: datetime) -> Seat:
    seat = _actor_seat(session, actor, now)
    if seat.state == SeatState.WAITING:
        raise LiveError(PERM_WAITING)
    if seat.state != SeatState.ADMITTED:
        raise LiveError(PERM_DENIED)
    return seat


def _moderator(session: Session, actor: Actor, now: datetime) -> Seat:
    seat = _member(session, actor, now)
    if seat.capacity != SeatCapacity.MODERATOR:
        raise LiveError(PERM_DENIED)
    return seat


def _target(session: Session, member_id: str | None) -> Seat:
    # Filtered by session: a member id from another session is simply not found here.
    seat = Seat.objects.select_related("user").filter(session=session, member_id=member_id or "").first()
    if seat is None:
        raise LiveError(TARGET_NOT_FOUND)
    return seat


def _admitted_target(session: Session, member_id: str, *, participant_only: bool = True) -> Seat:
    seat = _target(session, member_id)
    if seat.state != SeatState.ADMITTED:
        raise LiveError(TARGET_NOT_ADMITTED)
    if participant_only and seat.capacity != SeatCapacity.PARTICIPANT:
        raise LiveError(PERM_DENIED)  # therapists and observers are not moderated by peers
    return seat


def _moderated_participant(actor: Actor, member_id: str, now: datetime) -> tuple[Session, Seat]:
    """The locked session and an admitted participant in it, for a command by one of its moderators."""
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    return session, _admitted_target(session, member_id)


def member_view(seat: Seat) -> MemberView:
    """A seat as peers see it (the seat's user must be loaded: ``select_related("user")``)."""
    return MemberView(
        member_id=seat.member_id,
        name=seat.user.display_name,
        role=seat.capacity,
        connected=seat.connected,
        mic=seat.mic,
        camera=seat.camera,
        hard_muted=seat.hard_muted,
        camera_blocked=seat.camera_blocked,
        hand_raised_at=seat.hand_raised_at,
        conn=seat.epoch,
    )


def _room_view(session: Session) -> RoomView:
    seats = Seat.objects.select_related("user").filter(session=session, state=SeatState.ADMITTED)
    return _room_view_of(session, _admitted_in_order(seats))


def _room_view_of(session: Session, seats: list[Seat]) -> RoomView:
    """The room view from the session's admitted seats, in admission order (users loaded)."""
    return RoomView(
        roster=tuple(member_view(s) for s in seats),
        spotlight=next((s.member_id for s in seats if s.pk == session.spotlight_id), None),
        locked=session.locked,
        chat_seq=session.chat_seq,
        hands=_hand_queue(seats),
        kind=session.room.kind,
        media_preference=session.room.media_preference,
        ends_at=session.ends_at,
    )


def _hand_queue(seats: list[Seat]) -> tuple[str, ...]:
    raised = sorted((s for s in seats if s.hand_raised_at is not None), key=lambda s: (s.hand_raised_at, s.member_id))
    return tuple(s.member_id for s in raised)


def _hands(session: Session) -> tuple[str, ...]:
    return _hand_queue(
        list(Seat.objects.filter(session=session, state=SeatState.ADMITTED, hand_raised_at__isnull=False))
    )


def _waiting_list(session: Session) -> tuple[WaitingView, ...]:
    seats = Seat.objects.select_related("user").filter(session=session, state=SeatState.WAITING)
    return _waiting_list_of(_waiting_in_order(seats))


def _waiting_list_of(seats) -> tuple[WaitingView, ...]:
    """The waiting list from the session's waiting seats, longest waiting first (users loaded)."""
    return tuple(WaitingView(s.member_id, s.user.display_name, s.waiting_since, s.connected) for s in seats)


# Orders are Python's, not the database's: the same on SQLite and PostgreSQL (whose collation would
# order member ids differently), and the same whether a list was queried or built in memory.
def _admitted_in_order(seats) -> list[Seat]:
    admitted = [s for s in seats if s.state == SeatState.ADMITTED]
    return sorted(admitted, key=lambda s: (s.admitted_at, s.member_id))


def _waiting_in_order(seats) -> list[Seat]:
    waiting = [s for s in seats if s.state == SeatState.WAITING]
    return sorted(waiting, key=lambda s: (s.waiting_since, s.member_id))


def _auto_admits(session: Session, now: datetime) -> bool:
    """Under the auto policy, participants are let in from the start until the late-join limit."""
    return (
        session.admission_policy == AdmissionPolicy.AUTO_THEN_KNOCK
        and not session.locked
        and session.starts_at <= now < session.late_join_until
    )


def _opens_at(session: Session, now: datetime) -> datetime | None:
    """When the waiting room opens by itself (auto policy, before the start), else None: a therapist admits."""
    if session.admission_policy == AdmissionPolicy.AUTO_THEN_KNOCK and not session.locked:
        if now < session.starts_at < session.late_join_until:
            return session.starts_at
    return None


def _waiting_info(session: Session, seat: Seat, now: datetime) -> WaitingInfo:
    # A message to this person, else the latest one to everyone waiting (also for later arrivals).
    return WaitingInfo(opens_at=_opens_at(session, now), message=seat.waiting_message or session.waiting_room_message)


def _admit(seat: Seat, now: datetime, by: User | None) -> None:
    seat.state = SeatState.ADMITTED
    seat.admitted_at = now
    seat.admitted_by = by
    seat.waiting_since = None
    seat.left_at = None
    seat.hand_raised_at = None


def _out(session: Session, seat: Seat, state: str, now: datetime, changes: Changes) -> None:
    """Take a seat out of the room or waiting room, and say what that changes for the others."""
    was_admitted = seat.state == SeatState.ADMITTED
    had_hand = seat.hand_raised_at is not None
    seat.state = state
    seat.left_at = now
    seat.hand_raised_at = None
    seat.save()
    if not was_admitted:
        return
    changes.left.append(seat.member_id)
    if session.spotlight_id == seat.pk:
        session.spotlight = None
        session.save(update_fields=["spotlight"])
        changes.spotlight_changed, changes.spotlight = True, None
    if had_hand:
        changes.hands = _hands(session)


def _command(fn):
    """Run a command in one transaction; audit forbidden attempts (outside it, so they stick)."""

    @functools.wraps(fn)
    def wrapper(actor: Actor, *args, now: datetime | None = None, **kwargs):
        now = _now(now)
        try:
            with transaction.atomic():
                return fn(actor, *args, now=now, **kwargs)
        except LiveError as exc:
            if exc.code in AUDITED_REFUSALS:
                refuse_command(actor, exc.code)
            raise

    return wrapper


# --- entering and leaving ------------------------------------------------------------------------


def join(session_id, user: User, *, now: datetime | None = None) -> JoinResult:
    """Open a connection to a session: decide entry, take (or retake) the person's seat.

    The access decision (rooms.access) runs with the participants present counted
    from seats. Moderators and observers enter the room directly; participants
    enter directly when auto-admission applies (the auto policy, from the start to
    the late-join limit), else wait. Someone who already holds a place (reconnecting
    within the grace period, or a second tab) keeps it even in a locked room; the
    older connection of a second tab must then close (``replaced``).

    Each call bumps the connection epoch and issues a fresh resume token (only its
    hash is stored). A refusal raises ``LiveError`` with the access code and is
    audited as handshake_refused.
    """
    (result,) = join_many([(session_id, user)], now=now)
    if isinstance(result, Exception):
        raise result
    return result


def join_many(
    joins: list[tuple[object, User]], *, now: datetime | None = None
) -> list[JoinResult | LiveError | DatabaseError]:
    """``join`` for each (session id, person), decided in order as if one after the other: a
    ``JoinResult``, the ``LiveError`` of a refusal (audited like ``join``'s), or the ``DatabaseError``
    that join met on its own.

    On PostgreSQL all of them take two round trips (``rooms.join_sql``: the sessions' locks and every
    join's reads, then every seat and audit row), in one transaction: the join's own (BEGIN with the
    reads, COMMIT with the writes) or the caller's. If a database error fails that outside a caller's
    transaction (one join's data, a lost connection), each join is tried again on its own, so one
    cannot fail the others. Elsewhere (SQLite) each join is its own transaction through the ORM."""
    now = _now(now)
    if pg.available():
        own_transaction = not connection.in_atomic_block
        try:
            if own_transaction:
                results = _join_batch(joins, now, own_transaction=True)
            else:
                with transaction.atomic():  # a savepoint: a failure leaves the caller's transaction usable
                    results = _join_batch(joins, now, own_transaction=False)
        except BaseException as exc:
            if own_transaction:
                pg.rollback_open_transaction()
            if len(joins) == 1 or not own_transaction or not isinstance(exc, DatabaseError):
                raise
            return [_join_alone(session_id, user, now) for session_id, user in joins]  # each audits its refusal
    else:
        results = []
        for session_id, user in joins:
            try:
                with transaction.atomic():
                    results.append(_join_orm(session_id, user, now))
            except (LiveError, DatabaseError) as exc:
                results.append(exc)
    for (session_id, user), result in zip(joins, results, strict=True):
        if isinstance(result, LiveError):
            refuse_handshake(session_id, user.pk, result.code)
    return results


def _join_alone(session_id, user: User, now: datetime) -> JoinResult | LiveError | DatabaseError:
    try:
        return join(session_id, user, now=now)
    except (LiveError, DatabaseError) as exc:
        return exc


def _join_batch(joins, now: datetime, *, own_transaction: bool) -> list[JoinResult | LiveError]:
    reads = join_sql.read_many(joins, begin=own_transaction)
    results: list[JoinResult | LiveError] = []
    writes: list[join_sql.JoinWrite] = []
    for (_, user), found in zip(joins, reads, strict=True):
        if found is None:
            results.append(LiveError(SESSION_NOT_FOUND))
            continue
        present = _participants_present(found.seats, user)
        try:
            result, seat, audit = _decide_join(
                found.session, found.seats, user, found.entry_facts(participants_present=present), now
            )
        except LiveError as exc:
            results.append(exc)
            continue
        writes.append(join_sql.JoinWrite.of(seat, audit))
        results.append(result)
    join_sql.write_many(writes, commit=own_transaction)
    return results


def _join_orm(session_id, user: User, now: datetime) -> JoinResult:
    # Every seat of the session in one query (a session has tens at most): this person's seat, the
    # participants present, and after the write the room and the waiting list, all from this list
    # (the session row lock keeps it current: every change to seats of this session takes it).
    session = _lock_session(session_id)
    seats = list(Seat.objects.select_related("user").filter(session=session))
    facts = services.entry_facts(user, session, participants_present=_participants_present(seats, user))
    result, seat, audit = _decide_join(session, seats, user, facts, now)
    seat.save()
    audit.save()
    return result


def _participants_present(seats: list[Seat], user: User) -> int:
    return sum(
        1
        for s in seats
        if s.user_id != user.pk
        and s.capacity == SeatCapacity.PARTICIPANT
        and s.state in {SeatState.WAITING, SeatState.ADMITTED}
    )


def _decide_join(
    session: Session, seats: list[Seat], user: User, facts: EntryFacts, now: datetime
) -> tuple[JoinResult, Seat, AuditEvent]:
    """The join of ``user`` decided on ``seats`` (every seat of the session, updated in place: a new
    seat is appended): its result, and the seat and audit row to save. Raises the refusal."""
    seat = next((s for s in seats if s.user_id == user.pk), None)
    holds_place = seat is not None and seat.state in {SeatState.WAITING, SeatState.ADMITTED}
    if holds_place:
        facts = replace(facts, locked=False)  # a reconnect or a second tab keeps its place
    decision = decide_entry(facts, now)
    if not decision.allowed:
        raise LiveError(decision.code.value, opens_at=decision.opens_at)

    changes = Changes()
    capacity = decision.capacity.value
    created = seat is None
    if created:
        seat = Seat(session=session, user=user, capacity=capacity, state=SeatState.LEFT)
        seats.append(seat)
    replaced = holds_place and seat.connected
    reconnected = holds_place and not created
    before = seat.state
    seat.capacity = capacity
    if capacity != SeatCapacity.PARTICIPANT or (decision.admission == Admission.AUTO and _auto_admits(session, now)):
        if seat.state != SeatState.ADMITTED:
            _admit(seat, now, None)
    elif seat.state != SeatState.ADMITTED and seat.state != SeatState.WAITING:
        seat.state = SeatState.WAITING
        seat.waiting_since = now
        seat.left_at = None
        seat.waiting_message = ""
    seat.epoch += 1
    seat.connected = True
    seat.connected_at = now
    seat.disconnected_at = None
    token = secrets.token_urlsafe(32)
    seat.previous_resume_token_hash = seat.resume_token_hash
    seat.resume_token_hash = _hash(token)
    if reconnected and before == seat.state:
        audit = AuditEvent(
            action=AuditAction.RECONNECTED, session_id=session.pk, actor_id=user.pk, code="replaced" if replaced else ""
        )
    else:
        admission = decision.admission.value if seat.state == SeatState.ADMITTED else Admission.KNOCK.value
        audit = AuditEvent(action=AuditAction.JOINED, session_id=session.pk, actor_id=user.pk, code=admission)

    me = member_view(seat)
    entered = seat.state == SeatState.ADMITTED and before != SeatState.ADMITTED
    if entered:
        changes.joined.append(me)
    elif seat.state == SeatState.ADMITTED:
        changes.updated.append(me)  # connected again (or on a new tab): peers renegotiate media
    if before == SeatState.WAITING or seat.state == SeatState.WAITING:
        changes.waiting_list = _waiting_list_of(_waiting_in_order(seats))

    admitted = seat.state == SeatState.ADMITTED
    result = JoinResult(
        member=me,
        capacity=capacity,
        state=seat.state,
        epoch=seat.epoch,
        resume_token=token,
        replaced=replaced,
        room=_room_view_of(session, _admitted_in_order(seats)) if admitted else None,
        waiting=None if admitted else _waiting_info(session, seat, now),
        waiting_list=_waiting_list_of(_waiting_in_order(seats)) if admitted and seat.is_moderator else None,
        changes=changes,
    )
    return result, seat, audit


def refuse_handshake(session_id, user_id, code: str) -> None:
    """Audit a connection refused before it was accepted (anonymous, wrong protocol, access denied)."""
    exists = code != SESSION_NOT_FOUND and Session.objects.filter(pk=session_id).exists()
    _audit(AuditAction.HANDSHAKE_REFUSED, session_id=session_id if exists else None, actor_id=user_id, code=code)


def refuse_command(actor: Actor, code: str) -> None:
    """Audit a forbidden command (a participant sending a moderator command, a foreign target)."""
    exists = Session.objects.filter(pk=actor.session_id).exists()
    _audit(
        AuditAction.COMMAND_REFUSED,
        session_id=actor.session_id if exists else None,
        actor_id=actor.user_id,
        code=code,
    )


def disconnect(actor: Actor, *, now: datetime | None = None) -> Changes:
    """A connection dropped. The seat is kept (peers see "reconnecting") until the grace period ends.

    Epoch-checked: when a newer connection of the same person already holds the
    seat, the older one's disconnect changes nothing.
    """
    now = _now(now)
    changes = Changes()
    with transaction.atomic():
        try:
            session = _lock_session(actor.session_id)
        except LiveError:
            return changes
        seat = Seat.objects.select_related("user").filter(session=session, user_id=actor.user_id).first()
        if seat is None or seat.epoch != actor.epoch or not seat.connected:
            return changes
        seat.connected = False
        seat.disconnected_at = now
        seat.save(update_fields=["connected", "disconnected_at"])
        if seat.state == SeatState.ADMITTED:
            changes.updated.append(member_view(seat))
        elif seat.state == SeatState.WAITING:
            changes.waiting_list = _waiting_list(session)
    return changes


@_command
def leave(actor: Actor, *, now: datetime) -> Changes:
    """The person leaves on purpose: no grace period."""
    session = _lock_session(actor.session_id)
    seat = _actor_seat(session, actor, now)
    changes = Changes()
    was_waiting = seat.state == SeatState.WAITING
    if seat.state in {SeatState.WAITING, SeatState.ADMITTED}:
        _out(session, seat, SeatState.LEFT, now, changes)
        _audit(AuditAction.LEFT, session_id=session.pk, actor_id=actor.user_id, code="leave")
    if was_waiting:
        changes.waiting_list = _waiting_list(session)
    return changes


def _expire(session: Session, now: datetime, changes: Changes) -> None:
    grace = timedelta(seconds=float(settings.SEAT_GRACE_SECONDS))
    stale = Seat.objects.filter(
        session=session,
        state__in=[SeatState.WAITING, SeatState.ADMITTED],
        connected=False,
        disconnected_at__lte=now - grace,
    ).select_related("user")
    waiting_changed = False
    for seat in stale:
        waiting_changed |= seat.state == SeatState.WAITING
        _out(session, seat, SeatState.LEFT, now, changes)
        _audit(AuditAction.LEFT, session_id=session.pk, actor_id=seat.user_id, code="timeout")
    if waiting_changed:
        changes.waiting_list = _waiting_list(session)


def expire_seats(session_id, *, now: datetime | None = None) -> Changes:
    """Seats whose reconnect grace ran out leave for good (peers then see member.left)."""
    now = _now(now)
    changes = Changes()
    with transaction.atomic():
        try:
            session = _lock_session(session_id)
        except LiveError:
            return changes
        _expire(session, now, changes)
    return changes


def tick(
    actor: Actor,
    session_key: str | None,
    *,
    believed_waiting: bool = False,
    chat_after: int | None = None,
    now: datetime | None = None,
) -> TickResult:
    """The periodic check of an open connection.

    Closes it when the login is gone (logged out, expired, password changed: 4401),
    the account is disabled (4401), the seat was taken by a newer connection (4409)
    or removed (4403), or the session ended, by a therapist or by the clock (4410).
    Meanwhile it expires stale seats of the session and lets a waiting participant
    in when auto-admission starts. ``believed_waiting``: the connection thinks it is
    in the waiting room; if the seat was admitted meanwhile (a notice lost in a
    race or a layer outage), the room view comes back so it can catch up.
    ``chat_after``: the connection has handled the chat up to there; the messages
    after it this person may read come back (``missed``), so a delivery the channel
    layer lost (a Redis restart empties every group) still arrives.
    """
    now = _now(now)
    changes = Changes()
    problem = login_problem(actor.user_id, session_key)
    if problem:
        return TickResult(close=problem, admitted=None, changes=changes)
    with transaction.atomic():
        try:
            session = _lock_session(actor.session_id)
            if _ended(session, now) and session.status not in {SessionStatus.ENDED, SessionStatus.CANCELLED}:
                _end(session, now, actor_id=None, code="schedule")  # the clock ended it: record that once
            seat = _actor_seat(session, actor, now)
        except LiveError as exc:
            return TickResult(close=exc.code, admitted=None, changes=changes)
        if seat.state not in {SeatState.WAITING, SeatState.ADMITTED}:
            return TickResult(close=SEAT_LEFT, admitted=None, changes=changes)
        _expire(session, now, changes)
        admitted = None
        if seat.state == SeatState.WAITING and seat.capacity == SeatCapacity.PARTICIPANT and _auto_admits(session, now):
            _admit(seat, now, None)
            seat.save()
            _audit(AuditAction.ADMITTED, session_id=session.pk, subject_id=seat.user_id, code=Admission.AUTO.value)
            changes.joined.append(member_view(seat))
            changes.waiting_list = _waiting_list(session)
            admitted = _room_view(session)
        elif seat.state == SeatState.ADMITTED and believed_waiting:
            admitted = _room_view(session)
        missed: tuple[ChatView, ...] = ()
        chat_upto = None
        if seat.state == SeatState.ADMITTED and chat_after is not None and session.chat_seq > chat_after:
            page = _chat_page(session, seat, chat_after)
            missed = page.messages
            chat_upto = page.messages[-1].seq if page.more else session.chat_seq
    return TickResult(close=None, admitted=admitted, changes=changes, missed=missed, chat_upto=chat_upto)


@dataclass(frozen=True)
class Probe:
    """What an open connection believes, for ``survey``."""

    actor: Actor
    session_key: str | None
    waiting: bool  # it shows the waiting room
    chat_mark: int | None  # it has every chat message it may read up to this number
    # It should have every message up to this one by now (the session's number at the previous
    # survey): messages stored since may still be on their way, and are not missing yet.
    chat_due: int | None = None


@dataclass(frozen=True)
class Survey:
    due: list[bool]  # one answer per probe
    chat_seq: dict  # session id -> its chat number now (the next survey's ``chat_due``)


def survey(probes: list[Probe], *, now: datetime | None = None) -> Survey:
    """Which of these connections need their full periodic check (``tick``) now?

    Read-only and in a constant number of queries however many connections a
    process holds: its login is gone or disabled, its seat is no longer its own or
    no longer in, the session ended (by a therapist or by the clock), it waits (the
    start may let it in; a seat admitted meanwhile must catch up), it has not seen
    a chat message it should have had by now (a delivery the channel layer lost), or its session has a
    seat whose reconnect grace ran out (one connection per session does the expiry).
    Everyone else costs nothing more: in a quiet room, no locks and no writes.
    """
    now = _now(now)
    if not probes:
        return Survey(due=[], chat_seq={})
    session_ids = {probe.actor.session_id for probe in probes}
    pairs = [(probe.actor.user_id, probe.session_key) for probe in probes]
    session_rows, rows, logins = _survey_reads(session_ids, pairs)
    sessions = {pk: (status, ends_at, chat_seq) for pk, status, ends_at, chat_seq in session_rows}
    grace_cutoff = now - timedelta(seconds=float(settings.SEAT_GRACE_SECONDS))
    seats: dict[tuple, tuple[str, int]] = {}
    stale_sessions: set = set()
    for session_id, user_id, state, epoch, connected, disconnected_at in rows:
        seats[(session_id, user_id)] = (state, epoch)
        if (
            state in {SeatState.WAITING, SeatState.ADMITTED}
            and not connected
            and disconnected_at is not None
            and disconnected_at <= grace_cutoff
        ):
            stale_sessions.add(session_id)
    due: list[bool] = []
    for probe, login in zip(probes, logins, strict=True):
        session_id = probe.actor.session_id
        status, ends_at, chat_seq = sessions.get(session_id, (None, None, 0))
        state, epoch = seats.get((session_id, probe.actor.user_id), (None, None))
        needs = (
            login is not None
            or status is None
            or status in {SessionStatus.ENDED, SessionStatus.CANCELLED}
            or ends_at <= now
            or epoch != probe.actor.epoch
            or state != SeatState.ADMITTED
            or probe.waiting
            or (probe.chat_mark is not None and min(chat_seq, probe.chat_due or 0) > probe.chat_mark)
            or session_id in stale_sessions
        )
        if needs:
            stale_sessions.discard(session_id)  # this connection's check expires the session's stale seats
        due.append(needs)
    return Survey(due=due, chat_seq={pk: values[2] for pk, values in sessions.items()})


_SURVEY_SESSIONS = pg.Statement(
    f'SELECT "id", {pg.column(Session, "status")}, {pg.column(Session, "ends_at")}, {pg.column(Session, "chat_seq")} '
    f'FROM {pg.table(Session)} WHERE "id" = ANY(%(sessions)s::uuid[])'
)
_SURVEY_SEATS = pg.Statement(
    f"SELECT {pg.column(Seat, 'session')}, {pg.column(Seat, 'user')}, {pg.column(Seat, 'state')}, "
    f"{pg.column(Seat, 'epoch')}, {pg.column(Seat, 'connected')}, {pg.column(Seat, 'disconnected_at')} "
    f"FROM {pg.table(Seat)} WHERE {pg.column(Seat, 'session')} = ANY(%(sessions)s::uuid[])"
)
_SURVEY_STORED_SESSIONS = pg.Statement(
    f"SELECT {pg.column(StoredSession, 'session_key')}, {pg.column(StoredSession, 'session_data')} "
    f"FROM {pg.table(StoredSession)} WHERE {pg.column(StoredSession, 'session_key')} = ANY(%(keys)s::text[]) "
    f"AND {pg.column(StoredSession, 'expire_date')} > %(now)s"
)
_SURVEY_USERS = pg.Statement(
    f'SELECT "id", {pg.column(User, "password")}, {pg.column(User, "is_active")} '
    f'FROM {pg.table(User)} WHERE "id" = ANY(%(users)s::uuid[])'
)


def _survey_reads(session_ids: set, logins: list[tuple[object, str | None]]):
    """The survey's reads: (id, status, ends_at, chat_seq) of the sessions, (session, user, state,
    epoch, connected, disconnected_at) of their seats, and each login's problem (``login_problems``).
    On PostgreSQL with database sessions all four in one round trip of prepared statements (through
    the ORM they were four compiled queries and half of a round's CPU); elsewhere through the ORM."""
    if pg.available() and settings.SESSION_ENGINE == DB_SESSIONS:
        ids = sorted(session_ids)
        keys = sorted({key for _, key in logins if key})
        users = sorted({uuid.UUID(str(user_id)) for user_id, _ in logins})
        sessions, seats, stored, accounts = pg.run(
            [
                (_SURVEY_SESSIONS, {"sessions": ids}),
                (_SURVEY_SEATS, {"sessions": ids}),
                (_SURVEY_STORED_SESSIONS, {"keys": keys, "now": timezone.now()}),
                (_SURVEY_USERS, {"users": users}),
            ]
        )
        return sessions.rows, seats.rows, judge_logins(logins, stored.rows, accounts.rows)
    session_rows = Session.objects.filter(pk__in=session_ids).values_list("pk", "status", "ends_at", "chat_seq")
    seat_rows = Seat.objects.filter(session_id__in=session_ids).values_list(
        "session_id", "user_id", "state", "epoch", "connected", "disconnected_at"
    )
    return list(session_rows), list(seat_rows), login_problems(logins)


def waiting_state(actor: Actor, *, now: datetime | None = None) -> WaitingInfo:
    """What this waiting person should be shown now."""
    now = _now(now)
    session = _get_session(actor.session_id)
    seat = _actor_seat(session, actor, now)
    return _waiting_info(session, seat, now)


def room_snapshot(actor: Actor, *, now: datetime | None = None) -> RoomView:
    """The room as an admitted member sees it (roster, spotlight, lock, chat sequence, hands)."""
    now = _now(now)
    session = _get_session(actor.session_id)
    _member(session, actor, now)
    return _room_view(session)


def resume(actor: Actor, token: str, last_seq: int, *, now: datetime | None = None) -> Resumed:
    """A reconnected client catches up: the roster now and exactly the chat after ``last_seq``.

    ``token`` is the one from the previous connection's welcome (or this one's).
    """
    now = _now(now)
    with transaction.atomic():
        session = _lock_session(actor.session_id)
        seat = _member(session, actor, now)
        digest = _hash(token)
        known = [h for h in (seat.resume_token_hash, seat.previous_resume_token_hash) if h]
        if not any(hmac.compare_digest(digest, h) for h in known):
            raise LiveError(RESUME_INVALID)
        if seat.previous_resume_token_hash:
            seat.previous_resume_token_hash = ""  # one resume per reconnect
            seat.save(update_fields=["previous_resume_token_hash"])
        return Resumed(room=_room_view(session), chat=_chat_page(session, seat, last_seq))


# --- moderation ----------------------------------------------------------------------------------


@_command
def admit(actor: Actor, member_id: str, *, now: datetime) -> Changes:
    """Let one person in from the waiting room."""
    session = _lock_session(actor.session_id)
    moderator = _moderator(session, actor, now)
    target = _target(session, member_id)
    if target.state != SeatState.WAITING:
        raise LiveError(TARGET_NOT_WAITING)
    changes = Changes()
    _admit(target, now, moderator.user)
    target.save()
    _audit(AuditAction.ADMITTED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
    changes.admitted.append(target.member_id)
    changes.joined.append(member_view(target))
    changes.waiting_list = _waiting_list(session)
    return changes


@_command
def admit_all(actor: Actor, *, now: datetime) -> Changes:
    """Let everyone in the waiting room in, earliest first."""
    session = _lock_session(actor.session_id)
    moderator = _moderator(session, actor, now)
    changes = Changes()
    waiting = Seat.objects.select_related("user").filter(session=session, state=SeatState.WAITING)
    for target in waiting.order_by("waiting_since", "member_id"):
        _admit(target, now, moderator.user)
        target.save()
        _audit(AuditAction.ADMITTED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
        changes.admitted.append(target.member_id)
        changes.joined.append(member_view(target))
    changes.waiting_list = _waiting_list(session)
    return changes


@_command
def deny(actor: Actor, member_id: str, message: str = "", *, now: datetime) -> Changes:
    """Turn someone in the waiting room away, with an optional message. They cannot come back."""
    session = _lock_session(actor.session_id)
    moderator = _moderator(session, actor, now)
    target = _target(session, member_id)
    if target.state != SeatState.WAITING:
        raise LiveError(TARGET_NOT_WAITING)
    changes = Changes()
    SessionRemoval.objects.get_or_create(
        session=session,
        user=target.user,
        defaults={"removed_by": moderator.user, "removed_at": now, "reason": "denied"},
    )
    _out(session, target, SeatState.DENIED, now, changes)
    _audit(AuditAction.DENIED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
    changes.denied.append((target.member_id, message.strip()))
    changes.waiting_list = _waiting_list(session)
    return changes


@_command
def remove(actor: Actor, member_id: str, *, now: datetime) -> Changes:
    """Remove a participant from the session (4403); they cannot rejoin it."""
    session = _lock_session(actor.session_id)
    moderator = _moderator(session, actor, now)
    target = _target(session, member_id)
    if target.capacity != SeatCapacity.PARTICIPANT:
        raise LiveError(PERM_DENIED)
    if target.state not in {SeatState.WAITING, SeatState.ADMITTED}:
        raise LiveError(TARGET_NOT_ADMITTED)
    changes = Changes()
    was_waiting = target.state == SeatState.WAITING
    SessionRemoval.objects.get_or_create(
        session=session, user=target.user, defaults={"removed_by": moderator.user, "removed_at": now}
    )
    _out(session, target, SeatState.REMOVED, now, changes)
    _audit(AuditAction.REMOVED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
    changes.removed.append(target.member_id)
    if was_waiting:
        changes.waiting_list = _waiting_list(session)
    return changes


@_command
def end(actor: Actor, *, now: datetime) -> Changes:
    """End the session for everyone (4410)."""
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    _end(session, now, actor_id=actor.user_id)
    return Changes(ended=True)


def _end(session: Session, now: datetime, *, actor_id, code: str = "") -> None:
    session.status = SessionStatus.ENDED
    session.spotlight = None
    session.save(update_fields=["status", "spotlight"])
    Seat.objects.filter(session=session, state__in=[SeatState.WAITING, SeatState.ADMITTED]).update(
        state=SeatState.LEFT, left_at=now, hand_raised_at=None
    )
    _audit(AuditAction.ENDED, session_id=session.pk, actor_id=actor_id, code=code)


def _set_lock(actor: Actor, locked: bool, now: datetime) -> Changes:
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    changes = Changes()
    if session.locked != locked:
        session.locked = locked
        session.save(update_fields=["locked"])
        _audit(AuditAction.LOCKED if locked else AuditAction.UNLOCKED, session_id=session.pk, actor_id=actor.user_id)
    changes.locked = locked
    # Whether the waiting room opens by itself depends on the lock: tell the people waiting.
    for seat in Seat.objects.filter(session=session, state=SeatState.WAITING):
        changes.waiting_to.append((seat.member_id, _waiting_info(session, seat, now)))
    return changes


@_command
def lock(actor: Actor, *, now: datetime) -> Changes:
    """Lock the room: no new participant enters (therapists still do; reconnects keep their place)."""
    return _set_lock(actor, True, now)


@_command
def unlock(actor: Actor, *, now: datetime) -> Changes:
    return _set_lock(actor, False, now)


@_command
def mute(actor: Actor, member_id: str, hard: bool = False, *, now: datetime) -> Changes:
    """Mute one participant. Hard: they cannot unmute until a therapist releases it."""
    session, target = _moderated_participant(actor, member_id, now)
    target.mic = False
    target.hard_muted = target.hard_muted or hard
    target.save(update_fields=["mic", "hard_muted"])
    _audit(
        AuditAction.HARD_MUTED if hard else AuditAction.MUTED,
        session_id=session.pk,
        actor_id=actor.user_id,
        subject_id=target.user_id,
    )
    return Changes(updated=[member_view(target)], notices=[Notice(target.member_id, "muted", hard)])


@_command
def mute_all(actor: Actor, *, now: datetime) -> Changes:
    """Mute every participant in the room (softly: each may unmute)."""
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    changes = Changes()
    targets = Seat.objects.select_related("user").filter(
        session=session, state=SeatState.ADMITTED, capacity=SeatCapacity.PARTICIPANT
    )
    for target in targets.order_by("admitted_at", "member_id"):
        target.mic = False
        target.save(update_fields=["mic"])
        changes.updated.append(member_view(target))
        changes.notices.append(Notice(target.member_id, "muted"))
    _audit(AuditAction.MUTED, session_id=session.pk, actor_id=actor.user_id, code="all")
    return changes


@_command
def release_mute(actor: Actor, member_id: str, *, now: datetime) -> Changes:
    """Release a hard mute: the participant may unmute again (they stay muted until they do)."""
    session, target = _moderated_participant(actor, member_id, now)
    target.hard_muted = False
    target.save(update_fields=["hard_muted"])
    _audit(AuditAction.MUTE_RELEASED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
    return Changes(updated=[member_view(target)], notices=[Notice(target.member_id, "mute_released")])


@_command
def ask_unmute(actor: Actor, member_id: str, *, now: datetime) -> Changes:
    """Ask a participant to unmute; only they can turn their microphone on."""
    session, target = _moderated_participant(actor, member_id, now)
    _audit(AuditAction.UNMUTE_ASKED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
    return Changes(notices=[Notice(target.member_id, "unmute_requested")])


@_command
def camera_off(actor: Actor, member_id: str, hard: bool = False, *, now: datetime) -> Changes:
    """Turn a participant's camera off. Hard: they cannot turn it on until it is released."""
    session, target = _moderated_participant(actor, member_id, now)
    target.camera = False
    target.camera_blocked = target.camera_blocked or hard
    target.save(update_fields=["camera", "camera_blocked"])
    _audit(
        AuditAction.CAMERA_OFF,
        session_id=session.pk,
        actor_id=actor.user_id,
        subject_id=target.user_id,
        code="hard" if hard else "",
    )
    return Changes(updated=[member_view(target)], notices=[Notice(target.member_id, "camera_off", hard)])


@_command
def release_camera(actor: Actor, member_id: str, *, now: datetime) -> Changes:
    session, target = _moderated_participant(actor, member_id, now)
    target.camera_blocked = False
    target.save(update_fields=["camera_blocked"])
    _audit(AuditAction.CAMERA_RELEASED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
    return Changes(updated=[member_view(target)], notices=[Notice(target.member_id, "camera_released")])


@_command
def spotlight(actor: Actor, member_id: str | None, *, now: datetime) -> Changes:
    """Spotlight one member for everyone (None clears it)."""
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    target = _admitted_target(session, member_id, participant_only=False) if member_id else None
    session.spotlight = target
    session.save(update_fields=["spotlight"])
    _audit(
        AuditAction.SPOTLIGHT,
        session_id=session.pk,
        actor_id=actor.user_id,
        subject_id=target.user_id if target else None,
        code="" if target else "cleared",
    )
    return Changes(spotlight_changed=True, spotlight=target.member_id if target else None)


@_command
def lower_hand_of(actor: Actor, member_id: str, *, now: datetime) -> Changes:
    """A therapist lowers one raised hand."""
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    target = _admitted_target(session, member_id, participant_only=False)
    changes = Changes()
    if target.hand_raised_at is not None:
        target.hand_raised_at = None
        target.save(update_fields=["hand_raised_at"])
        _audit(AuditAction.HAND_LOWERED, session_id=session.pk, actor_id=actor.user_id, subject_id=target.user_id)
        changes.updated.append(member_view(target))
        changes.hands = _hands(session)
    return changes


@_command
def lower_all_hands(actor: Actor, *, now: datetime) -> Changes:
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    changes = Changes()
    raised = Seat.objects.select_related("user").filter(
        session=session, state=SeatState.ADMITTED, hand_raised_at__isnull=False
    )
    for target in raised.order_by("hand_raised_at", "member_id"):
        target.hand_raised_at = None
        target.save(update_fields=["hand_raised_at"])
        changes.updated.append(member_view(target))
    _audit(AuditAction.HAND_LOWERED, session_id=session.pk, actor_id=actor.user_id, code="all")
    changes.hands = ()
    return changes


@_command
def waiting_message(actor: Actor, text: str, member_id: str | None = None, *, now: datetime) -> Changes:
    """A therapist's message to everyone in the waiting room, or to one person there."""
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    text = text.strip()
    changes = Changes()
    if member_id is not None:
        target = _target(session, member_id)
        if target.state != SeatState.WAITING:
            raise LiveError(TARGET_NOT_WAITING)
        targets = [target]
    else:
        session.waiting_room_message = text  # shown to people who start waiting later too
        session.save(update_fields=["waiting_room_message"])
        targets = list(Seat.objects.filter(session=session, state=SeatState.WAITING))
    for target in targets:
        # A message to everyone replaces what each was told before; one to a person is theirs.
        target.waiting_message = text if member_id is not None else ""
        target.save(update_fields=["waiting_message"])
    if member_id is not None:
        changes.waiting_to.append((targets[0].member_id, _waiting_info(session, targets[0], now)))
    else:
        changes.waiting_room = WaitingInfo(opens_at=_opens_at(session, now), message=text)
    _audit(
        AuditAction.WAITING_MESSAGE,
        session_id=session.pk,
        actor_id=actor.user_id,
        subject_id=targets[0].user_id if member_id is not None else None,
    )
    return changes


# --- the person's own state ----------------------------------------------------------------------


@_command
def set_media(actor: Actor, mic: bool, camera: bool, *, now: datetime) -> Changes:
    """Record the person's own microphone and camera state; unmuting while hard-muted is refused."""
    session = _lock_session(actor.session_id)
    seat = _member(session, actor, now)
    if mic and seat.hard_muted:
        raise LiveError(MUTE_HARD)
    if camera and seat.camera_blocked:
        raise LiveError(CAMERA_BLOCKED)
    if (seat.mic, seat.camera) == (mic, camera):
        return Changes()
    seat.mic, seat.camera = mic, camera
    seat.save(update_fields=["mic", "camera"])
    return Changes(updated=[member_view(seat)])


@_command
def raise_hand(actor: Actor, *, now: datetime) -> Changes:
    """Raise one's hand; the therapists see the queue in the order hands went up."""
    session = _lock_session(actor.session_id)
    seat = _member(session, actor, now)
    if seat.hand_raised_at is not None:
        return Changes()
    seat.hand_raised_at = now
    seat.save(update_fields=["hand_raised_at"])
    return Changes(updated=[member_view(seat)], hands=_hands(session))


@_command
def lower_hand(actor: Actor, *, now: datetime) -> Changes:
    session = _lock_session(actor.session_id)
    seat = _member(session, actor, now)
    if seat.hand_raised_at is None:
        return Changes()
    seat.hand_raised_at = None
    seat.save(update_fields=["hand_raised_at"])
    return Changes(updated=[member_view(seat)], hands=_hands(session))


# --- chat ----------------------------------------------------------------------------------------


def _chat_view(message: ChatMessage) -> ChatView:
    return ChatView(
        seq=message.seq,
        author=message.sender.member_id,
        text="" if message.deleted_at else message.text,
        thread=message.thread_participant.member_id if message.thread_participant_id else None,
        created_at=message.created_at,
        deleted=message.deleted_at is not None,
    )


def _visible_chat(session: Session, seat: Seat):
    messages = ChatMessage.objects.filter(session=session).select_related("sender", "thread_participant")
    if seat.capacity == SeatCapacity.MODERATOR:
        return messages  # the room and every private thread
    if seat.capacity == SeatCapacity.PARTICIPANT:
        return messages.filter(Q(thread_participant__isnull=True) | Q(thread_participant=seat))
    return messages.filter(thread_participant__isnull=True)


def _chat_page(session: Session, seat: Seat, after_seq: int, limit: int = CHAT_PAGE_SIZE) -> ChatPage:
    rows = list(_visible_chat(session, seat).filter(seq__gt=after_seq).order_by("seq")[: limit + 1])
    return ChatPage(messages=tuple(_chat_view(m) for m in rows[:limit]), more=len(rows) > limit)


# Chat in the common case (a new message to the room, or a participant's to the therapists), for a
# batch of messages at once: one call of rooms_store_chats() (migration 0004, PostgreSQL) takes the
# sessions' row locks in id order, then stores each message with every check and moves the session's
# counter only if it stored it. One statement, prepared once per connection: one round trip and one
# result for the whole batch, where the ORM path takes six per message. Its parameters are text
# (arrays as PostgreSQL's literals), built once here and sent as they are: by rooms.pg.run below, and by
# the realtime service's own connection on its event loop (signaling.pg_loop, signaling.chat_writer).
CHAT_STORE_NAME = "rooms_store_chats"
CHAT_STORE_SQL = (
    "SELECT batch_index, stored_seq, sender_member_id FROM rooms_store_chats("
    "$1::uuid[], $2::uuid[], $3::uuid[], $4::integer[], $5::text[], $6::text[], $7::boolean[], "
    "$8::timestamptz, $9, $10, $11, $12, $13)"
)
CHAT_STORE = pg.Statement(CHAT_STORE_SQL)


def _array_literal(items) -> str:
    """PostgreSQL's array literal of plain items (uuids, integers, t/f): nothing in them needs quoting."""
    return "{" + ",".join(items) + "}"


def _text_array_literal(texts) -> str:
    """PostgreSQL's array literal of text: every element quoted, with backslash and quote escaped."""
    return "{" + ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in texts) + "}"


@dataclass(frozen=True)
class ChatRequest:
    """One chat message to store: who sends it, the client's id for it, and where it goes."""

    actor: Actor
    client_id: str
    text: str
    to_therapists: bool = False
    thread: str | None = None


@dataclass(frozen=True)
class ChatStoreCall:
    """One call of rooms_store_chats() for the common-case messages of a batch, and how to read its rows."""

    size: int  # messages in the batch
    eligible: tuple[int, ...]  # the positions in the batch this call stores
    texts: tuple[str, ...]
    private: tuple[bool, ...]
    now: datetime
    parameters: tuple[str, ...]  # $1..$13 of CHAT_STORE_SQL, as text

    def views(self, rows) -> list[ChatView | None]:
        """The batch's messages as stored (rows: position from 1, number, author), None where not."""
        views: list[ChatView | None] = [None] * self.size
        for position, seq, author in rows:
            k = int(position) - 1
            views[self.eligible[k]] = ChatView(
                seq=int(seq),
                author=author,
                text=self.texts[k],
                thread=author if self.private[k] else None,
                created_at=self.now,
                deleted=False,
            )
        return views


def chat_store_call(requests: list[ChatRequest], now: datetime) -> ChatStoreCall | None:
    """The store call for the messages of ``requests`` that the common case can take (None: none can).

    The others (a therapist's private reply, an empty text), and any the call does not store (a
    resend, a refusal), are answered exactly by the general path (``answer_chats``)."""
    eligible = tuple(i for i, r in enumerate(requests) if r.thread is None and r.text.strip())
    if not eligible:
        return None
    batch = [requests[i] for i in eligible]
    texts = tuple(r.text.strip() for r in batch)
    actors = [r.actor.as_text for r in batch]
    parameters = (
        _array_literal(str(uuid.uuid4()) for _ in batch),
        _array_literal(a[0] for a in actors),
        _array_literal(a[1] for a in actors),
        _array_literal(a[2] for a in actors),
        _text_array_literal(r.client_id for r in batch),
        _text_array_literal(texts),
        _array_literal("t" if r.to_therapists else "f" for r in batch),
        now.isoformat(),
        SessionStatus.ENDED.value,
        SessionStatus.CANCELLED.value,
        SeatState.ADMITTED.value,
        SeatCapacity.PARTICIPANT.value,
        SeatCapacity.MODERATOR.value,
    )
    return ChatStoreCall(len(requests), eligible, texts, tuple(r.to_therapists for r in batch), now, parameters)


def _store_in_one_pass(requests: list[ChatRequest], now: datetime) -> list[ChatView | None]:
    """Store the common-case messages of ``requests``, in order, in one statement: in the caller's
    transaction if there is one, else (autocommit) in its own. None for a message not stored here."""
    call = chat_store_call(requests, now) if connection.vendor == "postgresql" else None
    if call is None:
        return [None] * len(requests)
    # Prepared and bound server-side (rooms.pg.run): Django's cursors bind client-side and never
    # prepare. Errors still become Django's (IntegrityError, OperationalError ...).
    (stored,) = pg.run([(CHAT_STORE, call.parameters)])
    return call.views(stored.rows)


def post_chats(requests: list[ChatRequest], *, now: datetime | None = None) -> list[ChatPosted | LiveError]:
    """``post_chat`` for several messages (from any sessions; one per connection at a time, so their
    relative order is the order they reached the database): the common ones in one transaction and
    one round trip (``_store_in_one_pass``), numbered in the order given, then each other one by the
    general path. The answers come in the order given; a refusal is returned in its place, not
    raised: it concerns that message only."""
    now = _now(now)
    try:
        if connection.in_atomic_block:
            with transaction.atomic():  # a savepoint: a failed batch leaves the caller's transaction usable
                views = _store_in_one_pass(requests, now)
        else:
            views = _store_in_one_pass(requests, now)
    except IntegrityError:
        # A race the checks could not see (the same client id from another process at the same
        # moment): nothing of the batch was kept; each message is answered on its own below.
        views = [None] * len(requests)
    return answer_chats(requests, views, now=now)


def answer_chats(
    requests: list[ChatRequest], views: list[ChatView | None], *, now: datetime
) -> list[ChatPosted | LiveError]:
    """The answers to ``requests`` once the one-pass store has run: its ``views`` where it stored a
    message, the general path's answer (a resend, a refusal, a private reply) where it did not."""
    results: list[ChatPosted | LiveError] = []
    for request, view in zip(requests, views, strict=True):
        if view is not None:
            results.append(ChatPosted(message=view, created=True))
            continue
        try:
            results.append(
                _post_chat_one_by_one(
                    request.actor,
                    request.client_id,
                    request.text,
                    to_therapists=request.to_therapists,
                    thread=request.thread,
                    now=now,
                )
            )
        except LiveError as exc:
            results.append(exc)
    return results


def post_chat(
    actor: Actor,
    client_id: str,
    text: str,
    *,
    to_therapists: bool = False,
    thread: str | None = None,
    now: datetime | None = None,
) -> ChatPosted:
    """Store a chat message (before anyone receives it) and give it the session's next sequence number.

    Idempotent by ``client_id``: a resend returns the stored message, unchanged.
    A participant writes to the room, or privately to the therapists
    (``to_therapists``); a therapist writes to the room or into one participant's
    private thread (``thread``). Observers only read. A refusal raises ``LiveError``.
    """
    (result,) = post_chats([ChatRequest(actor, client_id, text, to_therapists, thread)], now=now)
    if isinstance(result, LiveError):
        raise result
    return result


@_command
def _post_chat_one_by_one(
    actor: Actor,
    client_id: str,
    text: str,
    *,
    to_therapists: bool = False,
    thread: str | None = None,
    now: datetime,
) -> ChatPosted:
    """``post_chat`` through the ORM, with the exact answer for everything the batch does not store
    (a resend, each refusal, a therapist's private reply, another database); refusals are audited."""
    text = text.strip()
    session = _lock_session(actor.session_id)
    seat = _member(session, actor, now)
    existing = (
        ChatMessage.objects.select_related("sender", "thread_participant")
        .filter(session=session, sender=seat, client_id=client_id)
        .first()
    )
    if existing is not None:
        return ChatPosted(message=_chat_view(existing), created=False)
    if seat.capacity == SeatCapacity.OBSERVER:
        raise LiveError(CHAT_NOT_ALLOWED)
    thread_seat = None
    if seat.capacity == SeatCapacity.PARTICIPANT:
        if thread is not None:
            raise LiveError(CHAT_NOT_ALLOWED)  # no participant-to-participant private messages
        thread_seat = seat if to_therapists else None
    else:
        if to_therapists:
            raise LiveError(CHAT_NOT_ALLOWED)
        if thread is not None:
            thread_seat = _target(session, thread)
            if thread_seat.capacity != SeatCapacity.PARTICIPANT:
                raise LiveError(CHAT_NOT_ALLOWED)
    if not text:
        raise LiveError(CHAT_EMPTY)
    session.chat_seq += 1
    session.save(update_fields=["chat_seq"])
    message = ChatMessage.objects.create(
        session=session,
        seq=session.chat_seq,
        sender=seat,
        client_id=client_id,
        text=text,
        thread_participant=thread_seat,
        created_at=now,
    )
    return ChatPosted(message=_chat_view(message), created=True)


@_command
def delete_chat(actor: Actor, seq: int, *, now: datetime) -> ChatView:
    """A therapist deletes a message for everyone: the number stays, the text goes."""
    session = _lock_session(actor.session_id)
    _moderator(session, actor, now)
    message = (
        ChatMessage.objects.select_related("sender", "thread_participant").filter(session=session, seq=seq).first()
    )
    if message is None:
        raise LiveError(TARGET_NOT_FOUND)
    if message.deleted_at is None:
        message.deleted_at = now
        message.deleted_by_id = actor.user_id
        message.text = ""  # the text is gone for good, not only hidden
        message.save(update_fields=["deleted_at", "deleted_by", "text"])
        _audit(
            AuditAction.CHAT_DELETED,
            session_id=session.pk,
            actor_id=actor.user_id,
            subject_id=message.sender.user_id,
            code=str(seq),
        )
    return _chat_view(message)


def chat_history(actor: Actor, after_seq: int, *, now: datetime | None = None) -> ChatPage:
    """The chat after ``after_seq`` that this person may read (a page of ``CHAT_PAGE_SIZE``)."""
    now = _now(now)
    session = _get_session(actor.session_id)
    seat = _member(session, actor, now)
    return _chat_page(session, seat, after_seq)


# --- reads ---------------------------------------------------------------------------------------


def roster(actor: Actor, *, now: datetime | None = None) -> RoomView:
    """The admitted members (display names only), for an admitted member."""
    return room_snapshot(actor, now=now)


def waiting_list(actor: Actor, *, now: datetime | None = None) -> tuple[WaitingView, ...]:
    """Who is waiting, since when: for the session's therapists."""
    now = _now(now)
    session = _get_session(actor.session_id)
    _moderator(session, actor, now)
    return _waiting_list(session)


def signal_route(actor: Actor, target_member_id: str, *, now: datetime | None = None) -> SignalRoute:
    """May this member send WebRTC signaling to that one? Both must be admitted in this session.

    The recipient is "polite" (perfect negotiation) when its member id sorts
    before the sender's: each pair gets one polite and one impolite side.
    """
    now = _now(now)
    session = _get_session(actor.session_id)
    seat = _member(session, actor, now)
    target = Seat.objects.filter(session=session, member_id=target_member_id, state=SeatState.ADMITTED).first()
    if target is None or target.pk == seat.pk:
        raise LiveError(TARGET_NOT_FOUND)
    return SignalRoute(target=target.member_id, polite=target.member_id < seat.member_id)
