"""Moderation over the socket: therapists only, audited; mute, hard mute, remove (4403), end (4410)..."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from rooms.models import AdmissionPolicy, AuditAction, Seat, SessionRemoval, SessionStatus
from tests.signaling.helpers import all_quiet, audit, error, frame, member

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def seats(session) -> list[dict]:
    return list(Seat.objects.filter(session=session).order_by("member_id").values())


@pytest.fixture
async def room_of_three(live, sockets):
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    sam, _ = await sockets.enter(live.sam, live.session)
    await lead.recv_type("member.joined")
    await pat.recv_type("member.joined")
    return lead, pat, sam


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("mod.mute", {"member": "SAM", "hard": True}),
        ("mod.remove", {"member": "SAM"}),
        ("mod.end", {}),
        ("mod.lock", {}),
        ("mod.admit_all", {}),
        ("mod.mute_all", {}),
        ("mod.spotlight", {"member": "SAM"}),
        ("mod.waiting_message", {"text": "hi"}),
    ],
)
async def test_moderator_command_from_participant_refused_audited_and_changes_nothing(live, room_of_three, type_, data):
    lead, pat, sam = room_of_three
    data = {key: sam.member_id if value == "SAM" else value for key, value in data.items()}
    before = await seats(live.session)

    await pat.send(type_, data)

    assert await pat.recv() == error("perm.denied", "c-1")
    await all_quiet(lead, sam)
    assert await seats(live.session) == before
    session = await sync_to_async(type(live.session).objects.get)(pk=live.session.pk)
    assert (session.status, session.locked, session.spotlight_id) == (SessionStatus.SCHEDULED, False, None)
    assert await audit(AuditAction.COMMAND_REFUSED) == [(live.session.pk, live.pat.pk, None, "perm.denied")]
    await pat.send("ping")
    assert await pat.recv() == frame("pong", re="c-2")


async def test_moderator_targeting_member_of_another_session_refused(live, sockets, room_of_three):
    lead, pat, sam = room_of_three
    outsider, outsider_hello = await sockets.enter(live.outsider, live.other_session)

    await lead.send("mod.mute", {"member": outsider_hello["member"], "hard": True})

    assert await lead.recv() == error("target.not_found", "c-1")
    await all_quiet(outsider, pat)
    assert await audit(AuditAction.COMMAND_REFUSED) == [(live.session.pk, live.lead.pk, None, "target.not_found")]


async def test_therapist_of_another_session_cannot_moderate_here(live, sockets, room_of_three):
    lead, pat, sam = room_of_three
    other, _ = await sockets.enter(live.outsider_therapist, live.other_session)

    await other.send("mod.remove", {"member": pat.member_id})

    assert await other.recv() == error("target.not_found", "c-1")
    await all_quiet(pat, lead)


async def test_hard_mute_participant_cannot_unmute_until_released(live, room_of_three):
    lead, pat, sam = room_of_three
    await pat.send("media.state", {"mic": True, "camera": True})
    unmuted = member(pat.member_id, "Pat P.", mic=True, camera=True)
    for socket in (lead, pat, sam):
        assert await socket.recv() == frame("member.updated", sender=pat.member_id, member=unmuted)

    await lead.send("mod.mute", {"member": pat.member_id, "hard": True})

    hard_muted = member(pat.member_id, "Pat P.", camera=True, hard_muted=True)
    updated = frame("member.updated", sender=lead.member_id, member=hard_muted)
    assert await lead.recv() == frame("ack", re="c-1")
    assert await lead.recv() == updated
    assert await sam.recv() == updated
    assert await pat.recv() == updated
    assert await pat.recv() == frame("mod.muted", sender=lead.member_id, hard=True)
    await pat.send("media.state", {"mic": True, "camera": True})
    assert await pat.recv() == error("mute.hard", "c-2")
    await sam.quiet()
    await lead.send("mod.release_mute", {"member": pat.member_id})
    released = frame("member.updated", sender=lead.member_id, member=member(pat.member_id, "Pat P.", camera=True))
    assert await lead.recv() == frame("ack", re="c-2")
    assert await pat.recv() == released
    assert await pat.recv() == frame("mod.mute_released", sender=lead.member_id)
    await pat.send("media.state", {"mic": True, "camera": True})
    assert await pat.recv() == frame("member.updated", sender=pat.member_id, member=unmuted)
    assert [row[3] for row in await audit(AuditAction.HARD_MUTED)] == [""]
    assert len(await audit(AuditAction.MUTE_RELEASED)) == 1


async def test_soft_mute_and_ask_to_unmute(live, room_of_three):
    lead, pat, sam = room_of_three

    await lead.send("mod.mute", {"member": pat.member_id})
    await lead.send("mod.ask_unmute", {"member": pat.member_id})

    assert await pat.recv() == frame("member.updated", sender=lead.member_id, member=member(pat.member_id, "Pat P."))
    assert await pat.recv() == frame("mod.muted", sender=lead.member_id, hard=False)
    assert await pat.recv() == frame("mod.unmute_requested", sender=lead.member_id)
    await pat.send("media.state", {"mic": True, "camera": False})
    assert (await pat.recv())["member"]["mic"] is True


async def test_remove_closes_4403_and_rejoin_refused(live, sockets, room_of_three):
    lead, pat, sam = room_of_three

    await lead.send("mod.remove", {"member": pat.member_id})

    assert await pat.recv() == frame("removed", sender=lead.member_id)
    assert await pat.closed() == 4403
    left = frame("member.left", sender=lead.member_id, member=pat.member_id)
    assert await lead.recv() == frame("ack", re="c-1")
    assert await lead.recv() == left
    assert await sam.recv() == left
    await pat.drop()
    await sam.quiet()  # the removed socket's disconnect tells nobody anything more
    accepted, _, _ = await sockets.connect(live.pat, live.session)
    assert accepted is False
    assert await sync_to_async(SessionRemoval.objects.filter(session=live.session, user=live.pat).exists)()
    assert await audit(AuditAction.REMOVED) == [(live.session.pk, live.lead.pk, live.pat.pk, "")]


async def test_end_closes_everyone_4410(live, sockets):
    live.session.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
    await sync_to_async(live.session.save)()
    lead, _ = await sockets.enter(live.lead, live.session)
    co, _ = await sockets.enter(live.co, live.session)
    await lead.recv_type("member.joined")
    pat, _ = await sockets.enter(live.pat, live.session)  # waiting
    await lead.recv_type("waiting.list")
    await co.recv_type("waiting.list")

    await lead.send("mod.end")

    ended = frame("ended", sender=lead.member_id)
    assert await lead.recv() == frame("ack", re="c-1")
    for socket in (lead, co, pat):
        assert await socket.recv() == ended
        assert await socket.closed() == 4410
    session = await sync_to_async(type(live.session).objects.get)(pk=live.session.pk)
    assert session.status == SessionStatus.ENDED
    accepted, _, _ = await sockets.connect(live.sam, live.session)
    assert accepted is False


async def test_spotlight_and_hand_queue(live, room_of_three):
    lead, pat, sam = room_of_three

    await sam.send("hand.raise")
    sam_raised = await sam.recv()
    assert await pat.recv() == sam_raised
    assert await lead.recv() == sam_raised
    assert await lead.recv() == frame("hands", sender=sam.member_id, queue=[sam.member_id])
    await pat.send("hand.raise")
    pat_raised = await pat.recv()
    assert await sam.recv() == pat_raised
    assert await lead.recv() == pat_raised
    assert await lead.recv() == frame("hands", sender=pat.member_id, queue=[sam.member_id, pat.member_id])

    assert sam_raised["type"] == pat_raised["type"] == "member.updated"
    assert sam_raised["member"]["hand"] <= pat_raised["member"]["hand"]
    await lead.send("mod.spotlight", {"member": sam.member_id})
    assert await lead.recv() == frame("ack", re="c-1")
    spotlight = frame("mod.spotlight", sender=lead.member_id, member=sam.member_id)
    assert await lead.recv() == spotlight
    assert await pat.recv() == spotlight
    await pat.quiet()  # the queue is the therapists' view
    await lead.send("mod.lower_all_hands")
    assert await lead.recv() == frame("ack", re="c-2")
    assert [(await lead.recv())["type"] for _ in range(3)] == ["member.updated", "member.updated", "hands"]


async def test_camera_off_hard_blocks_camera(live, room_of_three):
    lead, pat, sam = room_of_three

    await lead.send("mod.camera_off", {"member": pat.member_id, "hard": True})

    blocked = member(pat.member_id, "Pat P.", camera_blocked=True)
    assert await pat.recv() == frame("member.updated", sender=lead.member_id, member=blocked)
    assert await pat.recv() == frame("mod.camera_off", sender=lead.member_id, hard=True)
    await pat.send("media.state", {"mic": False, "camera": True})
    assert await pat.recv() == error("camera.blocked", "c-1")
