"""Groups of one process (signaling.hub): kept off Redis while no other process listens, against a real
redis-server. Each layer object stands for one server process: its own hub, subscription and publisher."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from channels_redis.pubsub import RedisPubSubChannelLayer

from signaling import fanout
from signaling import hub as hub_module
from signaling.hub import get_hub

GROUP = "s.abc.room"


class Member:
    def __init__(self) -> None:
        self.taken: list[dict] = []

    async def take(self, message: dict) -> None:
        self.taken.append(message)

    def numbers(self) -> list[int]:
        return [m["n"] for m in self.taken]


def process(url: str) -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer(hosts=[url], prefix="t")


async def publishes(url: str) -> int:
    """How many PUBLISH commands Redis has run since its statistics were reset."""
    client = aioredis.from_url(url)
    try:
        stats = await client.info("commandstats")
        return stats.get("cmdstat_publish", {}).get("calls", 0)
    finally:
        await client.aclose()


async def reset_stats(url: str) -> None:
    client = aioredis.from_url(url)
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()


async def eventually(predicate, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def send(layer, n: int, group: str = GROUP) -> None:
    await fanout.send(layer, group, {"type": "deliver", "audience": "room", "n": n})


async def first_alone(url: str):
    """Two processes on one Redis; the first has a member (ann) in GROUP, alone; bob is for the second."""
    first, second = process(url), process(url)
    ann, bob = Member(), Member()
    await get_hub(first).join(GROUP, ann)
    assert GROUP in get_hub(first).solo
    return first, second, ann, bob


def stop(*layers) -> None:
    for layer in layers:
        hub = get_hub(layer)
        hub.task.cancel()
        hub.layer.close()


async def test_a_group_no_other_process_listens_to_is_handed_out_without_publishing(private_redis):
    layer = process(private_redis.url)
    hub = get_hub(layer)
    ann, bob = Member(), Member()
    await hub.join(GROUP, ann)
    await hub.join(GROUP, bob)
    assert GROUP in hub.solo

    await reset_stats(private_redis.url)
    for n in range(20):
        await send(layer, n)
    await eventually(lambda: len(bob.taken) == 20)

    assert ann.numbers() == list(range(20)) == bob.numbers()
    assert await publishes(private_redis.url) == 0  # not one message went through Redis
    await hub.leave(GROUP, ann)
    await hub.leave(GROUP, bob)
    assert GROUP not in hub.solo  # no local member left: anything sent to it is published
    stop(layer)


async def test_a_second_process_makes_the_group_shared_both_ways(private_redis):
    first, second, ann, bob = await first_alone(private_redis.url)

    await get_hub(second).join(GROUP, bob)
    # The join returned after the first process answered: neither keeps the group to itself now.
    assert GROUP not in get_hub(first).solo and GROUP not in get_hub(second).solo

    await reset_stats(private_redis.url)
    await send(first, 1)
    await send(second, 2)
    await eventually(lambda: len(ann.taken) == 2 and len(bob.taken) == 2)
    assert sorted(ann.numbers()) == [1, 2] == sorted(bob.numbers())
    assert await publishes(private_redis.url) == 2
    stop(first, second)


async def test_nothing_sent_after_another_process_joined_is_missed_there(private_redis):
    """The first process sends without pause while the second joins: every message sent once the
    second's join has returned reaches the second's member (the first stopped keeping it local before
    it answered), and each member gets them in the order sent. The first is slow to hear the hello
    (a busy process): the second's join must wait for its answer."""
    first, second, ann, bob = await first_alone(private_redis.url)
    heard = get_hub(first)._heard

    async def busy_then_heard(message: dict) -> None:
        await asyncio.sleep(0.1)
        await heard(message)

    get_hub(first)._heard = busy_then_heard
    sent: list[int] = []
    joined_at: list[int] = []

    async def sender() -> None:
        for n in range(400):
            await send(first, n)
            sent.append(n)
            await asyncio.sleep(0.0005)

    sending = asyncio.ensure_future(sender())
    await asyncio.sleep(0.05)
    await get_hub(second).join(GROUP, bob)
    joined_at.append(len(sent))
    await sending
    await eventually(lambda: len(ann.taken) == 400 and bob.taken and bob.taken[-1]["n"] == 399)

    assert 0 < joined_at[0] < 400, "the join should land in the middle of the stream"
    assert ann.numbers() == list(range(400))
    got = bob.numbers()
    assert got == sorted(got)
    assert set(range(joined_at[0], 400)) <= set(got)
    stop(first, second)


async def test_a_listener_that_never_answers_makes_the_group_shared(private_redis, monkeypatch):
    monkeypatch.setattr(hub_module, "ANNOUNCE_TIMEOUT", 0.3)
    layer = process(private_redis.url)
    outsider = aioredis.from_url(private_redis.url)
    pubsub = outsider.pubsub()
    channel = layer._get_layer()._get_group_channel_name(GROUP)
    await pubsub.subscribe(channel)  # counted by Redis, but no hub: it never acks
    ann = Member()

    await get_hub(layer).join(GROUP, ann)
    assert GROUP not in get_hub(layer).solo
    await send(layer, 7)
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None and layer.deserialize(message["data"]).get("n") == 7:
                break
    await eventually(lambda: ann.numbers() == [7])
    await pubsub.aclose()
    await outsider.aclose()
    stop(layer)


async def test_after_redis_restarts_a_process_that_went_alone_meanwhile_learns_of_the_other(private_redis):
    first, second, ann, bob = await first_alone(private_redis.url)

    private_redis.kill()
    await eventually(lambda: not get_hub(first).solo)  # its subscription is gone: publishing again
    private_redis.start()
    # The second joins before the first has subscribed again: alone at that moment.
    await get_hub(second).join(GROUP, bob)
    # The first subscribes again and announces the group: the second publishes from then on.
    await eventually(lambda: GROUP not in get_hub(second).solo and not get_hub(first)._announcing)
    assert GROUP not in get_hub(first).solo

    await send(second, 5)
    await send(first, 6)
    await eventually(lambda: sorted(ann.numbers()) == [5, 6] and sorted(bob.numbers()) == [5, 6])
    stop(first, second)


async def test_a_process_alone_again_after_a_restart_keeps_the_group_local_again(private_redis, monkeypatch):
    # Long enough that only an announcement that waits for its subscription can finish in time.
    monkeypatch.setattr(hub_module, "ANNOUNCE_TIMEOUT", 30)
    layer = process(private_redis.url)
    ann = Member()
    await get_hub(layer).join(GROUP, ann)
    private_redis.kill()
    await eventually(lambda: not get_hub(layer).solo)
    private_redis.start()
    await eventually(lambda: GROUP in get_hub(layer).solo)
    await send(layer, 3)
    await eventually(lambda: ann.numbers() == [3])
    stop(layer)


async def test_the_hubs_own_messages_never_reach_a_connection(private_redis):
    first, second, ann, bob = await first_alone(private_redis.url)
    await get_hub(second).join(GROUP, bob)  # a hello from the second, an ack from the first
    await send(first, 1)
    await eventually(lambda: bob.numbers() == [1] and ann.numbers() == [1])
    assert all(m["type"] == "deliver" for m in ann.taken + bob.taken)
    stop(first, second)
