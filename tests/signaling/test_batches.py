"""signaling.batches: requests that arrive while a call runs go together in the next one.

The behaviour every batch shares (the first at once, a refusal to its requester only, a database
error to every request of its call) is tested through the chat writer (test_chat_writer.py) and the
joins (test_consumer_handshake.py); here, what those do not reach."""

from __future__ import annotations

import asyncio

from rooms import live
from signaling.batches import Batches, per_loop


class HeldCall:
    """Answers each request with itself; the first call waits until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, requests):
        self.batches.append(list(requests))
        if len(self.batches) == 1:
            await self.release.wait()
        return [live.LiveError("chat.empty") if r < 0 else r for r in requests]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_backlog_goes_in_calls_of_at_most_max_batch_in_arrival_order():
    call = HeldCall()
    batches = Batches(call, name="test", max_batch=3)
    first = asyncio.create_task(batches.submit(0))
    await settle()
    waiting = [asyncio.create_task(batches.submit(n)) for n in range(1, 8)]
    await settle()

    call.release.set()
    answers = await asyncio.gather(first, *waiting)

    assert call.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert answers == list(range(8))


async def test_a_request_whose_waiter_is_gone_leaves_the_others_their_answers():
    call = HeldCall()
    batches = Batches(call, name="test", max_batch=8)
    first = asyncio.create_task(batches.submit(0))
    await settle()
    gone, kept, refused = (asyncio.create_task(batches.submit(n)) for n in (1, 2, -1))
    await settle()
    gone.cancel()  # its connection closed while it waited

    call.release.set()
    results = await asyncio.gather(first, kept, refused, return_exceptions=True)

    assert call.batches == [[0], [1, 2, -1]]  # the call still did its work for the one that left
    assert results[:2] == [0, 2] and isinstance(results[2], live.LiveError)


async def test_each_event_loop_has_its_own_batches():
    mine = per_loop("test", lambda: Batches(HeldCall(), name="test", max_batch=1))
    assert per_loop("test", lambda: None) is mine
    other = await asyncio.to_thread(
        lambda: asyncio.run(_built_in_a_new_loop()),
    )
    assert other is not mine


async def _built_in_a_new_loop() -> Batches:
    return per_loop("test", lambda: Batches(HeldCall(), name="test", max_batch=1))
