"""sfu.* messages and room.media through the consumer, without a Janus node to reach.

The media path itself (real Janus, synthetic participants) is tested in tests/media/test_broker.py.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from media import sfu
from media.models import SfuRoom
from rooms.models import RoomKind
from tests.signaling.helpers import all_quiet, error, mesh

pytestmark = pytest.mark.django_db(transaction=True)

OFFER = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
SFU_MESSAGES = [
    ("sfu.publish", {"sdp": OFFER}),
    ("sfu.subscribe", {"feeds": None}),
    ("sfu.start", {"sdp": OFFER}),
    ("sfu.trickle", {"handle": "publisher", "candidate": ""}),
    ("sfu.layers", {"layers": {"someone": "low"}}),
]


@sync_to_async
def set_room(session, **fields) -> None:
    for name, value in fields.items():
        setattr(session.room, name, value)
    session.room.save()


async def test_sfu_messages_in_a_mesh_session_refused_with_not_sfu(live, sockets):
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, hello = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")

    for type_, data in SFU_MESSAGES:
        await pat.send(type_, data)
    answers = [await pat.recv() for _ in SFU_MESSAGES]
    await pat.send("ping")

    assert hello["room"]["media"] == mesh(2)
    assert answers == [error("sfu.not_sfu", f"c-{n}") for n in range(1, len(SFU_MESSAGES) + 1)]
    assert (await pat.recv())["type"] == "pong"
    await all_quiet(lead)


async def test_sfu_messages_from_the_waiting_room_refused(live, sockets):
    live.session.admission_policy = "therapist_admits"
    await sync_to_async(live.session.save)()
    pat, hello = await sockets.enter(live.pat, live.session)

    await pat.send("sfu.publish", {"sdp": OFFER})

    assert hello["state"] == "waiting"
    assert await pat.recv() == error("perm.waiting", "c-1")


async def test_one_to_one_room_media_is_p2p(live, sockets):
    await set_room(live.session, kind=RoomKind.INDIVIDUAL)

    _, hello = await sockets.enter(live.lead, live.session)

    assert hello["room"]["media"] == mesh(1, reason="media.one_to_one")


async def test_mesh_past_four_people_is_flagged_crowded(live, sockets):
    people = [live.lead, live.co, live.pat, live.sam, live.kim]
    hellos = [(await sockets.enter(person, live.session))[1] for person in people]

    assert [h["room"]["media"]["crowded"] for h in hellos] == [False, False, False, False, True]
    assert hellos[-1]["room"]["media"] == mesh(5)


async def test_sfu_room_with_janus_unreachable_answers_unavailable_and_ends_cleanly(live, sockets, settings):
    settings.JANUS_URLS = ["ws://127.0.0.1:9"]  # nothing listens: connection refused
    settings.JANUS_API_SECRET = settings.JANUS_ADMIN_KEY = "x" * 24
    lead, hello = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")

    await pat.send("sfu.publish", {"sdp": OFFER})
    refused = await pat.recv()
    await lead.send("mod.end")

    assert hello["room"]["media"] == {"mode": "sfu", "reason": "media.group", "mesh_limit": None, "crowded": False}
    assert refused == error("sfu.unavailable", "c-1")
    assert (await lead.recv())["type"] == "ack"
    assert (await lead.recv())["type"] == "ended"
    assert await lead.closed() == 4410
    row = await sync_to_async(SfuRoom.objects.get)(session=live.session)
    assert row.destroyed_at is not None and row.opened_at is None


async def test_sfu_session_end_by_the_clock_releases_its_room(live, sockets, settings):
    settings.JANUS_URLS = ["ws://127.0.0.1:9"]
    settings.JANUS_API_SECRET = settings.JANUS_ADMIN_KEY = "x" * 24
    settings.SESSION_RECHECK_SECONDS = 0.1
    pat, _ = await sockets.enter(live.pat, live.session)
    # The consumer's database thread claims the room right after the welcome, and releases it as the
    # session ends: the test reads from another thread, so it waits for each.
    claimed = await _eventually(lambda: SfuRoom.objects.filter(session=live.session).first())

    live.session.ends_at = live.session.starts_at + (live.session.ends_at - live.session.starts_at) / 10**6
    await sync_to_async(live.session.save)()

    assert await pat.closed() == 4410
    destroyed = SfuRoom.objects.filter(session=live.session, destroyed_at__isnull=False)
    released = await _eventually(destroyed.first)
    assert claimed.destroyed_at is None and released.destroyed_at is not None


async def _eventually(read, timeout: float = 5.0):
    """``read()`` (an ORM read, run in a worker thread) once it returns something, within ``timeout``."""
    for _ in range(int(timeout / 0.1)):
        found = await sync_to_async(read)()
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("nothing came")


async def test_sfu_rooms_of_sessions_that_ended_unseen_are_swept(live, sockets, settings):
    settings.JANUS_URLS = ["ws://127.0.0.1:9"]
    settings.JANUS_API_SECRET = settings.JANUS_ADMIN_KEY = "x" * 24
    settings.SESSION_RECHECK_SECONDS = 0.1
    await sync_to_async(sfu.claim_room)(live.other_session.pk, settings.JANUS_URLS)
    live.other_session.status = "ended"
    await sync_to_async(live.other_session.save)()

    await sockets.enter(live.pat, live.session)  # any open connection runs the process's watcher

    destroyed = SfuRoom.objects.filter(session=live.other_session, destroyed_at__isnull=False)
    swept = await _eventually(destroyed.first)
    assert swept.destroyed_at is not None
    assert (await sync_to_async(SfuRoom.objects.get)(session=live.session)).destroyed_at is None


@pytest.mark.parametrize(
    "layers",
    [{"someone": "medium"}, {"not a member id!": "low"}, {f"m{n}": "low" for n in range(65)}, ["low"]],
    ids=["unknown-quality", "bad-member-id", "too-many", "not-a-map"],
)
async def test_sfu_layers_with_bad_fields_refused_as_bad_payload(live, sockets, layers):
    lead, _ = await sockets.enter(live.lead, live.session)

    await lead.send("sfu.layers", {"layers": layers})

    assert (await lead.recv())["code"] == "protocol.bad_payload"
