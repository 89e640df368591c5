"""The session WebSocket: one thin consumer per connection, at /ws/sessions/<uuid>/.

It parses a frame (signaling.protocol), checks the sender may send it, calls a
handler from the explicit table in signaling.handlers (which calls rooms.live once,
through signaling.db), and fans the result out through the channel
layer with one internal event type (signaling.fanout). A client's ``type`` is a key
into that table and nothing else: never a method name, never a layer event type.

Everything a connection does runs in order in one dispatch loop, from one queue:
client frames, layer deliveries, its own full check (``tick``: when signaling.watch,
the one periodic check of the process, says it is due, or when the waiting room
opens) and, in an SFU session, the events Janus pushes to its handles
(signaling.handlers.sfu), so its state needs no locks. Database calls go through
signaling.db (no per-call connection cleanup).
Messages the loop accepts are listed in ``dispatch``; anything else is ignored.

Close codes (docs/protocol.md): 1003 binary frame, 1008 abuse, 1009 too large,
4401 logged out or disabled, 4403 removed or denied, 4409 replaced by a newer tab,
4410 session ended. Refused handshakes close before accept (HTTP 403) and are
audited. An unhandled exception (1011) is a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable

from autobahn.exception import Disconnected
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError

from rooms import live
from rooms.models import SeatCapacity, SeatState
from signaling import db, fanout, frames, groups, wire
from signaling import protocol as p
from signaling.batches import Batches, per_loop
from signaling.handlers import HANDLERS, WAITING_ROOM_TYPES, sfu
from signaling.hub import get_hub
from signaling.watch import WATCHER

log = logging.getLogger(__name__)

# Domain codes that end the connection, and how.
CLOSE_FOR_CODE = {
    "auth.logged_out": 4401,
    "auth.inactive": 4401,
    live.SESSION_REMOVED: 4403,
    live.CONN_REPLACED: 4409,
    live.SESSION_ENDED: 4410,
    live.SESSION_NOT_FOUND: 4410,
    live.SEAT_LEFT: 1000,
}
# Bad frames in a row (malformed, unknown, forbidden) before the connection is closed with 1008.
MAX_BAD_FRAMES = 20
# Rate-limited frames within ABUSE_WINDOW seconds before 1008: a client that keeps flooding.
MAX_RATE_REFUSALS = 60
ABUSE_WINDOW = 60.0

# How long a checked signaling route (both members admitted in this session) serves ICE candidates.
ROUTE_SECONDS = 5.0

# The loop's message type for an event Janus pushed to this connection's handles (never from a client).
JANUS_EVENT = "janus.event"
# The loop's message type for a hub delivery that waited in this connection's queue.
INBOX = "inbox"
# Where a layer message keeps its frame's wire bytes once a local receiver has built them.
WIRE_FRAME = "_wire"
# The frequent client messages whose handling need not hold deliveries back (see dispatch): their
# answers concern the sender's own message only. Every other type holds them (history and resume
# hand out chat up to now, a leave or a moderator command may close the connection first).
UNHELD_TYPES = frozenset({"chat.send", "signal.description", "signal.candidate", "sfu.trickle", "ping"})

# Expiry timers of dropped seats outlive their consumer; kept here so they are not garbage collected.
BACKGROUND: set[asyncio.Task] = set()

# What a channel layer raises when its backend (Redis) is unreachable. The layer is at-most-once
# anyway: a failed fan-out is logged, the state is in the database, and clients resynchronise.
LAYER_ERRORS = (RedisError, OSError, TimeoutError)


class TokenBucket:
    """``rate`` frames per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.last = clock()

    def take(self) -> float:
        """0 when a frame may pass, else the seconds until one may."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


# Most joins in one call: one transaction, holding its sessions' row locks until it commits.
MAX_JOIN_BATCH = 32


def joins() -> Batches:
    """This event loop's joins, batched (``rooms.live.join_many`` in the database thread): in a burst
    of handshakes, the joins that arrive while one call runs are decided together in the next."""
    return per_loop(
        "joins", lambda: Batches(lambda batch: db.run(live.join_many, batch), name="joins", max_batch=MAX_JOIN_BATCH)
    )


class SessionConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actor: live.Actor | None = None
        self.session_id = None
        self.member_id: str | None = None
        self.capacity: str | None = None
        self.state: str | None = None  # SeatState.WAITING or SeatState.ADMITTED
        self.opens_at = None  # when auto-admission starts, for someone waiting
        self.closing = False
        self.in_groups: set[str] = set()
        self.bad_frames = 0
        self.rate_refusals: deque[float] = deque()
        self.bucket = TokenBucket(settings.WS_RATE_PER_SECOND, settings.WS_RATE_BURST)
        self.candidates: dict[str, int] = {}  # ICE candidates sent per peer in the current negotiation
        self.routes: dict[str, tuple[live.SignalRoute, float]] = {}  # checked signaling routes, until when
        # Chat this connection has handled: every number up to chat_mark, and those above it in chat_sent.
        # The periodic check pushes what is missing (a delivery the layer lost), never twice.
        self.chat_mark: int | None = None
        self.chat_sent: set[int] = set()
        self._tick_queued = False  # a tick waits in the queue already
        self._tick_timer: asyncio.TimerHandle | None = None  # the waiting room's opening
        # Media (signaling.handlers.sfu): the session's path once admitted; in an SFU session its
        # Janus room and this connection's MemberLink, whose Janus events queue up for the loop.
        self.media = None
        self.sfu_room = None
        self.link = None
        # The loop's one queue (see __call__). Layer messages come from the process's hub
        # (signaling.hub): written at once while this connection is idle, queued while it is busy (or
        # when they need its loop), in order.
        self._events: asyncio.Queue | None = None
        self._inbox_pending = 0  # queued hub messages not yet handled: later ones queue behind them
        # While this is above 0 (the handshake, an admission, a tick, an answer that hands the client a
        # range of chat) deliveries wait in the queue: they must not overtake what is being sent.
        self._held = 0

    # --- the loop ------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        # AsyncConsumer.__call__, with one source: the ASGI messages (the socket), the hub's queued
        # deliveries, this connection's own check and Janus's events all go through one queue, in
        # order. Channels' await_many_dispatch waited on one task per source instead: a fresh task
        # and an asyncio.wait over all of them for every client frame, and three more turns of the
        # loop before the frame was handled (docs/performance.md). No layer channel of its own: the
        # process's hub receives for every local connection; the name only tells senders apart.
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = f"conn.{uuid.uuid4().hex}"
        self.base_send = send
        # Daphne's socket, for frames written below ASGI (signaling.wire); None elsewhere (tests' communicator).
        self.socket = scope.get(wire.SCOPE_KEY)
        self._events, pump = self._queue_of(receive)
        try:
            while True:
                await self.dispatch(await self._events.get())
        except StopConsumer:
            pass
        finally:
            if pump is not None:
                pump.cancel()
            if self._tick_timer is not None:
                self._tick_timer.cancel()
            # Whatever ended the consumer, the hub must not keep handing it messages.
            hub = get_hub(self.channel_layer)
            empty = hub.forget(self, self.in_groups)
            self.in_groups = set()
            if empty:
                with contextlib.suppress(*LAYER_ERRORS):
                    await hub.leave_empty(empty)

    @staticmethod
    def _queue_of(receive) -> tuple[asyncio.Queue, asyncio.Task | None]:
        """The queue the loop reads: the ASGI server's own when ``receive`` is an asyncio queue's
        ``get`` (daphne's, and Channels' test communicator's), so a client frame is one wakeup away;
        for any other ``receive``, a queue of ours that a task fills from it."""
        queue = getattr(receive, "__self__", None)
        if isinstance(queue, asyncio.Queue) and getattr(receive, "__name__", "") == "get":
            return queue, None
        queue = asyncio.Queue()

        async def pump() -> None:
            while True:
                queue.put_nowait(await receive())

        return queue, asyncio.get_running_loop().create_task(pump(), name="asgi receive")

    def take(self, message: dict) -> Awaitable[None] | None:
        """A layer message for this connection, from the hub. Plain frames go out at once when the
        connection is idle; otherwise, and for anything that needs this connection's loop (a close,
        an admission, moderation at the SFU), the message waits in the queue, in order.

        Not a coroutine: the common case (a chat frame for an idle connection, written straight to
        its socket) is done here, without one per receiver. What must wait for something (a frame
        going through ASGI) comes back as an awaitable, which the hub awaits before the next receiver.
        """
        if self._held or self._inbox_pending or "control" in message or "close" in message:
            self._inbox_pending += 1
            self._events.put_nowait({"type": INBOX, "message": message})
            return None
        if not self._shows(message) or not self._chat_is_new(message) or not message.get("frame"):
            return None
        if self._write_prepared(message):
            return None
        return self._send_through_asgi(message["frame"])

    async def dispatch(self, message: dict) -> None:
        # Client frames do not hold deliveries back (a chat send awaiting the database would make every
        # delivery to its sender take the slow path, which under load feeds on itself: measured, rate20
        # p99 13.7 s); everything else does, and so do client messages not in UNHELD_TYPES (on_frame).
        held = message.get("type") != "websocket.receive"
        self._held += held
        try:
            await self._dispatch(message)
        finally:
            self._held -= held

    async def _dispatch(self, message: dict) -> None:
        # An explicit table instead of getattr(type): and no close_old_connections() hop per message
        # (AsyncConsumer's default): signaling.db cleans connections up when it can matter.
        kind = message.get("type")
        if kind == "websocket.receive":
            await self.on_frame(message)
        elif kind == INBOX:
            try:
                await self.on_deliver(message["message"])
            finally:
                self._inbox_pending -= 1
        elif kind == "tick":
            await self.on_tick()
        elif kind == JANUS_EVENT:
            await sfu.on_janus(self, message["handle"], message["event"])
        elif kind == "websocket.connect":
            await self.on_connect()
        elif kind == "websocket.disconnect":
            await self.on_disconnect()
            raise StopConsumer()
        else:
            log.warning("ignored a layer message of an unknown type")

    def queue_janus_event(self, handle: str, event) -> None:
        """Called by Janus's reader (media.broker): handled later, in order, by this connection's loop."""
        if not self.closing and self._events is not None:
            self._events.put_nowait({"type": JANUS_EVENT, "handle": handle, "event": event})

    def _queue_tick(self) -> None:
        if not self._tick_queued and not self.closing and self._events is not None:
            self._tick_queued = True
            self._events.put_nowait({"type": "tick"})

    def _schedule_tick(self) -> None:
        """(Re)arm the timer of this connection's own check: the waiting room's opening, if it waits."""
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        delay = self._tick_delay()
        if delay is not None:
            self._tick_timer = asyncio.get_running_loop().call_later(delay, self._queue_tick)

    def _tick_delay(self) -> float | None:
        # Only the waiting room's opening is timed per connection; the rest is signaling.watch's.
        if self.actor is None or self.closing or self.state != SeatState.WAITING or self.opens_at is None:
            return None
        delay = (self.opens_at - timezone.now()).total_seconds()
        # Once it has passed, the tick at that moment let the person in, or could not (a locked room,
        # the database down): the process's periodic check then asks again for everyone waiting.
        return delay + 0.05 if delay > -0.05 else None

    def probe(self) -> live.Probe | None:
        """What this connection believes, for the process's periodic check (None: nothing to check)."""
        if self.actor is None or self.closing:
            return None
        session_key = getattr(self.scope.get("session"), "session_key", None)
        return live.Probe(self.actor, session_key, self.state == SeatState.WAITING, self.chat_mark)

    def request_check(self) -> None:
        """signaling.watch says this connection needs its full check."""
        self._queue_tick()

    # --- handshake -----------------------------------------------------------------------------

    async def on_connect(self) -> None:
        user = self.scope.get("user")
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        if p.SUBPROTOCOL not in self.scope.get("subprotocols", []):
            await self._refuse(user, "protocol.subprotocol")
            return
        if user is None or not user.is_authenticated:
            await self._refuse(None, "auth.required")
            return
        # Join the broadcast groups this person may need before the seat is read, so nothing
        # published between the read and the subscription is missed; the extras go after.
        provisional = [groups.room(self.session_id)]
        provisional.append(
            groups.moderators(self.session_id) if user.is_clinic_staff else groups.waiting(self.session_id)
        )
        try:
            await self._join_groups(provisional)
        except LAYER_ERRORS:
            await self._leave_groups(sorted(self.in_groups))
            await self._unavailable("channel layer unavailable")
            return
        try:
            result = await joins().submit((self.session_id, user))
        except live.LiveError as exc:
            await self._leave_groups(sorted(self.in_groups))
            if exc.code == "room.locked":
                # The lock keeps people out, not unheard: the therapists see the knock.
                knock = p.build(p.Knock, name=user.display_name)
                await self._layer_send(groups.moderators(self.session_id), fanout.event(fanout.MODERATORS, knock))
            await self.close()
            return
        except DatabaseError:
            await self._leave_groups(sorted(self.in_groups))
            await self._unavailable("database unavailable")
            return

        self.actor = live.Actor(self.session_id, user.pk, result.epoch)
        self.member_id = result.member.member_id
        self.capacity = result.capacity
        self.state = result.state
        self.opens_at = result.waiting.opens_at if result.waiting else None
        if result.room is not None:
            self.chat_mark = result.room.chat_seq  # the client asks chat.history for what came before
        try:
            await self._join_groups([groups.member(self.session_id, self.member_id)])
            await self._settle_groups()
        except LAYER_ERRORS:
            # The seat is taken but this connection cannot receive anything: refuse it; the seat
            # goes through the usual grace period when its disconnect is recorded.
            await self._unavailable("channel layer unavailable")
            return
        await self.accept(p.SUBPROTOCOL)
        await self.reply(frames.welcome(result))
        if result.room is not None:
            await sfu.admitted(self, result.room)
        if result.waiting_list is not None:
            await self.reply(frames.waiting_list(result.waiting_list))
        if result.replaced:
            older = fanout.event(fanout.ANY, close=4409, below_epoch=result.epoch)
            await self._layer_send(groups.member(self.session_id, self.member_id), older)
        await self.publish(result.changes, exclude=self.channel_name)
        WATCHER.add(self)
        self._schedule_tick()
        log.info("joined session=%s member=%s state=%s", self.session_id.hex, self.member_id, self.state)

    async def _unavailable(self, why: str) -> None:
        """A backing service is down: fail fast with a clear, retryable answer (1013: try again later)."""
        log.warning("connection refused: %s", why, exc_info=True)
        await self.accept(p.SUBPROTOCOL)
        await self.reply(p.error("server.unavailable"))
        await self._close(1013)

    async def _layer_send(self, group: str, message: dict) -> None:
        try:
            await fanout.send(self.channel_layer, group, message)
        except LAYER_ERRORS:
            log.warning("fan-out failed: channel layer unavailable", exc_info=True)

    async def _refuse(self, user, code: str) -> None:
        user_id = user.pk if user is not None and user.is_authenticated else None
        try:
            await db.run(live.refuse_handshake, self.session_id, user_id, code)
        except DatabaseError:
            log.warning("could not audit a refused handshake", exc_info=True)
        await self.close()

    def _wanted_groups(self) -> set[str]:
        wanted = {groups.member(self.session_id, self.member_id)}
        if self.state == SeatState.ADMITTED:
            wanted.add(groups.room(self.session_id))
            if self.capacity == SeatCapacity.MODERATOR:
                wanted.add(groups.moderators(self.session_id))
        else:
            wanted.add(groups.waiting(self.session_id))
        return wanted

    async def _settle_groups(self) -> None:
        wanted = self._wanted_groups()
        await self._join_groups(sorted(wanted - self.in_groups))
        await self._leave_groups(sorted(self.in_groups - wanted))

    async def _join_groups(self, names: list[str]) -> None:
        hub = get_hub(self.channel_layer)
        for name in names:
            await hub.join(name, self)
            self.in_groups.add(name)

    async def _leave_groups(self, names: list[str]) -> None:
        hub = get_hub(self.channel_layer)
        for name in names:
            self.in_groups.discard(name)
            try:
                await hub.leave(name, self)
            except Exception:  # a failed discard must not stop the others (the layer expires it later)
                log.warning("group_discard failed", exc_info=True)

    # --- frames from the client ----------------------------------------------------------------

    async def on_frame(self, message: dict) -> None:
        if self.closing or self.actor is None:
            return
        text = message.get("text")
        if text is None:
            await self._close(1003)
            return
        if len(text) > p.MAX_FRAME_BYTES or (
            len(text) * 4 > p.MAX_FRAME_BYTES and len(text.encode()) > p.MAX_FRAME_BYTES
        ):
            await self._close(1009)
            return
        wait = self.bucket.take()
        if wait:
            await self._rate_limited(wait)
            return
        try:
            msg = p.parse_client_frame(text)
        except p.ProtocolError as exc:
            if exc.code == "protocol.too_large":
                await self._close(1009)
                return
            await self._bad_frame(exc.code, exc.re, exc.detail)
            return
        if msg.moderator_only and self.capacity != SeatCapacity.MODERATOR:
            await self._call_quietly(live.refuse_command, live.PERM_DENIED)
            await self._bad_frame(live.PERM_DENIED, msg.id)
            return
        if self.state == SeatState.WAITING and msg.type not in WAITING_ROOM_TYPES:
            await self.reply(p.error(live.PERM_WAITING, re=msg.id))
            return
        self.bad_frames = 0
        held = msg.type not in UNHELD_TYPES
        self._held += held
        try:
            await HANDLERS[msg.type](self, msg)
        except live.LiveError as exc:
            await self.reply(p.error(exc.code, re=msg.id, detail=exc.detail))
            if exc.code in CLOSE_FOR_CODE:
                await self._close(CLOSE_FOR_CODE[exc.code])
        except LAYER_ERRORS:
            log.warning("channel layer error handling %s", msg.type, exc_info=True)
            await self.reply(p.error("server.retry", re=msg.id))
        except DatabaseError:
            # PostgreSQL restarting: one failed operation, reported as retryable (chat sends are idempotent).
            log.warning("database error handling %s", msg.type, exc_info=True)
            await self.reply(p.error("server.retry", re=msg.id))
        finally:
            self._held -= held

    async def _bad_frame(self, code: str, re: str | None, detail: str = "") -> None:
        self.bad_frames += 1
        await self.reply(p.error(code, re=re, detail=detail))
        if self.bad_frames >= MAX_BAD_FRAMES:
            await self._close(1008)

    async def _rate_limited(self, wait: float) -> None:
        now = time.monotonic()
        self.rate_refusals.append(now)
        while self.rate_refusals and self.rate_refusals[0] < now - ABUSE_WINDOW:
            self.rate_refusals.popleft()
        if len(self.rate_refusals) > MAX_RATE_REFUSALS:
            await self._close(1008)
            return
        await self.reply(p.error("rate.limited", retry_after_ms=max(1, int(wait * 1000 + 0.999))))

    async def _call_quietly(self, fn, *args) -> None:
        try:
            await db.run(fn, self.actor, *args)
        except DatabaseError:
            log.warning("could not audit a refused command", exc_info=True)

    # --- what handlers use ---------------------------------------------------------------------

    async def call(self, fn, *args, **kwargs):
        """Run one rooms.live function for this connection's actor, in the database thread."""
        return await db.run(fn, self.actor, *args, **kwargs)

    async def signal_route(self, target: str | None, *, fresh: bool = False) -> live.SignalRoute:
        """May this member signal ``target``? Asked of the database for each description (a new
        negotiation); ICE candidates, a dozen or more per negotiation, reuse the answer for
        ``ROUTE_SECONDS``. A peer removed meanwhile has no connection left to receive them."""
        now = time.monotonic()
        cached = self.routes.get(target or "")
        if cached is not None and not fresh and cached[1] > now:
            return cached[0]
        route = await self.call(live.signal_route, target)
        self.routes[route.target] = (route, now + ROUTE_SECONDS)
        return route

    async def reply(self, frame: dict) -> None:
        await self.send_text(p.encode(frame))

    async def close(self, code=None, reason=None) -> None:
        # Under daphne the close frame goes below ASGI: its ASGI path accepts only 1000 and
        # 3000-4999 and turned the contract's 1003, 1008, 1009 and 1013 into a 1011 (signaling.wire).
        if self.socket is not None and reason is None and self.socket.close(1000 if code is None else code):
            return
        await super().close(code, reason)

    async def send_text(self, text: str) -> None:
        if self.socket is None or not self.socket.write(wire.text_frame(text.encode())):
            await self._send_through_asgi(text)

    async def send_prepared(self, message: dict) -> None:
        """Send a layer message's frame; its wire bytes are built once for every local receiver."""
        if not self._write_prepared(message):
            await self._send_through_asgi(message["frame"])

    def _write_prepared(self, message: dict) -> bool:
        if self.socket is None:
            return False
        frame = message.get(WIRE_FRAME)
        if frame is None:
            frame = message[WIRE_FRAME] = wire.text_frame(message["frame"].encode())
        return self.socket.write(frame)

    async def _send_through_asgi(self, text: str) -> None:
        # The socket may close while a handler is still busy (a mass disconnect behind a backlog):
        # a frame for a closed socket is dropped, not an unhandled exception (1011).
        try:
            await self.send(text_data=text)
        except Disconnected:
            self.closing = True

    async def publish(self, changes: live.Changes, *, exclude: str | None = None, from_server: bool = False) -> None:
        """Fan ``changes`` out, from this member (or, ``from_server``, from the server itself)."""
        sender = None if from_server else self.member_id
        try:
            await fanout.publish(self.channel_layer, self.session_id, changes, sender=sender, exclude=exclude)
        except LAYER_ERRORS:
            log.warning("fan-out failed: channel layer unavailable", exc_info=True)

    async def deliver(
        self, group: str, audience: str, frame: dict, *, exclude_self: bool = False, seq: int | None = None
    ) -> None:
        message = fanout.event(audience, frame, exclude=self.channel_name if exclude_self else None, seq=seq)
        await self._layer_send(group, message)

    async def finish(self, code: int = 1000) -> None:
        await self._close(code)

    def chat_seen(self, seq: int) -> None:
        """This connection's client has chat message ``seq`` (answered directly, or delivered)."""
        if self.chat_mark is None or seq <= self.chat_mark:
            return
        self.chat_sent.add(seq)
        # Advance the mark over the unbroken run: the periodic check then reads from the database only
        # the chat this connection has really not seen (normally none), not everything since its last tick.
        while self.chat_mark + 1 in self.chat_sent:
            self.chat_mark += 1
            self.chat_sent.discard(self.chat_mark)

    # --- layer deliveries and the periodic check -----------------------------------------------

    async def on_deliver(self, message: dict) -> None:
        if not self._shows(message):
            return
        if message.get("control") == "admitted":
            try:
                await self._become_admitted(None)
            except (DatabaseError, *LAYER_ERRORS):
                # Shown at the next periodic check instead, which finds the seat admitted.
                log.warning("admission not shown yet: a backing service is unavailable", exc_info=True)
                self.state = SeatState.WAITING
            return
        if not self._chat_is_new(message):
            return
        if message.get("frame"):
            await self.send_prepared(message)
        if message.get("close"):
            await self._close(int(message["close"]))
        elif message.get("control") == fanout.MODERATION:
            await sfu.enforce(self)
        elif message.get("control") == fanout.SFU_MOVED:
            await sfu.moved(self)

    def _shows(self, message: dict) -> bool:
        """Whether this connection acts on a layer message at all (its audience, sender, epoch)."""
        if self.closing or self.actor is None:
            return False
        if not self._entitled(message.get("audience")) or message.get("exclude") == self.channel_name:
            return False
        below = message.get("below_epoch")
        return below is None or self.actor.epoch < below

    def _chat_is_new(self, message: dict) -> bool:
        """False for a chat message this connection already has; marks it seen otherwise."""
        seq = message.get("seq")
        if seq is not None:
            if self.chat_mark is not None and (seq <= self.chat_mark or seq in self.chat_sent):
                return False  # the periodic check already pushed it
            self.chat_seen(seq)
        return True

    def _entitled(self, audience: str | None) -> bool:
        # Checked on arrival against this connection's own state: a stale group membership
        # (a race, a lost discard) never shows room traffic to someone who is only waiting.
        if audience == fanout.ANY:
            return True
        if audience == fanout.ROOM:
            return self.state == SeatState.ADMITTED
        if audience == fanout.MODERATORS:
            return self.state == SeatState.ADMITTED and self.capacity == SeatCapacity.MODERATOR
        if audience == fanout.WAITING:
            return self.state == SeatState.WAITING
        return False

    async def _become_admitted(self, room: live.RoomView | None) -> None:
        if self.state == SeatState.ADMITTED:
            return
        self.state = SeatState.ADMITTED
        self.opens_at = None
        await self._join_groups([groups.room(self.session_id)])
        if room is None:
            try:
                # Read after subscribing to the room: the snapshot covers whatever happened before.
                room = await self.call(live.room_snapshot)
            except live.LiveError as exc:
                await self._close(CLOSE_FOR_CODE.get(exc.code, 4403))
                return
        self.chat_mark, self.chat_sent = room.chat_seq, set()
        await self.reply(frames.admitted(room, self.member_id))
        await self._settle_groups()
        await sfu.admitted(self, room)

    async def on_tick(self) -> None:
        self._tick_queued = False
        try:
            await self._tick()
        finally:
            self._schedule_tick()

    async def _tick(self) -> None:
        if self.closing or self.actor is None:
            return
        session_key = getattr(self.scope.get("session"), "session_key", None)
        try:
            result = await self.call(
                live.tick, session_key, believed_waiting=self.state == SeatState.WAITING, chat_after=self.chat_mark
            )
        except DatabaseError:
            log.warning("periodic check failed: database unavailable", exc_info=True)
            return
        if result.close:
            await self._close(CLOSE_FOR_CODE.get(result.close, 4403))
            return
        # What the clock did (an expired seat, the start letting someone in) comes from the server.
        await self.publish(result.changes, from_server=True)
        for message in result.missed:
            if (self.chat_mark is None or message.seq > self.chat_mark) and message.seq not in self.chat_sent:
                await self.reply(frames.chat_message(message))
        if result.chat_upto is not None and self.chat_mark is not None:
            self.chat_mark = max(self.chat_mark, result.chat_upto)
            self.chat_sent = {seq for seq in self.chat_sent if seq > self.chat_mark}
        if result.admitted is not None:
            try:
                await self._become_admitted(result.admitted)
            except LAYER_ERRORS:
                log.warning("admission not shown yet: channel layer unavailable", exc_info=True)
                self.state = SeatState.WAITING

    # --- closing -------------------------------------------------------------------------------

    async def _close(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        WATCHER.discard(self)
        self._schedule_tick()  # closing: no timer
        await self.close(code)
        await sfu.closed(self, code)

    async def on_disconnect(self) -> None:
        self.closing = True
        WATCHER.discard(self)
        # Leave the layer's groups first: they are cheap Redis calls, while the database work below
        # may wait behind a backlog, and a process stopped in between would leave the memberships in
        # Redis for the layer's 24 h group expiry (measured: docs/performance.md, mass disconnect).
        await self._leave_groups(sorted(self.in_groups))
        await sfu.closed(self, 1000)  # nothing left at Janus (a no-op when _close did it)
        if self.actor is not None:
            record_disconnect(self.channel_layer, self.actor, self.member_id)


def record_disconnect(layer, actor: live.Actor, member_id: str | None) -> None:
    """Record a dropped connection in the background, so the consumer ends at once.

    daphne cancels an application instance that outlives its socket by more than
    application_close_timeout (10 s); behind a backlog on the database thread (a mass
    disconnect under load) the disconnect would be cut off half-way and its Pub/Sub
    subscription left behind (docs/performance.md). Epoch-checked in rooms.live, so a
    reconnect that got in first is never undone. Peers then see "reconnecting".
    """

    async def run() -> None:
        try:
            changes = await db.run(live.disconnect, actor)
            await fanout.publish(layer, actor.session_id, changes, sender=member_id)
            if changes.updated or changes.waiting_list is not None:
                expire_later(layer, actor.session_id)
        except DatabaseError:
            log.warning("disconnect not recorded: database unavailable")
        except LAYER_ERRORS:
            log.warning("disconnect not told to peers: channel layer unavailable")

    task = asyncio.get_running_loop().create_task(run())
    BACKGROUND.add(task)
    task.add_done_callback(BACKGROUND.discard)


def expire_later(layer, session_id) -> None:
    """After the grace period, let the seats still disconnected go (peers then see member.left)."""

    async def run() -> None:
        await asyncio.sleep(float(settings.SEAT_GRACE_SECONDS))
        try:
            changes = await db.run(live.expire_seats, session_id)
            await fanout.publish(layer, session_id, changes, sender=None)
        except (DatabaseError, *LAYER_ERRORS):
            log.warning("seat expiry not done: a backing service is unavailable (periodic checks retry)")

    task = asyncio.get_running_loop().create_task(run())
    BACKGROUND.add(task)
    task.add_done_callback(BACKGROUND.discard)
