"""signaling.publisher: the fan-out's PUBLISH without waiting for replies, against a real redis-server."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from signaling import fanout, publisher
from tests.signaling.processes import PrivateRedis


class Subscriber:
    """A plain redis-py subscriber: what any process's layer receives on a channel."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = aioredis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.channel = channel

    async def __aenter__(self) -> Subscriber:
        await self.pubsub.subscribe(self.channel)
        await self.pubsub.get_message(timeout=1)  # the subscribe confirmation
        return self

    async def __aexit__(self, *exc) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()

    async def take(self, count: int, timeout: float = 5) -> list[bytes]:
        got: list[bytes] = []
        async with asyncio.timeout(timeout):
            while len(got) < count:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None:
                    got.append(message["data"])
        return got


def test_pack_writes_a_resp_array_of_bulk_strings():
    assert publisher.pack(b"PUBLISH", b"ch", b"\x00\r\n") == b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$3\r\n\x00\r\n\r\n"


async def test_fanout_send_publishes_what_group_send_would_on_the_same_channel(private_redis):
    layer = RedisPubSubChannelLayer(hosts=[private_redis.url], prefix="t")
    plain = publisher.for_layer(layer)
    assert plain is not None
    channel = plain[1]._get_group_channel_name("s.abc.room")
    message = {"type": "deliver", "audience": "room", "frame": '{"type":"chat.message"}', "seq": 7}
    async with Subscriber(private_redis.url, channel) as subscriber:
        await fanout.send(layer, "s.abc.room", message)  # the plain publisher
        await layer.group_send("s.abc.room", {**message, "group": "s.abc.room"})  # channels-redis's own
        ours, theirs = await subscriber.take(2)
    assert plain[0]._connection is not None  # fanout.send went through the plain publisher
    assert ours == theirs
    assert layer.deserialize(ours) == {**message, "group": "s.abc.room"}
    plain[0].close()
    await layer.flush()


async def test_many_publishes_arrive_in_order_and_every_reply_is_counted(private_redis):
    plain = publisher.Publisher(private_redis.url)
    async with Subscriber(private_redis.url, "ordered") as subscriber:
        for k in range(300):
            await plain.publish("ordered", b"%d" % k)
        got = await subscriber.take(300)
    assert got == [b"%d" % k for k in range(300)]
    assert plain._connection.replies == 300
    plain.close()


async def test_a_server_with_a_password_gets_auth_first_and_a_wrong_one_is_refused(tmp_path):
    server = PrivateRedis(tmp_path, "--requirepass", "s3cret")
    server.start()
    try:
        good = publisher.Publisher(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        async with Subscriber(f"redis://:s3cret@127.0.0.1:{server.port}/0", "private") as subscriber:
            await good.publish("private", b"hello")
            assert await subscriber.take(1) == [b"hello"]
        good.close()

        wrong = publisher.Publisher(f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(ConnectionError, match="refused AUTH"):
            await wrong.publish("private", b"lost")
    finally:
        server.kill()


async def test_an_error_reply_is_logged(private_redis, caplog):
    plain = publisher.Publisher(private_redis.url)
    await plain.publish("c", b"x")
    # Not a PUBLISH, but the same connection: Redis's error answer must show in the log.
    await plain._connection.send(publisher.pack(b"NO-SUCH-COMMAND"))
    with caplog.at_level(logging.WARNING, logger="signaling.publisher"):
        async with asyncio.timeout(5):
            while plain._connection.replies < 2:
                await asyncio.sleep(0.01)
    assert any("Redis refused a publish: -ERR unknown command" in r.getMessage() for r in caplog.records)
    plain.close()


async def test_redis_down_raises_and_a_restarted_redis_is_reconnected(private_redis):
    plain = publisher.Publisher(private_redis.url)
    await plain.publish("c", b"before")
    private_redis.kill()
    async with asyncio.timeout(5):  # the loss is noticed (connection_lost) ...
        while not plain._connection.closed:
            await asyncio.sleep(0.01)
    with pytest.raises(OSError):  # ... and the next publish says so (ConnectionError is an OSError)
        await plain.publish("c", b"while down")

    private_redis.start()  # same port
    async with Subscriber(private_redis.url, "c") as subscriber:
        await plain.publish("c", b"after")
        assert await subscriber.take(1) == [b"after"]
    plain.close()


async def test_only_a_pubsub_layer_on_one_plain_host_gets_a_publisher():
    assert publisher.for_layer(InMemoryChannelLayer()) is None
    assert publisher.for_layer(RedisPubSubChannelLayer(hosts=["rediss://127.0.0.1:6380/0"])) is None
    two = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0"])
    assert publisher.for_layer(two) is None
    one = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379/0"])
    first = publisher.for_layer(one)
    assert first is not None and first is publisher.for_layer(one)  # one per event loop
    with pytest.raises(ValueError):
        publisher.Publisher("rediss://127.0.0.1:6380/0")


async def test_a_counted_publish_answers_how_many_subscribers_received_it(private_redis):
    plain = publisher.Publisher(private_redis.url)
    assert await plain.publish_counted("counted", b"nobody") == 0
    async with Subscriber(private_redis.url, "counted") as first, Subscriber(private_redis.url, "counted"):
        await plain.publish("counted", b"uncounted")  # its reply is not taken for the next one's
        assert await plain.publish_counted("counted", b"two") == 2
        assert await first.take(2) == [b"uncounted", b"two"]
    plain.close()
