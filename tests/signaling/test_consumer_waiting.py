"""The waiting room and admission: knock, the therapists' live waiting list, admit, admit all, deny, lock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from rooms.models import AdmissionPolicy, AuditAction, SeatState, SessionRemoval
from tests.factories import make_live_clinic
from tests.signaling.helpers import audit, error, frame, member, room, seat, since, welcome

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def knock(live):
    """The therapist admits everyone."""
    live.session.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
    live.session.save()
    return live


def waiting_state(message: str = "", opens_at: str | None = None) -> dict:
    return {"opens_at": opens_at, "message": message}


async def test_waiting_participant_sees_only_own_waiting_state(knock, sockets):
    lead, _ = await sockets.enter(knock.lead, knock.session)

    pat = await sockets.open(knock.pat, knock.session)
    hello = await pat.recv()
    await lead.recv_type("waiting.list")
    await lead.send("chat.send", {"text": "Welcome, everyone"})
    await lead.recv_type("chat.message")
    co, _ = await sockets.enter(knock.co, knock.session)

    assert hello == welcome(hello, role="participant", state="waiting", waiting=waiting_state())
    await pat.quiet()  # no chat, no member.joined for the co-therapist, no roster
    await pat.send("chat.send", {"text": "let me in"})
    assert await pat.recv() == error("perm.waiting", "c-1")
    await pat.send("chat.history", {"after_seq": 0})
    assert (await pat.recv())["code"] == "perm.waiting"
    await co.quiet()


async def test_therapist_sees_waiting_list_live(knock, sockets):
    lead, _ = await sockets.enter(knock.lead, knock.session)

    pat, pat_hello = await sockets.enter(knock.pat, knock.session)
    first = await lead.recv()
    sam, sam_hello = await sockets.enter(knock.sam, knock.session)
    second = await lead.recv()
    await pat.drop()
    third = await lead.recv()

    pat_entry = {
        "member": pat_hello["member"],
        "name": "Pat P.",
        "since": await since(knock.session, knock.pat),
        "presence": "connected",
    }
    sam_entry = {
        "member": sam_hello["member"],
        "name": "Sam S.",
        "since": await since(knock.session, knock.sam),
        "presence": "connected",
    }
    assert first == frame("waiting.list", sender=pat_hello["member"], entries=[pat_entry])
    assert second == frame("waiting.list", sender=sam_hello["member"], entries=[pat_entry, sam_entry])
    assert third == frame(
        "waiting.list", sender=pat_hello["member"], entries=[{**pat_entry, "presence": "reconnecting"}, sam_entry]
    )
    await sam.quiet()


async def test_admit_one_moves_participant_into_room(knock, sockets):
    lead, lead_hello = await sockets.enter(knock.lead, knock.session)
    pat, pat_hello = await sockets.enter(knock.pat, knock.session)
    sam, _ = await sockets.enter(knock.sam, knock.session)
    await lead.recv_type("waiting.list")
    await lead.recv_type("waiting.list")

    await lead.send("mod.admit", {"member": pat_hello["member"]})

    pat_member = member(pat_hello["member"], "Pat P.")
    lead_member = member(lead_hello["member"], "Lee L.", "moderator")
    assert await lead.recv() == frame("ack", re="c-1")
    assert await lead.recv() == frame("member.joined", sender=lead_hello["member"], member=pat_member)
    remaining = (await lead.recv())["entries"]
    assert [entry["member"] for entry in remaining] == [sam.member_id]
    assert await pat.recv() == frame("admitted", room=room([lead_member, pat_member]))
    await asyncio.gather(pat.quiet_but_own_join(), sam.quiet())
    assert await audit(AuditAction.ADMITTED) == [(knock.session.pk, knock.lead.pk, knock.pat.pk, "")]
    # Now in the room: the chat reaches them.
    await lead.send("chat.send", {"text": "Hello Pat"})
    await lead.recv_type("chat.message")
    assert (await pat.recv())["message"]["text"] == "Hello Pat"
    await sam.quiet()


async def test_admit_all_lets_everyone_in(knock, sockets):
    lead, lead_hello = await sockets.enter(knock.lead, knock.session)
    pat, pat_hello = await sockets.enter(knock.pat, knock.session)
    sam, sam_hello = await sockets.enter(knock.sam, knock.session)
    await lead.recv_type("waiting.list")
    await lead.recv_type("waiting.list")

    await lead.send("mod.admit_all")

    lead_member = member(lead_hello["member"], "Lee L.", "moderator")
    pat_member, sam_member = member(pat_hello["member"], "Pat P."), member(sam_hello["member"], "Sam S.")
    # Admitted at the same instant: the roster breaks the tie by member id.
    admitted = sorted([pat_member, sam_member], key=lambda m: m["member"])
    assert [await lead.recv() for _ in range(4)] == [
        frame("ack", re="c-1"),
        frame("member.joined", sender=lead_hello["member"], member=pat_member),
        frame("member.joined", sender=lead_hello["member"], member=sam_member),
        frame("waiting.list", sender=lead_hello["member"], entries=[]),
    ]
    assert (await pat.recv())["type"] == "admitted"
    sam_admitted = await sam.recv()
    assert sam_admitted == frame("admitted", room=room([lead_member, *admitted]))


async def test_deny_with_message_closes_4403_and_cannot_rejoin(knock, sockets):
    lead, lead_hello = await sockets.enter(knock.lead, knock.session)
    pat, pat_hello = await sockets.enter(knock.pat, knock.session)
    await lead.recv_type("waiting.list")

    await lead.send("mod.deny", {"member": pat_hello["member"], "message": "Please call the clinic first."})

    assert await pat.recv() == frame("denied", sender=lead_hello["member"], message="Please call the clinic first.")
    assert await pat.closed() == 4403
    assert await lead.recv() == frame("ack", re="c-1")
    assert await lead.recv() == frame("waiting.list", sender=lead_hello["member"], entries=[])
    removal = await sync_to_async(SessionRemoval.objects.get)(session=knock.session, user=knock.pat)
    assert removal.reason == "denied"
    accepted, _, _ = await sockets.connect(knock.pat, knock.session)
    assert accepted is False
    assert await audit(AuditAction.HANDSHAKE_REFUSED) == [(knock.session.pk, knock.pat.pk, None, "session.removed")]


async def test_waiting_room_message_reaches_only_people_waiting(knock, sockets):
    lead, lead_hello = await sockets.enter(knock.lead, knock.session)
    co, _ = await sockets.enter(knock.co, knock.session)
    await lead.recv_type("member.joined")
    pat, _ = await sockets.enter(knock.pat, knock.session)
    await lead.recv_type("waiting.list")
    await co.recv_type("waiting.list")

    await lead.send("mod.waiting_message", {"text": "We start in 5 minutes <3"})

    assert await pat.recv() == frame(
        "waiting", sender=lead_hello["member"], waiting=waiting_state("We start in 5 minutes <3")
    )
    assert await lead.recv() == frame("ack", re="c-1")
    await co.quiet()
    await sync_to_async(knock.session.refresh_from_db)()
    assert knock.session.waiting_room_message == "We start in 5 minutes <3"  # later arrivals see it too
    # The audit records that a message was sent, never its text.
    assert await audit(AuditAction.WAITING_MESSAGE) == [(knock.session.pk, knock.lead.pk, None, "")]


async def test_lock_refuses_new_participant_knock_reaches_therapist_and_therapist_enters(live, sockets):
    lead, lead_hello = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")

    await lead.send("mod.lock")
    assert await lead.recv() == frame("ack", re="c-1")
    assert await lead.recv() == frame("mod.locked", sender=lead_hello["member"], locked=True)
    assert await pat.recv() == frame("mod.locked", sender=lead_hello["member"], locked=True)
    accepted, _, _ = await sockets.connect(live.sam, live.session)
    knock = await lead.recv()
    co, co_hello = await sockets.enter(live.co, live.session)

    assert accepted is False
    assert knock == frame("knock", name="Sam S.")
    assert co_hello["room"]["locked"] is True
    assert await audit(AuditAction.HANDSHAKE_REFUSED) == [(live.session.pk, live.sam.pk, None, "room.locked")]
    assert await audit(AuditAction.LOCKED) == [(live.session.pk, live.lead.pk, None, "")]
    await pat.recv_type("member.joined")  # the co-therapist
    await lead.recv_type("member.joined")
    await pat.quiet()
    await lead.send("mod.unlock")
    assert await lead.recv() == frame("ack", re="c-2")
    sam, sam_hello = await sockets.enter(live.sam, live.session)
    assert sam_hello["state"] == "admitted"


async def test_waiting_participant_admitted_automatically_at_start(transactional_db, sockets, settings):
    soon = await sync_to_async(make_live_clinic)(timezone.now(), starts_in=timedelta(seconds=1))
    lead, lead_hello = await sockets.enter(soon.lead, soon.session)

    pat, hello = await sockets.enter(soon.pat, soon.session)
    await lead.recv_type("waiting.list")
    admitted = await pat.recv()

    starts_at = hello["waiting"]["opens_at"]
    assert hello["state"] == "waiting"
    assert starts_at is not None
    pat_member = member(hello["member"], "Pat P.")
    assert admitted == frame("admitted", room=room([member(lead_hello["member"], "Lee L.", "moderator"), pat_member]))
    assert await lead.recv() == frame("member.joined", member=pat_member)  # the clock let Pat in: from the server
    assert await lead.recv() == frame("waiting.list", entries=[])
    assert (await seat(soon.session, soon.pat)).state == SeatState.ADMITTED
