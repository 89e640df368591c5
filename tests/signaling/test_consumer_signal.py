"""WebRTC signaling relay: only between two admitted members of one session, capped, roles assigned."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from rooms import live as live_domain
from rooms.models import AdmissionPolicy
from signaling.protocol import MAX_CANDIDATES_PER_PEER
from tests.signaling.helpers import all_quiet, error, frame

pytestmark = pytest.mark.django_db(transaction=True)

OFFER = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = "candidate:842163049 1 udp 1677729535 192.0.2.10 51236 typ srflx raddr 0.0.0.0 rport 0"


@pytest.fixture
async def trio(live, sockets):
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    sam, _ = await sockets.enter(live.sam, live.session)
    await lead.recv_type("member.joined")
    await pat.recv_type("member.joined")
    return lead, pat, sam


async def test_offer_and_answer_relayed_with_sender_and_complementary_roles(trio):
    lead, pat, sam = trio

    await pat.send("signal.description", {"kind": "offer", "sdp": OFFER}, to=sam.member_id)
    offer = await sam.recv()
    await sam.send("signal.description", {"kind": "answer", "sdp": OFFER}, to=pat.member_id)
    answer = await pat.recv()

    sam_polite = sam.member_id < pat.member_id
    assert offer == frame("signal.description", sender=pat.member_id, kind="offer", sdp=OFFER, polite=sam_polite)
    assert answer == frame("signal.description", sender=sam.member_id, kind="answer", sdp=OFFER, polite=not sam_polite)
    await all_quiet(lead, pat, sam)


async def test_candidate_relayed_field_by_field(trio):
    lead, pat, sam = trio

    await pat.send("signal.candidate", {"candidate": CANDIDATE, "sdp_mid": "0", "sdp_mline_index": 0}, to=sam.member_id)

    assert await sam.recv() == frame(
        "signal.candidate",
        sender=pat.member_id,
        candidate=CANDIDATE,
        sdp_mid="0",
        sdp_mline_index=0,
        polite=sam.member_id < pat.member_id,
    )
    await all_quiet(lead, pat)


async def test_spoofed_sender_in_signal_refused(trio):
    lead, pat, sam = trio

    await pat.send("signal.description", {"kind": "offer", "sdp": OFFER, "from": lead.member_id}, to=sam.member_id)

    assert (await pat.recv())["code"] == "protocol.bad_payload"
    await all_quiet(lead, sam)


async def test_signal_to_waiting_member_refused_and_nothing_delivered(live, sockets):
    live.session.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
    await sync_to_async(live.session.save)()
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("waiting.list")

    await lead.send("signal.description", {"kind": "offer", "sdp": OFFER}, to=pat.member_id)
    await pat.send("signal.description", {"kind": "offer", "sdp": OFFER}, to=lead.member_id)

    assert await lead.recv() == error("target.not_found", "c-1")
    assert await pat.recv() == error("perm.waiting", "c-1")
    await all_quiet(lead, pat)


async def test_signal_to_member_of_another_session_refused(live, sockets, trio):
    lead, pat, sam = trio
    outsider, hello = await sockets.enter(live.outsider, live.other_session)

    await pat.send("signal.description", {"kind": "offer", "sdp": OFFER}, to=hello["member"])

    assert await pat.recv() == error("target.not_found", "c-1")
    await all_quiet(outsider, lead, sam)


async def test_signal_to_self_or_unknown_member_refused(trio):
    lead, pat, sam = trio

    await pat.send("signal.candidate", {"candidate": CANDIDATE}, to=pat.member_id)
    await pat.send("signal.candidate", {"candidate": CANDIDATE}, to="no-such-member")

    assert await pat.recv() == error("target.not_found", "c-1")
    assert await pat.recv() == error("target.not_found", "c-2")
    await all_quiet(lead, sam)


async def test_candidates_per_peer_are_capped_until_next_description(live, sockets, settings):
    settings.WS_RATE_BURST = 4 * MAX_CANDIDATES_PER_PEER
    pat, _ = await sockets.enter(live.pat, live.session)
    sam, _ = await sockets.enter(live.sam, live.session)
    await pat.recv_type("member.joined")

    for _ in range(MAX_CANDIDATES_PER_PEER + 1):
        await pat.send("signal.candidate", {"candidate": CANDIDATE}, to=sam.member_id)
    relayed = [await sam.recv() for _ in range(MAX_CANDIDATES_PER_PEER)]
    refused = await pat.recv()
    await pat.send("signal.description", {"kind": "offer", "sdp": OFFER}, to=sam.member_id)
    await pat.send("signal.candidate", {"candidate": CANDIDATE}, to=sam.member_id)

    assert {r["type"] for r in relayed} == {"signal.candidate"}
    assert refused == error("signal.too_many_candidates", f"c-{MAX_CANDIDATES_PER_PEER + 1}")
    assert (await sam.recv())["type"] == "signal.description"
    assert (await sam.recv())["type"] == "signal.candidate"
    await all_quiet(pat, sam)


async def test_candidates_reuse_the_route_checked_for_the_description(trio, monkeypatch):
    lead, pat, sam = trio
    checks = []
    real = live_domain.signal_route
    monkeypatch.setattr(live_domain, "signal_route", lambda *a, **k: checks.append(a[1]) or real(*a, **k))
    candidate = {"candidate": CANDIDATE, "sdp_mid": "0", "sdp_mline_index": 0}

    await pat.send("signal.description", {"kind": "offer", "sdp": OFFER}, to=sam.member_id)
    for _ in range(5):
        await pat.send("signal.candidate", candidate, to=sam.member_id)
    received = [await sam.recv() for _ in range(6)]
    await pat.send("signal.description", {"kind": "offer", "sdp": OFFER}, to=sam.member_id)  # an ICE restart
    await sam.recv_type("signal.description")

    assert [f["type"] for f in received] == ["signal.description"] + ["signal.candidate"] * 5
    assert checks == [sam.member_id, sam.member_id]  # one check per description, none per candidate
    await all_quiet(lead, pat, sam)
