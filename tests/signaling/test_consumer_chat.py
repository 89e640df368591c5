"""Chat over the socket: stored first, numbered, idempotent, private threads, deletion, history."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from rooms.models import AuditAction, ChatMessage
from signaling.protocol import timestamp
from tests.signaling.helpers import all_quiet, audit, chat, error, frame

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def stored(session) -> list[tuple]:
    return list(
        ChatMessage.objects.filter(session=session)
        .order_by("seq")
        .values_list("seq", "sender__member_id", "text", "thread_participant__member_id", "client_id")
    )


@sync_to_async
def at(session, seq: int) -> str:
    return timestamp(ChatMessage.objects.get(session=session, seq=seq).created_at)


@pytest.fixture
async def room_of_three(live, sockets):
    """The lead therapist, Pat and Sam in the room, everyone's join frames read."""
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    sam, _ = await sockets.enter(live.sam, live.session)
    await lead.recv_type("member.joined")
    await pat.recv_type("member.joined")
    return lead, pat, sam


async def test_chat_stored_then_delivered_with_seq(live, room_of_three):
    lead, pat, sam = room_of_three

    await pat.send("chat.send", {"text": "<b>hello</b> & welcome"}, id="pat-1")

    reply = await pat.recv()
    message = chat(1, pat.member_id, "<b>hello</b> & welcome", await at(live.session, 1))
    assert reply == frame("chat.message", sender=pat.member_id, re="pat-1", message=message)
    # Markup is data: delivered exactly as typed, for the client to render as text.
    assert await lead.recv() == frame("chat.message", sender=pat.member_id, message=message)
    assert await sam.recv() == frame("chat.message", sender=pat.member_id, message=message)
    assert await stored(live.session) == [(1, pat.member_id, "<b>hello</b> & welcome", None, "pat-1")]
    await pat.quiet()


async def test_chat_resend_with_same_id_is_idempotent(live, room_of_three):
    lead, pat, sam = room_of_three
    await pat.send("chat.send", {"text": "are we starting?"}, id="pat-1")
    first = await pat.recv()
    await lead.recv_type("chat.message")
    await sam.recv_type("chat.message")

    await pat.send("chat.send", {"text": "are we starting?"}, id="pat-1")

    assert await pat.recv() == first
    await all_quiet(lead, sam)
    assert len(await stored(live.session)) == 1


async def test_chat_private_to_therapists_not_seen_by_other_participants(live, sockets, room_of_three):
    lead, pat, sam = room_of_three
    co, _ = await sockets.enter(live.co, live.session)
    observer, _ = await sockets.enter(live.admin, live.session)
    for socket in (lead, pat, sam):
        await socket.recv_type("member.joined")
        await socket.recv_type("member.joined")
    await co.recv_type("member.joined")

    await pat.send("chat.send", {"text": "I had a hard week", "to_therapists": True})
    answer = await pat.recv()
    private = chat(1, pat.member_id, "I had a hard week", await at(live.session, 1), thread=pat.member_id)
    assert answer == frame("chat.message", sender=pat.member_id, re="c-1", message=private)
    assert await lead.recv() == frame("chat.message", sender=pat.member_id, message=private)
    assert await co.recv() == frame("chat.message", sender=pat.member_id, message=private)
    await lead.send("chat.send", {"text": "Thank you for telling us", "thread": pat.member_id})

    answer = await lead.recv()
    reply = chat(2, lead.member_id, "Thank you for telling us", await at(live.session, 2), thread=pat.member_id)
    assert answer == frame("chat.message", sender=lead.member_id, re="c-1", message=reply)
    assert await pat.recv() == frame("chat.message", sender=lead.member_id, message=reply)
    assert await co.recv() == frame("chat.message", sender=lead.member_id, message=reply)
    await all_quiet(sam, observer)
    await sam.send("chat.history", {"after_seq": 0})
    assert await sam.recv() == frame("chat.history", re="c-1", after_seq=0, messages=[], more=False)


async def test_chat_private_between_participants_refused(live, room_of_three):
    lead, pat, sam = room_of_three

    await pat.send("chat.send", {"text": "psst", "thread": sam.member_id})

    assert await pat.recv() == error("chat.not_allowed", "c-1")
    await all_quiet(sam, lead)
    assert await stored(live.session) == []


async def test_chat_therapist_deletes_message_for_everyone(live, room_of_three):
    lead, pat, sam = room_of_three
    await sam.send("chat.send", {"text": "my phone number is ..."})
    for socket in (lead, pat, sam):
        await socket.recv_type("chat.message")

    await lead.send("chat.delete", {"seq": 1})

    deleted = frame("chat.deleted", sender=lead.member_id, seq=1)
    assert await lead.recv() == frame("ack", re="c-1")
    assert await lead.recv() == deleted
    assert await pat.recv() == deleted
    assert await sam.recv() == deleted
    await pat.send("chat.history", {"after_seq": 0})
    tombstone = chat(1, sam.member_id, "", await at(live.session, 1), deleted=True)
    assert await pat.recv() == frame("chat.history", re="c-1", after_seq=0, messages=[tombstone], more=False)
    assert await audit(AuditAction.CHAT_DELETED) == [(live.session.pk, live.lead.pk, live.sam.pk, "1")]


async def test_chat_delete_by_participant_refused_and_audited(live, room_of_three):
    lead, pat, sam = room_of_three
    await sam.send("chat.send", {"text": "keep me"})
    for socket in (lead, pat, sam):
        await socket.recv_type("chat.message")

    await pat.send("chat.delete", {"seq": 1})

    assert await pat.recv() == error("perm.denied", "c-1")
    await all_quiet(lead, sam)
    assert (await stored(live.session))[0][2] == "keep me"
    assert await audit(AuditAction.COMMAND_REFUSED) == [(live.session.pk, live.pat.pk, None, "perm.denied")]


async def test_chat_history_is_exactly_after_seq(live, room_of_three):
    lead, pat, sam = room_of_three
    for n in range(1, 5):
        await lead.send("chat.send", {"text": f"point {n}"})
        await lead.recv_type("chat.message")
        await pat.recv_type("chat.message")
        await sam.recv_type("chat.message")

    await pat.send("chat.history", {"after_seq": 2})

    messages = [chat(n, lead.member_id, f"point {n}", await at(live.session, n)) for n in (3, 4)]
    assert await pat.recv() == frame("chat.history", re="c-1", after_seq=2, messages=messages, more=False)


async def test_chat_observer_cannot_post(live, sockets, room_of_three):
    lead, pat, sam = room_of_three
    observer, _ = await sockets.enter(live.admin, live.session)

    await observer.send("chat.send", {"text": "hello from admin"})

    assert await observer.recv() == error("chat.not_allowed", "c-1")
    for socket in (lead, pat, sam):
        await socket.recv_type("member.joined")
    await all_quiet(lead, pat, sam)
