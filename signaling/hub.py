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
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from signaling.subscriber import Subscriptions

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

LAYER_ERRORS = (RedisError, OSError, TimeoutError)


class Member(Protocol):
    async def take(self, message: dict) -> None: ...


class Hub:
    def __init__(self, layer, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.channel: str | None = None
        self.members: dict[str, set[Member]] = {}
        self.task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # group_add/group_discard of the hub channel, in order

    async def _ensure_started(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel()
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="fan-out hub")
            TASKS.add(self.task)
            self.task.add_done_callback(TASKS.discard)

    async def join(self, group: str, member: Member) -> None:
        """Add a local member to ``group``; the process subscribes when it is the first."""
        async with self._lock:
            await self._ensure_started()
            members = self.members.get(group)
            if members is None:
                await self.layer.group_add(group, self.channel)  # raises when the layer is down
                members = self.members[group] = set()
            members.add(member)

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
            for member in tuple(self.members.get(message.get("group"), ())):
                try:
                    await member.take(message)
                except Exception:  # one broken connection must not stop delivery to the others
                    log.exception("delivery to a local connection failed")
            # Let the rest of the loop run between messages: a backlog handed out in one go held the
            # loop for whole bursts; measured: rate20 p50 150-315 ms without this yield, 13-14 ms
            # with it (docs/performance.md). With nothing more waiting, the next receive yields anyway.
            if self._more_waiting():
                await asyncio.sleep(0)

    def _more_waiting(self) -> bool:
        arrivals = getattr(self.layer, "arrivals", None)  # signaling.subscriber's; other layers: unknown
        return arrivals is None or bool(arrivals)


TASKS: set[asyncio.Task] = set()


def get_hub(layer) -> Hub:
    """This event loop's hub for ``layer``: on the Pub/Sub layer over plain Redis it subscribes and
    reads on a connection of its own (``signaling.subscriber``), otherwise through the layer."""
    loop = asyncio.get_running_loop()
    hub = getattr(layer, "_telehealth_hub", None)
    if hub is None or hub.loop is not loop:
        hub = Hub(Subscriptions.of(layer) or layer, loop)
        layer._telehealth_hub = hub
    return hub
