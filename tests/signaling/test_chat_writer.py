"""signaling.chat_writer: messages that arrive while a store runs are stored together next."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from django.db import OperationalError

from rooms import live
from signaling import chat_writer, db

ACTOR = live.Actor(uuid.uuid4(), uuid.uuid4(), 1)
NOW = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)


class FakeStore:
    """Stands in for the database call: records each batch; the first one waits to be released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.seq = 0

    async def store(self, requests):
        self.batches.append([r.client_id for r in requests])
        if len(self.batches) == 1:
            await self.release.wait()
        if any(r.text == "fail this call" for r in requests):
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
    monkeypatch.setattr(chat_writer, "store", fake.store)
    return fake


def post(client_id: str, text: str = "hello") -> asyncio.Task:
    return asyncio.create_task(chat_writer.chat_writer().submit(live.ChatRequest(ACTOR, client_id, text)))


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
    first = post("a")
    await settle()
    failing = [post("b", "fail this call"), post("c")]
    await settle()
    store.release.set()
    failed = await asyncio.gather(*failing, return_exceptions=True)

    later = await post("d")

    assert (await first).message.seq == 1
    assert [type(r) for r in failed] == [OperationalError, OperationalError]
    assert later.message.seq == 2
    assert store.batches == [["a"], ["b", "c"], ["d"]]


# --- the store itself, on a real database ----------------------------------------------------------


@pytest.fixture
def room(transactional_db):
    """A live session with a therapist and two participants in it (on the real clock)."""
    from django.utils import timezone

    from tests.factories import make_live_clinic

    clinic = make_live_clinic(timezone.now())
    seats = {}
    for name in ("lead", "pat", "sam"):
        user = getattr(clinic, name)
        result = live.join(clinic.session.pk, user)
        seats[name] = (live.Actor(clinic.session.pk, user.pk, result.epoch), result.member.member_id)
    return clinic, seats


class ThreadCalls:
    """Records what goes to the database thread (signaling.db.run), and runs it."""

    def __init__(self, run) -> None:
        self.calls: list[str] = []
        self._run = run

    async def run(self, fn, *args, **kwargs):
        self.calls.append(fn.__name__)
        return await self._run(fn, *args, **kwargs)


@pytest.fixture
def thread_calls(monkeypatch):
    calls = ThreadCalls(chat_writer.db.run)
    monkeypatch.setattr(chat_writer.db, "run", calls.run)
    return calls


async def test_the_store_answers_as_post_chats_does_and_sends_only_the_common_case_from_the_loop(
    room, thread_calls, close_worker_connection
):
    from asgiref.sync import sync_to_async

    from rooms.models import ChatMessage

    clinic, seats = room
    (pat, pat_id), (sam, _), (lead, lead_id) = seats["pat"], seats["sam"], seats["lead"]

    common = await chat_writer.store(
        [
            live.ChatRequest(pat, "p-1", ' "quoted", {braced} \\ and ,commas, '),
            live.ChatRequest(lead, "l-1", "from the therapist"),
            live.ChatRequest(pat, "p-2", "to my therapist", to_therapists=True),
        ]
    )
    stored_by_the_loop_alone = list(thread_calls.calls)
    mixed = await chat_writer.store(
        [
            live.ChatRequest(sam, "s-1", "next"),
            live.ChatRequest(pat, "p-1", "resent"),
            live.ChatRequest(lead, "l-2", "a private reply", thread=pat_id),
            live.ChatRequest(sam, "s-2", "   "),
        ]
    )

    # The common case went from the event loop, nothing to the database thread.
    assert stored_by_the_loop_alone == ([] if db.on_postgresql() else ["post_chats"])
    assert [(r.message.seq, r.message.author, r.message.text, r.message.thread) for r in common] == [
        (1, pat_id, '"quoted", {braced} \\ and ,commas,', None),
        (2, lead_id, "from the therapist", None),
        (3, pat_id, "to my therapist", pat_id),
    ]
    assert all(r.created for r in common)
    # The rest were answered by the general path: the resend, the private reply, the empty text.
    assert mixed[0].message.seq == 4 and mixed[0].created
    assert mixed[1] == live.ChatPosted(message=common[0].message, created=False)
    assert (mixed[2].message.seq, mixed[2].message.thread) == (5, pat_id)
    assert isinstance(mixed[3], live.LiveError) and mixed[3].code == "chat.empty"
    if db.on_postgresql():
        assert thread_calls.calls == ["answer_chats"]
    stored = await sync_to_async(lambda: list(ChatMessage.objects.order_by("seq").values_list("seq", "text")))()
    assert [text for _, text in stored] == [
        '"quoted", {braced} \\ and ,commas,',
        "from the therapist",
        "to my therapist",
        "next",
        "a private reply",
    ]


async def test_a_race_the_checks_cannot_see_sends_the_batch_to_the_general_path(
    room, thread_calls, monkeypatch, require_postgres
):
    from django.db import IntegrityError

    clinic, seats = room

    async def clash(*args):
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(chat_writer.pg_loop.LoopConnection, "execute", clash)

    results = await chat_writer.store([live.ChatRequest(seats["pat"][0], "p-1", "hello")])

    assert thread_calls.calls == ["answer_chats"]
    assert results[0].created and results[0].message.seq == 1
