"""Database calls that take, in one go, every request that arrived while the previous call ran.

Every database call of a process runs in one thread (Django's connection belongs to it), so calls
queue, and each one pays for the hop into that thread, a transaction, its round trips and the GIL
it must win back after each: per call, not per request. Under load that fixed cost made the queue
grow (chat at 240 messages a second, docs/performance.md), so requests are batched: the first goes
at once; those that arrive while its call runs wait for the next call, which takes all of them (up
to ``max_batch``). Under light load nothing waits; under heavy load batches grow instead of the
queue. Used for chat messages (``signaling.chat_writer``), the handshakes' logins
(``signaling.auth.logins``) and joins (``signaling.consumers.joins``: ``rooms.live.join_many``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

from rooms import live

# A call answers each request of its batch, in order: a result, a LiveError (that request's refusal),
# or an exception that request met on its own; an exception the call raises reaches all of them.
BatchCall = Callable[[list], Awaitable[list]]


class Batches:
    def __init__(self, call: BatchCall, *, name: str, max_batch: int) -> None:
        self.call = call
        self.name = name
        self.max_batch = max_batch
        self.waiting: list[tuple[object, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def submit(self, request):
        """The call's answer for ``request``; raises its LiveError, or the call's own exception
        (a DatabaseError reaches every request of that call)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((request, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._drain(), name=self.name)
        result = await future
        if isinstance(result, live.LiveError):
            raise result
        return result

    async def _drain(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
            try:
                results = await self.call([request for request, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name} answered {len(results)} of {len(batch)} requests")
            except Exception as exc:  # noqa: BLE001 - a database error: each request answers it (server.retry)
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its connection went away meanwhile; the call did its work anyway
                    continue
                if isinstance(result, BaseException) and not isinstance(result, live.LiveError):
                    future.set_exception(result)
                else:
                    future.set_result(result)


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Batches]] = weakref.WeakKeyDictionary()


def per_loop(name: str, build: Callable[[], Batches]) -> Batches:
    """This event loop's ``name`` batches (a test runs in its own loop)."""
    known = _PER_LOOP.setdefault(asyncio.get_running_loop(), {})
    batches = known.get(name)
    if batches is None:
        batches = known[name] = build()
    return batches
