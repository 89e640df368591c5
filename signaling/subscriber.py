"""The hub's Redis subscription read straight off the socket: the receiving half of the fan-out.

Each process's hub (``signaling.hub``) is subscribed to the groups its connections are in and
hands every message to its local members. Through channels-redis, each message was read by
redis-py's ``get_message`` in the layer's own task (a timeout context, the stream reader's
readline and readexactly, a Python RESP parser), queued, and read again from the queue by the
hub's task: two task wakeups and ~110 us of CPU per message arriving alone, measured in a
process of its own (docs/performance.md). With two server processes every message is received
by both. Here one connection per event loop subscribes; ``data_received`` parses the pushes as
they arrive and appends them to the hub's queue, which wakes the hub's task once for whatever
came in together.

Only the receiving is replaced: the groups' channel names and the message encoding are the
Pub/Sub layer's own (``Subscriptions.of`` takes them from it), and the publishing side is
``signaling.publisher``. It qualifies exactly when the publisher does: channels-redis's Pub/Sub
layer on one ``redis://`` or ``unix://`` host; any other layer keeps its own ``receive``.

When the connection is lost, the next ``receive`` connects again and subscribes to every group
still wanted (or raises, and the hub retries with backoff). Messages published meanwhile are
lost, as with any Pub/Sub: the layer is at most once, and chat is resynchronised by sequence.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from signaling.publisher import Address, fail, pack, per_loop_on_plain_redis, settle

log = logging.getLogger(__name__)

# How long a subscription may take to be confirmed before the join that needs it fails.
CONFIRM_TIMEOUT = 5.0


class ProtocolError(Exception):
    """Redis sent something this reader does not expect on a subscribed connection."""


def parse(buffer: bytearray) -> list:
    """Take every complete RESP2 reply off the front of ``buffer`` (arrays, bulk strings,
    integers, simple strings, errors as ``ProtocolError`` instances); what is incomplete stays."""
    replies = []
    while buffer:
        reply, end = _parse_one(buffer, 0)
        if end < 0:
            break
        replies.append(reply)
        del buffer[:end]
    return replies


def _parse_one(buffer: bytearray, start: int):
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None, -1
    kind, value = buffer[start : start + 1], bytes(buffer[start + 1 : line_end])
    after = line_end + 2
    if kind == b"$":
        size = int(value)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            return None, -1
        if buffer[after + size : after + size + 2] != b"\r\n":
            raise ProtocolError("a bulk string longer than announced")
        return bytes(buffer[after : after + size]), after + size + 2
    if kind == b"*":
        count = int(value)
        items = []
        for _ in range(max(count, 0)):
            item, after = _parse_one(buffer, after)
            if after < 0:
                return None, -1
            items.append(item)
        return items, after
    if kind == b":":
        return int(value), after
    if kind == b"+":
        return value, after
    if kind == b"-":
        return ProtocolError(value.decode(errors="replace")), after
    raise ProtocolError(f"unexpected RESP type {kind!r}")


class _Connection(asyncio.Protocol):
    def __init__(self, owner: Subscriptions) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.first_reply: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            replies = parse(self.buffer)
        except (ProtocolError, ValueError) as exc:
            log.warning("unreadable reply on the subscribed Redis connection: %s", exc)
            self.transport.close()
            return
        for reply in replies:
            if not self.first_reply.done():
                self.first_reply.set_result(str(reply) if isinstance(reply, ProtocolError) else None)
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self.owner.arrived(reply[1], reply[2])
            elif isinstance(reply, list) and len(reply) == 3 and reply[0] == b"subscribe":
                self.owner.confirmed(reply[1])
            elif isinstance(reply, ProtocolError):
                log.warning("Redis refused a subscription command: %s", reply)
            # unsubscribe confirmations and +OK need nothing

    def connection_lost(self, exc) -> None:
        self.closed = True
        fail(self.first_reply, ConnectionError("Redis closed the subscribed connection"))
        self.owner.lost()


class Subscriptions:
    """The channel-layer calls the hub makes (``new_channel``, ``receive``, ``group_add``,
    ``group_discard``), for one process on one event loop, over one subscribed connection."""

    def __init__(self, address: Address, layer, loop_layer) -> None:
        self.address = address
        self.layer = layer  # deserializes
        self.loop_layer = loop_layer  # names the group channels
        self.wanted: set[bytes] = set()
        # What the hub takes next, in order: payloads from Redis (bytes) and, for a group only this
        # process listens to, messages handed over here without Redis (dicts; signaling.hub).
        self.arrivals: collections.deque = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._confirming: dict[bytes, collections.deque[asyncio.Future]] = {}
        # Told when the subscribed connection is lost and when a new one has subscribed again
        # (the hub: what it knew about the other processes' subscriptions no longer holds).
        self.listener = None

    @classmethod
    def of(cls, layer) -> Subscriptions | None:
        """This event loop's subscriptions for a channels-redis Pub/Sub layer on one plain host."""
        return per_loop_on_plain_redis(
            layer,
            "_telehealth_subscriptions",
            lambda url, loop_layer: cls(Address.parse(url), layer, loop_layer),
        )

    # --- what the hub calls ------------------------------------------------------------------

    async def new_channel(self) -> str:
        return "hub"  # one subscribed connection per process and loop: no channel of its own

    async def group_add(self, group: str, channel: str) -> None:
        """Subscribe to ``group``; returns once Redis has confirmed it (from then on, everything
        published to the group reaches this process), raises when the connection is lost first."""
        await self.confirmation(await self.subscribe(group))

    async def subscribe(self, group: str) -> tuple[bytes, asyncio.Future]:
        """Send the SUBSCRIBE for ``group`` (connecting first if needed: raises when Redis is away)
        and return its channel and the future of its confirmation, for ``confirmation``."""
        name = self._channel(group)
        self.wanted.add(name)
        connection = await self._connect()
        confirmed = asyncio.get_running_loop().create_future()
        self._confirming.setdefault(name, collections.deque()).append(confirmed)
        connection.transport.write(pack(b"SUBSCRIBE", name))
        return name, confirmed

    async def confirmation(self, subscribed: tuple[bytes, asyncio.Future]) -> None:
        """Wait (at most CONFIRM_TIMEOUT) for a ``subscribe`` to be confirmed."""
        name, confirmed = subscribed
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await confirmed
        finally:
            waiting = self._confirming.get(name)
            if waiting is not None and confirmed in waiting:  # timed out or cancelled: not the next one's
                waiting.remove(confirmed)

    async def group_discard(self, group: str, channel: str) -> None:
        name = self._channel(group)
        self.wanted.discard(name)
        connection = self._connection
        if connection is not None and not connection.closed:
            connection.transport.write(pack(b"UNSUBSCRIBE", name))

    async def receive(self, channel: str) -> dict:
        while not self.arrivals:
            connection = self._connection
            if self.wanted and (connection is None or connection.closed):
                await self._connect()  # raises while Redis is away: the hub retries with backoff
                continue
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self.arrivals.popleft()
        return item if isinstance(item, dict) else self.layer.deserialize(item)

    def hand_over(self, message: dict) -> None:
        """Queue a message for the hub as if it had come from Redis, behind everything that came
        before it (the hub's delivery to a group no other process listens to)."""
        self.arrivals.append(message)
        self._wake()

    # --- from the connection -----------------------------------------------------------------

    def arrived(self, channel: bytes, data: bytes) -> None:
        # Also from a channel unsubscribed a moment ago: the hub hands nothing out for a group without
        # local members, but answers another process's hello there (Redis counted this process).
        self.arrivals.append(data)
        self._wake()

    def confirmed(self, channel: bytes) -> None:
        waiting = self._confirming.get(channel)
        if waiting:
            settle(waiting.popleft())
            if not waiting:
                del self._confirming[channel]

    def lost(self) -> None:
        if self.wanted:
            log.warning("the subscribed Redis connection was lost; subscribing again")
        confirming, self._confirming = self._confirming, {}
        for waiting in confirming.values():
            for future in waiting:
                settle(future, ConnectionError("Redis closed the subscribed connection"))
        if self.listener is not None:
            self.listener.subscriptions_lost()
        self._wake()

    def _wake(self) -> None:
        settle(self._waiter)

    # --- connecting ----------------------------------------------------------------------------

    def _channel(self, group: str) -> bytes:
        return self.loop_layer._get_group_channel_name(group).encode()

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            again = self._connection is not None  # a new connection after a lost one
            connection = await self.address.connect(lambda: _Connection(self))
            if self.wanted:  # a new connection (first, or after a loss) subscribes to all at once
                connection.transport.write(pack(b"SUBSCRIBE", *sorted(self.wanted)))
            self._connection = connection
            if again and self.listener is not None:
                self.listener.subscribed_again()
            return connection

    def close(self) -> None:
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        self._connection = None
