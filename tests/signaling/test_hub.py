"""The per-process fan-out hub (signaling.hub) with a recording layer: subscriptions and hand-out."""

from __future__ import annotations

import asyncio

from signaling.hub import Hub


class RecordingLayer:
    """Just enough of a channel layer: records group_add/group_discard, delivers what a test puts in."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.queue: asyncio.Queue = asyncio.Queue()

    async def new_channel(self) -> str:
        return "hub-channel"

    async def group_add(self, group: str, channel: str) -> None:
        self.calls.append(("add", group))

    async def group_discard(self, group: str, channel: str) -> None:
        self.calls.append(("discard", group))

    async def receive(self, channel: str) -> dict:
        return await self.queue.get()


class Member:
    def __init__(self) -> None:
        self.taken: list[dict] = []

    async def take(self, message: dict) -> None:
        self.taken.append(message)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_process_subscribes_once_per_group_and_unsubscribes_after_the_last_member():
    layer = RecordingLayer()
    hub = Hub(layer, asyncio.get_running_loop())
    ann, bob = Member(), Member()

    await hub.join("room", ann)
    await hub.join("room", bob)
    await hub.join("mod", ann)
    await hub.leave("room", ann)
    subscribed = list(layer.calls)
    await hub.leave("room", bob)

    assert subscribed == [("add", "room"), ("add", "mod")]
    assert layer.calls[-1] == ("discard", "room")
    assert hub.members == {"mod": {ann}}
    hub.task.cancel()


async def test_each_message_goes_once_to_every_local_member_of_its_group_in_order():
    layer = RecordingLayer()
    hub = Hub(layer, asyncio.get_running_loop())
    ann, bob, other = Member(), Member(), Member()
    await hub.join("room", ann)
    await hub.join("room", bob)
    await hub.join("elsewhere", other)

    for n in range(3):
        layer.queue.put_nowait({"type": "deliver", "group": "room", "n": n})
    layer.queue.put_nowait({"type": "deliver", "group": "unknown", "n": 9})
    await settle()

    assert [m["n"] for m in ann.taken] == [0, 1, 2] == [m["n"] for m in bob.taken]
    assert other.taken == []
    hub.task.cancel()


async def test_forget_drops_a_member_at_once_and_leave_empty_unsubscribes_what_nobody_needs():
    layer = RecordingLayer()
    hub = Hub(layer, asyncio.get_running_loop())
    ann, bob = Member(), Member()
    await hub.join("room", ann)
    await hub.join("room", bob)
    await hub.join("m.ann", ann)

    empty = hub.forget(ann, ["room", "m.ann"])
    layer.queue.put_nowait({"type": "deliver", "group": "m.ann"})
    await settle()
    await hub.leave_empty(empty)

    assert empty == ["m.ann"] and ann.taken == []
    assert ("discard", "m.ann") in layer.calls and ("discard", "room") not in layer.calls
    hub.task.cancel()


async def test_a_failing_member_does_not_stop_delivery_to_the_others():
    layer = RecordingLayer()
    hub = Hub(layer, asyncio.get_running_loop())

    class Broken(Member):
        async def take(self, message: dict) -> None:
            raise RuntimeError("socket gone")

    broken, fine = Broken(), Member()
    await hub.join("room", broken)
    await hub.join("room", fine)
    layer.queue.put_nowait({"type": "deliver", "group": "room"})
    await settle()

    assert len(fine.taken) == 1
    hub.task.cancel()


class ArrivalsLayer(RecordingLayer):
    """Like signaling.subscriber's: what has arrived waits in ``arrivals``."""

    def __init__(self) -> None:
        super().__init__()
        import collections

        self.arrivals: collections.deque = collections.deque()
        self.more = asyncio.Event()

    async def receive(self, channel: str) -> dict:
        while not self.arrivals:
            self.more.clear()
            await self.more.wait()
        return self.arrivals.popleft()


async def test_a_backlog_is_handed_out_one_message_per_turn_of_the_loop():
    layer = ArrivalsLayer()
    hub = Hub(layer, asyncio.get_running_loop())
    log: list[str] = []

    class Logging(Member):
        async def take(self, message: dict) -> None:
            log.append(f"message {message['n']}")

    await hub.join("room", Logging())
    await settle()

    async def other_work() -> None:
        for k in range(3):
            log.append(f"other {k}")
            await asyncio.sleep(0)

    layer.arrivals.extend({"type": "deliver", "group": "room", "n": n} for n in range(3))
    layer.more.set()
    other = asyncio.create_task(other_work())
    await settle()

    # Other work ran between the messages of the backlog, not after all of them.
    assert log.index("other 1") < log.index("message 2")
    assert [entry for entry in log if entry.startswith("message")] == ["message 0", "message 1", "message 2"]
    await other
    hub.task.cancel()
