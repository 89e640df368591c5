"""Presence: duplicate tabs (4409), reconnect within the grace period, resume, expiry, leaving, 4401."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore

from rooms import live as live_domain
from rooms.models import AuditAction, SeatState
from signaling.protocol import timestamp
from tests.signaling.helpers import all_quiet, audit, chat, error, frame, member, room, seat, welcome

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def pair(live, sockets):
    """The lead therapist and Pat in the room."""
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    return lead, pat


async def test_second_tab_replaces_first_with_4409_and_roster_shows_person_once(live, sockets, pair):
    lead, first = pair

    second = await sockets.open(live.pat, live.session)
    hello = await second.recv()

    lead_member = member(lead.member_id, "Lee L.", "moderator")
    pat_member = member(first.member_id, "Pat P.", conn=2)
    assert hello == welcome(hello, role="participant", room=room([lead_member, pat_member]))
    assert hello["member"] == first.member_id
    assert await first.closed() == 4409
    assert await lead.recv() == frame("member.updated", sender=first.member_id, member=pat_member)
    await first.drop()  # the older tab's disconnect must not mark the newer one as reconnecting
    await all_quiet(lead, second)
    assert (await seat(live.session, live.pat)).connected is True
    await second.send("chat.send", {"text": "from the new tab"})
    assert (await second.recv())["message"]["seq"] == 1


async def test_reconnect_within_grace_keeps_seat_without_leave_or_join(live, sockets, pair):
    lead, pat = pair
    sam, _ = await sockets.enter(live.sam, live.session)
    await lead.recv_type("member.joined")
    await pat.recv_type("member.joined")

    await pat.drop()
    reconnecting = await lead.recv()
    again = await sockets.open(live.pat, live.session)
    hello = await again.recv()
    connected = await lead.recv()

    assert reconnecting == frame(
        "member.updated", sender=pat.member_id, member=member(pat.member_id, "Pat P.", presence="reconnecting")
    )
    assert connected == frame("member.updated", sender=pat.member_id, member=member(pat.member_id, "Pat P.", conn=2))
    assert hello["member"] == pat.member_id
    assert await sam.recv() == reconnecting
    assert await sam.recv() == connected
    await all_quiet(lead, sam, again)  # no member.left, no member.joined
    assert await audit(AuditAction.RECONNECTED) == [(live.session.pk, live.pat.pk, None, "")]
    assert await audit(AuditAction.LEFT) == []


async def test_resume_after_reconnect_gets_roster_and_exactly_missed_chat(live, sockets, pair):
    lead, pat = pair
    await lead.send("chat.send", {"text": "one"})
    await lead.recv_type("chat.message")
    await pat.recv_type("chat.message")
    await pat.drop()
    await lead.recv_type("member.updated")
    for text in ("two", "three"):
        await lead.send("chat.send", {"text": text})
        await lead.recv_type("chat.message")

    again = await sockets.open(live.pat, live.session)
    hello = await again.recv()
    await again.send("resume", {"resume_token": pat.resume_token, "last_seq": 1})
    resumed = await again.recv()

    assert hello["room"]["chat_seq"] == 3
    messages = [
        chat(n, lead.member_id, text, timestamp(await message_at(live.session, n)))
        for n, text in ((2, "two"), (3, "three"))
    ]
    lead_member = member(lead.member_id, "Lee L.", "moderator")
    pat_member = member(pat.member_id, "Pat P.", conn=2)
    assert resumed == frame(
        "resumed", re="c-1", room=room([lead_member, pat_member], chat_seq=3), chat=messages, more=False
    )
    await again.send("resume", {"resume_token": pat.resume_token, "last_seq": 1})
    assert (await again.recv())["code"] == "resume.invalid"  # one resume per token


@sync_to_async
def message_at(session, seq):
    return session.chat_messages.get(seq=seq).created_at


async def test_seat_expires_after_grace_period_and_peers_see_left(live, sockets, pair, settings):
    settings.SEAT_GRACE_SECONDS = 0.2
    lead, pat = pair

    await pat.drop()

    assert (await lead.recv())["member"]["presence"] == "reconnecting"
    assert await lead.recv() == frame("member.left", member=pat.member_id)
    assert (await seat(live.session, live.pat)).state == SeatState.LEFT
    assert await audit(AuditAction.LEFT) == [(live.session.pk, live.pat.pk, None, "timeout")]


async def test_leave_on_purpose_is_immediate(live, pair):
    lead, pat = pair

    await pat.send("session.leave")

    assert await pat.closed() == 1000
    assert await lead.recv() == frame("member.left", sender=pat.member_id, member=pat.member_id)
    await pat.drop()
    await lead.quiet()


async def test_logged_out_socket_closes_4401(live, sockets, settings):
    settings.SESSION_RECHECK_SECONDS = 0.1
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")

    await sync_to_async(SessionStore(session_key=pat.session_key).delete)()

    assert await pat.closed() == 4401
    await pat.drop()
    assert (await lead.recv())["member"]["presence"] == "reconnecting"


async def test_disabled_account_socket_closes_4401(live, sockets, settings):
    settings.SESSION_RECHECK_SECONDS = 0.1
    pat, _ = await sockets.enter(live.pat, live.session)

    live.pat.is_active = False
    await sync_to_async(live.pat.save)()

    assert await pat.closed() == 4401


async def test_session_end_by_the_clock_closes_4410(live, sockets, settings):
    settings.SESSION_RECHECK_SECONDS = 0.1
    pat, _ = await sockets.enter(live.pat, live.session)

    live.session.ends_at = live.session.starts_at + (live.session.ends_at - live.session.starts_at) / 10**6
    await sync_to_async(live.session.save)()

    assert await pat.closed() == 4410


async def test_ping_answers_pong(pair):
    lead, pat = pair

    await pat.send("ping", id="keepalive-1")

    assert await pat.recv() == frame("pong", re="keepalive-1")
    await lead.quiet()


@pytest.mark.parametrize(
    "backend", ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"]
)
async def test_channel_layer_down_refuses_join_fast_with_clear_error(live, sockets, settings, backend):
    # Nothing listens on port 1: every layer call fails as when Redis is down.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}

    pat = await sockets.open(live.pat, live.session)

    assert await pat.recv() == error("server.unavailable", None)
    assert await pat.closed() == 1013


async def test_chat_whose_delivery_was_lost_arrives_at_the_next_check_once(live, sockets, settings):
    settings.SESSION_RECHECK_SECONDS = 0.1
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    # Stored, but its fan-out never happened: what a Redis restart (every group emptied) does.
    lead_actor = live_domain.Actor(live.session.pk, live.lead.pk, 1)
    await sync_to_async(live_domain.post_chat)(lead_actor, "lost-1", "did you get this?")

    pushed_to_pat = await pat.recv()
    pushed_to_lead = await lead.recv()

    message = chat(1, lead.member_id, "did you get this?", timestamp(await message_at(live.session, 1)))
    assert pushed_to_pat == pushed_to_lead == frame("chat.message", sender=lead.member_id, message=message)
    await all_quiet(lead, pat)  # later checks do not push it again
    await pat.send("chat.send", {"text": "yes"})
    assert (await pat.recv())["message"]["seq"] == 2
    assert (await lead.recv())["message"]["seq"] == 2
    await all_quiet(lead, pat)


async def test_a_dropped_connection_ends_at_once_even_when_the_database_is_slow(live, sockets, pair, monkeypatch):
    # daphne cancels an application that outlives its socket by 10 s: behind a slow database thread a
    # disconnect must not keep the consumer alive (the record follows in the background).
    lead, pat = pair
    real_disconnect = live_domain.disconnect

    def slow_disconnect(*args, **kwargs):
        time.sleep(1.5)
        return real_disconnect(*args, **kwargs)

    monkeypatch.setattr(live_domain, "disconnect", slow_disconnect)
    started = time.monotonic()

    await pat.drop()
    ended_after = time.monotonic() - started
    told = await lead.recv()

    assert ended_after < 0.5
    assert told["type"] == "member.updated" and told["member"]["presence"] == "reconnecting"
    assert time.monotonic() - started >= 1.5
    assert (await seat(live.session, live.pat)).connected is False
