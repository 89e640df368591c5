"""In-process fan-out: one channel-layer channel per process for every group a local connection is in.

Without this, every connection had its own layer channel: a message to a room of 12 was put
in 12 queues, decoded 12 times, and woke 12 consumer tasks, each through Channels'
``await_many_dispatch`` (a fresh task and an ``asyncio.wait`` per message). Measured, that
machinery was about a fifth of the server's event-loop time under chat load
(docs/performance.md). Here the process subscribes its one hub channel to a group when the
first local connection joins it and unsubscribes when the last one leaves; the hub's single
task receives each message once and hands it to the local members of its group
(``SessionConsumer.take``), which write the prepared frame straight to their sockets when
they are idle, or queue it behind what they are doing (control messages always queue: they
need the connection's own loop).

Every message carries the group it was sent to (``fanout.send`` adds it). The hub is per event
loop and per layer object (a test runs in its own loop with a fresh layer). On the Pub/Sub layer
over plain Redis its subscriptions are ``signaling.subscriber``'s, read straight off the socket.

Groups of one process. A group whose every subscriber is this process (one server process, or a
session whose members all landed on one) needs no Redis: a message to it is handed to the hub's own
queue (``Subscriptions.hand_over``), behind whatever came from Redis before it, and never published.
Measured, the round trip through Redis (our PUBLISH, Redis's work, the echo read back: each a
wakeup of a process that was asleep) was a fifth of the CPU of a message at ``rooms100``
(docs/performance.md). Whether another process listens is learned when the hub subscribes to a
group: it publishes a ``hub.hello`` on the group, and Redis's reply counts its receivers. Alone
(1: itself), the hub waits for its hello to come back through its subscription (everything
published to the group before it has then been handed out) and from then on keeps the group's
messages local. With others, each of them drops the group from its own local set on receiving
the hello and answers ``hub.ack``; the new hub waits for every ack before the joining connection
goes on (it reads its room afterwards), so nothing another process kept local before is missed.
A lost subscription connection ends every local group (publishing again); the new connection
announces every group again, which makes any process that went local meanwhile publish too.
A group stays published once shared, until its last local member leaves.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from signaling import publisher
from signaling.publisher import settle
from signaling.subscriber import Subscriptions

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

log = logging.getLogger(__name__)

LAYER_ERRORS = (RedisError, OSError, TimeoutError)

# The hubs' own messages on a group (never handed to a connection): a hub announcing that it
# subscribed, and the answer of every other hub that heard it.
HELLO = "hub.hello"
ACK = "hub.ack"
# How long an announcing hub waits for its hello to come back and for the others' acks. A process
# that dies in between never answers: the group is then treated as shared, which is always safe.
ANNOUNCE_TIMEOUT = 2.0


@dataclass(eq=False)
class _Announcement:
    """A hub's hello on one group, until it knows whether it is the group's only subscriber."""

    done: asyncio.Future
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)
    echoed: bool = False  # the hello came back through this hub's own subscription
    acks: set[str] = field(default_factory=set)  # the other hubs that answered
    heard: bool = False  # another hub announced itself on the group meanwhile
    failed: bool = False  # the subscription connection was lost meanwhile
    wake: asyncio.Future | None = None

    def poke(self) -> None:
        settle(self.wake)


class Member(Protocol):
    def take(self, message: dict) -> Awaitable[None] | None:
        """Handle a message of one of its groups: None when done, or an awaitable to wait for (the
        hub awaits it before the next member, so every member sees a group's messages in order)."""


class Hub:
    def __init__(self, layer, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.channel: str | None = None
        self.members: dict[str, set[Member]] = {}
        self.task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # group_add/group_discard of the hub channel, in order
        self.id = uuid.uuid4().hex  # tells this hub's hellos and acks from other processes'
        self.solo: set[str] = set()  # groups only this process listens to: their messages stay here
        self._announcing: dict[str, _Announcement] = {}
        # Only a hub reading its own subscriptions (signaling.subscriber) keeps groups local.
        self._can_keep_local = isinstance(layer, Subscriptions)
        self._channel_layer = layer.layer if self._can_keep_local else layer  # what publishes on a group
        if self._can_keep_local:
            layer.listener = self

    async def _ensure_started(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel()
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="fan-out hub")
            TASKS.add(self.task)
            self.task.add_done_callback(TASKS.discard)

    async def join(self, group: str, member: Member) -> None:
        """Add a local member to ``group``; the process subscribes when it is the first (and, when it
        can keep groups local, announces itself: the join returns once it knows who else listens)."""
        async with self._lock:
            await self._ensure_started()
            members = self.members.get(group)
            if members is None:
                if self._can_keep_local:  # the confirmation is awaited by the announcement, not here
                    confirmation = await self.layer.subscribe(group)  # raises when Redis is away
                    self._announce(group, confirmation)
                else:
                    await self.layer.group_add(group, self.channel)  # raises when the layer is down
                members = self.members[group] = set()
            members.add(member)
        announcement = self._announcing.get(group)
        if announcement is not None:
            await asyncio.shield(announcement.done)

    async def leave(self, group: str, member: Member) -> None:
        """Remove a local member; the process unsubscribes when it was the last."""
        async with self._lock:
            members = self.members.get(group)
            if members is None or member not in members:
                return
            members.discard(member)
            if members:
                return
            del self.members[group]
            self.solo.discard(group)
            await self.layer.group_discard(group, self.channel)

    def forget(self, member: Member, groups: Iterable[str]) -> list[str]:
        """Drop a member from these groups at once, without layer calls; returns the groups left
        without a local member (their subscriptions are discarded by ``leave_empty``)."""
        empty = []
        for group in groups:
            members = self.members.get(group)
            if members is not None:
                members.discard(member)
                if not members:
                    empty.append(group)
        return empty

    async def leave_empty(self, groups: Iterable[str]) -> None:
        async with self._lock:
            for group in groups:
                if self.members.get(group) == set():
                    del self.members[group]
                    self.solo.discard(group)
                    await self.layer.group_discard(group, self.channel)

    async def refresh(self) -> None:
        """Re-add every group (idempotent): a Redis restart empties the core layer's groups."""
        async with self._lock:
            for group in list(self.members):
                await self.layer.group_add(group, self.channel)

    async def _run(self) -> None:
        delay = 0.25
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except LAYER_ERRORS:
                log.warning("hub receive failed; retrying in %.2fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.25
            if message.get("type") in (HELLO, ACK):
                await self._heard(message)
                continue
            for member in tuple(self.members.get(message.get("group"), ())):
                try:
                    pending = member.take(message)
                    if pending is not None:
                        await pending
                except Exception:  # one broken connection must not stop delivery to the others
                    log.exception("delivery to a local connection failed")
            # Let the rest of the loop run between messages: a backlog handed out in one go held the
            # loop for whole bursts; measured: rate20 p50 150-315 ms without this yield, 13-14 ms
            # with it (docs/performance.md). With nothing more waiting, the next receive yields anyway.
            if self._more_waiting():
                await asyncio.sleep(0)

    # --- groups of one process ----------------------------------------------------------------

    async def delivers_alone(self, group: str, message: dict) -> bool:
        """Hand ``message`` (for ``group``) to this hub's own queue if no other process listens to
        the group, and say so; False: the caller publishes it. While the hub is still finding out
        (its hello is out), the message waits for the answer."""
        announcement = self._announcing.get(group)
        if announcement is not None:
            await asyncio.shield(announcement.done)
        if group not in self.solo:
            return False
        self.layer.hand_over(message)
        return True

    def _announce(self, group: str, confirmation: tuple | None = None) -> None:
        """Find out (in a task of its own) whether this process is ``group``'s only subscriber, once
        its subscription is confirmed; meanwhile the group's joins and messages wait."""
        previous = self._announcing.get(group)
        if previous is not None:
            previous.failed = True
            previous.poke()
        announcement = self._announcing[group] = _Announcement(done=self.loop.create_future())
        task = self.loop.create_task(self._find_out(group, announcement, confirmation), name="hub hello")
        TASKS.add(task)
        task.add_done_callback(TASKS.discard)

    async def _find_out(self, group: str, announcement: _Announcement, confirmation: tuple | None) -> None:
        alone = False
        try:
            if confirmation is None:
                # Announcing again on a new connection, which subscribed to everything at once: one
                # more SUBSCRIBE (harmless) says when this group's subscription holds.
                if group not in self.members:
                    return
                confirmation = await self.layer.subscribe(group)
            await self.layer.confirmation(confirmation)
            hello = {"type": HELLO, "hub": self.id, "nonce": announcement.nonce, "group": group}
            receivers = await publisher.to_group(self._channel_layer, group, hello, counted=True)
            if receivers < 1:  # not even this hub: its subscription went away meanwhile
                return
            others = receivers - 1  # Redis counted this hub too: it subscribed before the hello
            async with asyncio.timeout(ANNOUNCE_TIMEOUT):
                while not announcement.failed and not (announcement.echoed and len(announcement.acks) >= others):
                    announcement.wake = self.loop.create_future()
                    await announcement.wake
            # Alone only when Redis counted nobody else, the hello came back (so the count was taken
            # with this hub subscribed, and everything published before it has been handed out), and
            # no other hub announced itself since.
            alone = others == 0 and announcement.echoed and not announcement.heard and not announcement.failed
        except LAYER_ERRORS:
            log.warning("could not learn who else listens to a group; publishing its messages", exc_info=True)
        finally:
            if self._announcing.get(group) is announcement:
                del self._announcing[group]
                if alone and group in self.members:
                    self.solo.add(group)
            settle(announcement.done)

    async def _heard(self, message: dict) -> None:
        group, sender = message.get("group"), message.get("hub")
        announcement = self._announcing.get(group)
        if message["type"] == ACK:
            if message.get("to") == self.id and announcement is not None and message.get("nonce") == announcement.nonce:
                announcement.acks.add(sender)
                announcement.poke()
            return
        if sender == self.id:
            if announcement is not None and message.get("nonce") == announcement.nonce:
                announcement.echoed = True
                announcement.poke()
            return
        # Another process subscribed to the group: from now on this one publishes its messages too,
        # and says so (the other waits for every process Redis counted).
        self.solo.discard(group)
        if announcement is not None:
            announcement.heard = True
        ack = {"type": ACK, "hub": self.id, "to": sender, "nonce": message.get("nonce"), "group": group}
        try:
            await publisher.to_group(self._channel_layer, group, ack)
        except LAYER_ERRORS:
            log.warning("could not answer another process's hello", exc_info=True)

    # --- from signaling.subscriber -------------------------------------------------------------

    def subscriptions_lost(self) -> None:
        """The subscription connection is gone: what this hub knew about other processes no longer holds."""
        self.solo.clear()
        for announcement in self._announcing.values():
            announcement.failed = True
            announcement.poke()

    def subscribed_again(self) -> None:
        """A new connection subscribed to every group again: announce each one (a process that kept one
        of them local meanwhile learns that this one listens too)."""
        for group in self.members:
            self._announce(group)

    def _more_waiting(self) -> bool:
        arrivals = getattr(self.layer, "arrivals", None)  # signaling.subscriber's; other layers: unknown
        return arrivals is None or bool(arrivals)


TASKS: set[asyncio.Task] = set()


def current_hub(layer) -> Hub | None:
    """This event loop's hub for ``layer`` if it has one (None: nothing local to hand out to)."""
    hub = getattr(layer, "_telehealth_hub", None)
    return hub if hub is not None and hub.loop is asyncio.get_running_loop() else None


def get_hub(layer) -> Hub:
    """This event loop's hub for ``layer``: on the Pub/Sub layer over plain Redis it subscribes and
    reads on a connection of its own (``signaling.subscriber``), otherwise through the layer."""
    loop = asyncio.get_running_loop()
    hub = getattr(layer, "_telehealth_hub", None)
    if hub is None or hub.loop is not loop:
        hub = Hub(Subscriptions.of(layer) or layer, loop)
        layer._telehealth_hub = hub
    return hub
