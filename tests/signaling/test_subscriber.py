"""signaling.subscriber: the hub's subscriptions read straight off the socket, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from signaling import fanout, subscriber
from signaling.hub import get_hub
from tests.signaling.processes import PrivateRedis


def test_parse_takes_complete_replies_and_leaves_the_rest():
    buffer = bytearray(
        b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\nl\r\n"  # a payload may hold CRLF
        b"+OK\r\n-ERR no\r\n$-1\r\n"
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$12\r\nincompl"
    )
    replies = subscriber.parse(buffer)
    assert replies[:4] == [[b"subscribe", b"ch", 1], [b"message", b"ch", b"he\r\nl"], b"OK", replies[3]]
    assert isinstance(replies[3], subscriber.ProtocolError) and str(replies[3]) == "ERR no"
    assert replies[4] is None
    assert bytes(buffer) == b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$12\r\nincompl"  # kept for the next read
    buffer += b"ete!!\r\n"
    assert subscriber.parse(buffer) == [[b"message", b"ch", b"incomplete!!"]]
    assert buffer == bytearray()
    with pytest.raises(subscriber.ProtocolError):
        subscriber.parse(bytearray(b"$2\r\nabc\r\n"))


async def channels_of(url: str, pattern: str) -> list[bytes]:
    client = aioredis.from_url(url)
    try:
        return await client.pubsub_channels(pattern)
    finally:
        await client.aclose()


async def eventually(predicate, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def test_a_group_receives_what_fanout_sends_until_it_is_discarded(private_redis):
    layer = RedisPubSubChannelLayer(hosts=[private_redis.url], prefix="t")
    subscriptions = subscriber.Subscriptions.of(layer)
    assert subscriptions is not None and subscriptions is subscriber.Subscriptions.of(layer)

    await subscriptions.group_add("s.abc.room", "hub")
    await eventually(lambda: _has_channels(private_redis.url, 1))
    await fanout.send(layer, "s.abc.room", {"type": "deliver", "audience": "room", "seq": 1})
    await fanout.send(layer, "s.abc.other", {"type": "deliver", "audience": "room", "seq": 2})  # not ours
    await fanout.send(layer, "s.abc.room", {"type": "deliver", "audience": "room", "seq": 3})
    async with asyncio.timeout(5):
        first, second = await subscriptions.receive("hub"), await subscriptions.receive("hub")
    assert [first["seq"], second["seq"]] == [1, 3] and first["group"] == "s.abc.room"

    await subscriptions.group_discard("s.abc.room", "hub")
    await eventually(lambda: _has_channels(private_redis.url, 0))  # nothing left subscribed in Redis
    await fanout.send(layer, "s.abc.room", {"type": "deliver", "audience": "room", "seq": 4})
    await asyncio.sleep(0.2)
    assert not subscriptions.arrivals
    subscriptions.close()


async def _has_channels(url: str, count: int) -> bool:
    return len(await channels_of(url, "t__group__*")) == count


async def test_after_redis_restarts_the_next_receive_subscribes_again(private_redis):
    layer = RedisPubSubChannelLayer(hosts=[private_redis.url], prefix="t")
    subscriptions = subscriber.Subscriptions.of(layer)
    await subscriptions.group_add("s.abc.room", "hub")
    receiving = asyncio.ensure_future(subscriptions.receive("hub"))
    await asyncio.sleep(0.1)

    private_redis.kill()
    await asyncio.sleep(0.2)
    with pytest.raises(OSError):  # Redis away: receive says so, and the hub retries
        await receiving
    private_redis.start()  # same port, empty: no subscriptions
    receiving = asyncio.ensure_future(subscriptions.receive("hub"))
    await eventually(lambda: _has_channels(private_redis.url, 1))  # subscribed again on its own
    await fanout.send(layer, "s.abc.room", {"type": "deliver", "audience": "room", "seq": 9})
    async with asyncio.timeout(5):
        assert (await receiving)["seq"] == 9
    subscriptions.close()


async def test_redis_down_makes_group_add_raise(tmp_path):
    server = PrivateRedis(tmp_path)  # never started: nothing listens on its port
    layer = RedisPubSubChannelLayer(hosts=[server.url], prefix="t")
    with pytest.raises(OSError):
        await subscriber.Subscriptions.of(layer).group_add("s.abc.room", "hub")


async def test_the_hub_reads_through_it_only_on_a_plain_pubsub_layer(private_redis):
    plain = RedisPubSubChannelLayer(hosts=[private_redis.url], prefix="t")
    assert isinstance(get_hub(plain).layer, subscriber.Subscriptions)
    memory = InMemoryChannelLayer()
    assert get_hub(memory).layer is memory
    assert subscriber.Subscriptions.of(RedisPubSubChannelLayer(hosts=["rediss://127.0.0.1:1/0"])) is None
