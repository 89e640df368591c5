"""signaling.chat_writer: messages that arrive while a store runs are stored together next."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from django.db import OperationalError

from rooms import live
from signaling import chat_writer

ACTOR = live.Actor(uuid.uuid4(), uuid.uuid4(), 1)
NOW = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)


class FakeStore:
    """Stands in for the database call: records each batch; the first one waits to be released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_next = False
        self.seq = 0

    async def run(self, fn, requests):
        assert fn is live.post_chats
        self.batches.append([r.client_id for r in requests])
        if len(self.batches) == 1:
            await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise OperationalError("the server closed the connection")
        results = []
        for request in requests:
            if request.text == "refuse me":
                results.append(live.LiveError("chat.not_allowed"))
                continue
            self.seq += 1
            results.append(live.ChatPosted(live.ChatView(self.seq, "m", request.text, None, NOW, False), True))
        return results


@pytest.fixture
def store(monkeypatch):
    fake = FakeStore()
    monkeypatch.setattr(chat_writer.db, "run", fake.run)
    return fake


def post(client_id: str, text: str = "hello") -> asyncio.Task:
    return asyncio.create_task(chat_writer.chat_writer().post(live.ChatRequest(ACTOR, client_id, text)))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_message_goes_at_once_and_those_arriving_meanwhile_go_together(store):
    first = post("a")
    await settle()
    waiting = [post(name) for name in "bcde"]
    await settle()
    assert store.batches == [["a"]]  # b..e wait for the running call

    store.release.set()
    results = await asyncio.gather(first, *waiting)

    assert store.batches == [["a"], ["b", "c", "d", "e"]]
    assert [r.message.seq for r in results] == [1, 2, 3, 4, 5]


async def test_a_refusal_reaches_its_sender_only(store):
    store.release.set()
    sent = [post("a"), post("b", "refuse me"), post("c")]

    results = await asyncio.gather(*sent, return_exceptions=True)

    assert isinstance(results[1], live.LiveError) and results[1].code == "chat.not_allowed"
    assert [results[0].message.seq, results[2].message.seq] == [1, 2]


async def test_a_database_error_reaches_every_sender_of_that_call_and_the_next_call_works(store):
    store.fail_next = True
    store.release.set()
    failed = await asyncio.gather(post("a"), post("b"), return_exceptions=True)

    later = await post("c")

    assert [type(r) for r in failed] == [OperationalError, OperationalError]
    assert later.message.seq == 1
    assert store.batches == [["a", "b"], ["c"]]
