"""PUBLISH to Redis without waiting for each reply: the fan-out's one hot write to the layer.

Every frame that reaches a room goes out as one PUBLISH on the Pub/Sub layer's group channel
(``fanout.send``). Through channels-redis that is redis-py's ``publish``: the shard's lock, the
pool's lock, the retry wrapper, the command packed in Python, then a wait for Redis's answer
before the consumer goes on. Measured with py-spy in the ``rooms100`` benchmark, that was ~8 % of
the server's CPU for a reply ("how many subscribers got it") nobody reads. Here each process
keeps one plain connection per event loop for publishing: a PUBLISH is written to it and the
call returns; the replies are counted as they come back, and an error reply is logged.

The layer stays channels-redis's: the same group channel name (its ``_get_group_channel_name``),
the same serializer, the same Redis; subscribing and receiving are untouched. Only a layer on
one ``redis://`` or ``unix://`` host qualifies (``for_layer``); TLS (``rediss://``), several
shards, the core layer and the in-memory layer publish through ``group_send`` as before.

Delivery is what it was: at most once. A PUBLISH written just before Redis goes away is lost
(as it would be between redis-py's write and a dead server); a publish after the loss is
noticed raises (``ConnectionError``, an ``OSError``) and the consumer answers
``server.unavailable`` as before. Frames from one process stay in order: one connection, and
Redis answers commands on it in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from channels_redis.pubsub import RedisPubSubChannelLayer

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
PLAIN = ("redis", "unix")


def pack(*parts: bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n" % len(part))
        out.append(part)
        out.append(b"\r\n")
    return b"".join(out)


def fail(future: asyncio.Future, exc: BaseException) -> None:
    """Fail a future someone may or may not be awaiting, without asyncio's "exception was never
    retrieved" complaint when nobody was (a lost connection that never had to log in, say)."""
    if not future.done():
        future.set_exception(exc)
        future.exception()  # marks it retrieved; an awaiter still gets the exception


def settle(future: asyncio.Future | None, exc: BaseException | None = None) -> None:
    """Wake whoever awaits ``future`` (None: nobody waits): with its result, or failing with ``exc``."""
    if future is None or future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        fail(future, exc)


class _Connection(asyncio.Protocol):
    """One publishing connection: writes commands, counts the replies, logs the refused ones."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = b""
        self.replies = 0
        self.first_reply: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._writable: asyncio.Future[None] | None = None
        # Replies come in the order the commands went out: for each command sent, the future that
        # wants its reply (``publish_counted``), or None for the many that nobody reads.
        self._awaiting: collections.deque[asyncio.Future | None] = collections.deque()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Every reply this connection gets is one line: +OK (AUTH), :N (PUBLISH) or -ERR ...
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\r\n")
        for line in lines:
            self.replies += 1
            refused = line.startswith(b"-")
            if not self.first_reply.done():
                self.first_reply.set_result(line[1:].decode(errors="replace") if refused else None)
                continue  # AUTH's reply (without AUTH, send marks first_reply done before any command)
            wanted = self._awaiting.popleft() if self._awaiting else None
            if refused:
                log.warning("Redis refused a publish: %s", line[:200].decode(errors="replace"))
                if wanted is not None:
                    fail(wanted, ConnectionError(f"Redis refused a publish: {line[:200].decode(errors='replace')}"))
            elif wanted is not None and not wanted.done():
                wanted.set_result(int(line[1:]))

    def connection_lost(self, exc) -> None:
        self.closed = True
        fail(self.first_reply, ConnectionError("Redis closed the publishing connection"))
        self._wake(ConnectionError("Redis closed the publishing connection"))
        while self._awaiting:
            wanted = self._awaiting.popleft()
            if wanted is not None:
                fail(wanted, ConnectionError("Redis closed the publishing connection"))

    def pause_writing(self) -> None:  # Redis reads slower than we write: the next publish waits
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake(None)

    def _wake(self, exc: Exception | None) -> None:
        waiter, self._writable = self._writable, None
        settle(waiter, exc)

    async def send(self, command: bytes, reply: asyncio.Future | None = None) -> None:
        """Write ``command``; ``reply``, if given, gets its integer reply (or fails with the error)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("the publishing connection to Redis is closed")
        if not self.first_reply.done():  # no AUTH: the first reply is this command's (see data_received)
            self.first_reply.set_result(None)
        self._awaiting.append(reply)
        self.transport.write(command)
        if self._writable is not None:
            await self._writable


@dataclass(frozen=True)
class Address:
    """Where a plain Redis is (``redis://`` or ``unix://`` URL) and how to log in to it."""

    scheme: str
    host: str | None = None
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Address:
        parsed = urlparse(url)
        if parsed.scheme not in PLAIN:
            raise ValueError(f"no plain connection for {parsed.scheme!r} URLs")
        return cls(
            scheme=parsed.scheme,
            host=None if parsed.scheme == "unix" else (parsed.hostname or "127.0.0.1"),
            port=parsed.port or 6379,
            path=parsed.path if parsed.scheme == "unix" else None,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
        )

    async def connect(self, protocol_factory):
        """Connect (within CONNECT_TIMEOUT) and log in; the protocol's ``first_reply`` future gives
        the answer to AUTH: None when accepted, the error text when refused."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if self.path is not None:
                _, connection = await loop.create_unix_connection(protocol_factory, self.path)
            else:
                _, connection = await loop.create_connection(protocol_factory, self.host, self.port)
            if self.password is not None:
                credentials = [self.username.encode()] if self.username else []
                connection.transport.write(pack(b"AUTH", *credentials, self.password.encode()))
                refusal = await connection.first_reply
                if refusal is not None:
                    connection.transport.close()
                    raise ConnectionError(f"Redis refused AUTH: {refusal[:200]}")
        return connection


class Publisher:
    """Publishes on one plain Redis server, connecting when needed."""

    def __init__(self, url: str) -> None:
        self.address = Address.parse(url)
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    async def publish(self, channel: str, payload: bytes, reply: asyncio.Future | None = None) -> None:
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        await connection.send(pack(b"PUBLISH", channel.encode(), payload), reply)

    async def publish_counted(self, channel: str, payload: bytes) -> int:
        """PUBLISH and wait for Redis's answer: how many subscribers received it (``signaling.hub``
        uses it to learn whether another process listens to a group)."""
        reply = asyncio.get_running_loop().create_future()
        await self.publish(channel, payload, reply)
        return await reply

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is None or self._connection.closed:  # else: connected while this one waited
                self._connection = await self.address.connect(_Connection)
            return self._connection

    def close(self) -> None:
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        self._connection = None


def per_loop_on_plain_redis(layer, attribute: str, build):
    """``build(url, loop_layer)`` once per event loop for a channels-redis Pub/Sub layer on one plain
    (``redis://``/``unix://``) host, kept on the layer under ``attribute``; None for any other layer
    (TLS, several shards, other options, the core or in-memory layer)."""
    if not isinstance(layer, RedisPubSubChannelLayer):
        return None
    loop = asyncio.get_running_loop()
    known = layer.__dict__.setdefault(attribute, weakref.WeakKeyDictionary())
    found = known.get(loop)
    if found is None:
        loop_layer = layer._get_layer()
        found = known[loop] = False
        hosts = [shard.host for shard in loop_layer._shards]
        if len(hosts) == 1 and set(hosts[0]) == {"address"} and urlparse(hosts[0]["address"]).scheme in PLAIN:
            found = known[loop] = build(hosts[0]["address"], loop_layer)
    return found or None


def for_layer(layer) -> tuple[Publisher, object] | None:
    """This event loop's publisher for a Pub/Sub layer on one plain host, with the layer's per-loop
    object (it names the group channels); None for any other layer."""
    return per_loop_on_plain_redis(
        layer, "_telehealth_publishers", lambda url, loop_layer: (Publisher(url), loop_layer)
    )


async def to_group(layer, group: str, message: dict, *, counted: bool = False) -> int | None:
    """Send ``message`` (which names its group) to ``group``'s subscribers. On the Pub/Sub layer over
    plain Redis the PUBLISH goes out without waiting for its reply, unless ``counted``: then it
    returns how many subscribers received it. Any other layer: ``group_send`` (and None)."""
    plain = for_layer(layer)
    if plain is None:
        await layer.group_send(group, message)
        return None
    redis_publisher, loop_layer = plain
    channel, payload = loop_layer._get_group_channel_name(group), layer.serialize(message)
    if counted:
        return await redis_publisher.publish_counted(channel, payload)
    await redis_publisher.publish(channel, payload)
    return None
