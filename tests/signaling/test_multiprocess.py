"""Real processes: two daphne servers sharing PostgreSQL and a Redis channel layer.

Members of one session are split across the two processes. Admission, chat and
signaling must cross between them; a killed process's clients reconnect to the
other and keep their seats; a Redis restart (every group lost) must not lose a
chat message, and delivery resumes within 10 s.

Each test starts its own redis-server on a free port, so restarting it touches
nobody else. They need PostgreSQL (the daphne children and the test share the
test database): with TELEHEALTH_REQUIRE_SERVICES=1 (CI) a missing PostgreSQL
fails the run in tests/conftest.py; without it these tests are skipped.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from asgiref.sync import sync_to_async

from rooms.models import Seat
from tests.signaling.processes import FRAME_TIMEOUT, Member, build_session, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


async def _admitted_trio(servers_, session, cookies):
    """Therapist and p2 on server A, p1 on server B; the therapist admits p1 then everyone."""
    a, b = servers_
    therapist, p1, p2 = (
        Member("therapist", cookies["therapist"]),
        Member("p1", cookies["p1"]),
        Member("p2", cookies["p2"]),
    )
    welcome = await therapist.connect(a, session.pk)
    assert (welcome["role"], welcome["state"]) == ("moderator", "admitted")
    assert (await p1.connect(b, session.pk))["state"] == "waiting"
    assert (await p2.connect(a, session.pk))["state"] == "waiting"
    # p1's knock is published by process B and must reach the therapist on process A.
    await therapist.wait_for(
        lambda f: f["type"] == "waiting.list" and {e["member"] for e in f["entries"]} == {p1.member_id, p2.member_id}
    )
    await therapist.send("mod.admit", {"member": p1.member_id})
    await p1.wait_for(lambda f: f["type"] == "admitted")
    await therapist.send("mod.admit_all")
    await p2.wait_for(lambda f: f["type"] == "admitted")
    return therapist, p1, p2


async def test_two_processes_admission_chat_and_signaling_cross_over(servers):
    session, cookies = await sync_to_async(build_session)()
    therapist, p1, p2 = await _admitted_trio(servers(2), session, cookies)

    await p1.send("chat.send", {"text": "hello from process B"})
    for member in (therapist, p2):
        got = await member.wait_for(lambda f: f["type"] == "chat.message")
        assert (got["from"], got["message"]["text"], got["message"]["seq"]) == (p1.member_id, "hello from process B", 1)

    sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    await p1.send("signal.description", {"kind": "offer", "sdp": sdp}, to=therapist.member_id)
    relayed = await therapist.wait_for(lambda f: f["type"] == "signal.description")
    assert (relayed["from"], relayed["kind"], relayed["sdp"]) == (p1.member_id, "offer", sdp)

    for member in (therapist, p1, p2):
        await member.close()


async def test_killed_process_clients_reconnect_to_the_other_and_keep_their_seat(servers):
    session, cookies = await sync_to_async(build_session)()
    a, b = servers(2)
    therapist, p1, p2 = await _admitted_trio([a, b], session, cookies)
    seat_before = p1.member_id
    last_seq = 0

    b.kill()  # p1's server dies mid-session
    await asyncio.wait_for(p1.closed.wait(), FRAME_TIMEOUT)
    await p2.send("chat.send", {"text": "said while p1 was away"})
    await therapist.wait_for(lambda f: f["type"] == "chat.message")

    mark = len(therapist.frames)
    welcome = await p1.connect(a, session.pk)
    assert (welcome["member"], welcome["state"]) == (seat_before, "admitted")
    await p1.send("resume", {"resume_token": welcome["resume_token"], "last_seq": last_seq})
    resumed = await p1.wait_for(lambda f: f["type"] == "resumed")
    assert [m["text"] for m in resumed["chat"]] == ["said while p1 was away"]
    assert [m["member"] for m in resumed["room"]["roster"]].count(seat_before) == 1

    await asyncio.sleep(0.5)
    # Peers never saw p1 leave and join again: one continuous stay.
    assert not [f for f in therapist.frames[mark:] if f["type"] in {"member.left", "member.joined"}]
    seats = await sync_to_async(lambda: Seat.objects.filter(session=session).count())()
    assert seats == 3
    for member in (therapist, p1, p2):
        await member.close()


async def test_redis_restart_loses_no_chat_and_delivery_resumes(servers, redis_server):
    session, cookies = await sync_to_async(build_session)()
    therapist, p1, p2 = await _admitted_trio(servers(2), session, cookies)

    redis_server.kill()
    redis_server.start()  # same port, empty: every group membership is gone
    restarted = time.monotonic()

    mark = len(p1.frames)
    # The sender may hit the outage; a chat send is idempotent, so retrying with the same id is safe.
    await p2.send("chat.send", {"text": "after the restart"})
    got = await p1.wait_for(lambda f: f["type"] == "chat.message", since=mark, timeout=15)
    assert got["message"]["text"] == "after the restart"
    assert time.monotonic() - restarted < 10, "delivery must resume within 10 s"
    texts = [f["message"]["text"] for f in p1.frames if f["type"] == "chat.message"]
    assert texts.count("after the restart") == 1
    for member in (therapist, p1, p2):
        await member.close()


# --- behind the proxy (telehealth/proxy.py) ----------------------------------------------------

ROUTED_SESSIONS = 12  # all of them hashed to one of two processes by chance: 2 in 4,096 runs


def _processes_holding(servers_, session) -> list[int]:
    """How many of the session's members each server logged as joined."""
    line = f"joined session={session.pk.hex}"
    return [server.log_path.read_text().count(line) for server in servers_]


def _publish_calls(redis_server) -> int:
    client = redis.Redis.from_url(redis_server.url)
    try:
        return client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0)
    finally:
        client.close()


async def test_the_proxy_keeps_each_session_on_one_process_and_fails_over(servers, proxy, redis_server):
    a, b = servers(2)
    front = proxy([a, b])
    built = [await sync_to_async(build_session)() for _ in range(ROUTED_SESSIONS)]
    members: dict = {}
    for k, (session, cookies) in enumerate(built):
        members[session.pk] = [Member(f"{name}-{k}", cookies[name]) for name in ("therapist", "p1", "p2")]
        for member in members[session.pk]:
            await member.connect(front, session.pk)

    # Every member of a session reached the same process, and the sessions are spread over both.
    for session, _ in built:
        wait_until(lambda s=session: sum(_processes_holding([a, b], s)) == 3, FRAME_TIMEOUT, "three joins")
    placements = {session.pk: _processes_holding([a, b], session) for session, _ in built}
    assert all(sorted(counts) == [0, 3] for counts in placements.values()), placements
    assert {counts.index(3) for counts in placements.values()} == {0, 1}, placements

    # A session on one process costs Redis nothing per message: its groups never leave the process.
    session, _ = built[0]
    therapist, p1, p2 = members[session.pk]
    await therapist.send("mod.admit_all")
    for member in (p1, p2):
        await member.wait_for(lambda f: f["type"] == "admitted")
    await asyncio.sleep(0.5)  # the admitted members' room groups are announced by now
    publishes = _publish_calls(redis_server)
    for n in range(5):
        await p1.send("chat.send", {"text": f"routed {n}"})
    for member in (therapist, p2):
        await member.wait_for(lambda f: f["type"] == "chat.message" and f["message"]["text"] == "routed 4")
    assert _publish_calls(redis_server) == publishes

    # The process holding that session dies: its clients reconnect through the proxy, which now
    # sends them to the other process, and they keep their seats. The other sessions carry on.
    holder, survivor = (a, b) if placements[session.pk][0] == 3 else (b, a)
    holder.kill()
    for member in (therapist, p1, p2):
        await asyncio.wait_for(member.closed.wait(), FRAME_TIMEOUT)
    for member in (therapist, p1, p2):
        seat = member.member_id
        welcome = await member.connect(front, session.pk)
        assert (welcome["member"], welcome["state"]) == (seat, "admitted")
    untouched = [m for s, _ in built if placements[s.pk][[a, b].index(survivor)] == 3 for m in members[s.pk]]
    assert untouched and not any(m.closed.is_set() for m in untouched)

    await p2.send("chat.send", {"text": "after the failover"})
    got = await therapist.wait_for(
        lambda f: f["type"] == "chat.message" and f["message"]["text"] == "after the failover"
    )
    assert got["from"] == p2.member_id
    for group in members.values():
        for member in group:
            await member.close()
