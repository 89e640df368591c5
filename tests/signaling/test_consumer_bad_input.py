"""Bad input (RELIABILITY.md): each case gets its answer, nobody else in the room or in another
room is affected, nothing is stored, and the consumer never crashes (the teardown awaits it)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from rooms.models import ChatMessage
from signaling.consumers import MAX_BAD_FRAMES, MAX_RATE_REFUSALS
from signaling.protocol import MAX_FRAME_BYTES
from tests.signaling.helpers import all_quiet, error, frame

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def bystanders(live, sockets):
    """Pat (the sender of bad input) with the lead therapist in the room, and Oscar in another session."""
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    outsider, _ = await sockets.enter(live.outsider, live.other_session)
    return lead, pat, outsider


async def assert_unaffected(*sockets_) -> None:
    await all_quiet(*sockets_)
    for socket in sockets_:
        await socket.send("ping", id="still-there")
        assert await socket.recv() == frame("pong", re="still-there")
    assert await sync_to_async(ChatMessage.objects.count)() == 0


def envelope(**fields) -> str:
    body = {"v": 1, "type": "chat.send", "id": "c-9", "data": {"text": "hi"}}
    body.update(fields)
    return json.dumps(body)


TRUNCATED = '{"v": 1, "type": "chat.send", "id": "c-9", "data": {"te'


@pytest.mark.parametrize(
    ("text", "code", "re"),
    [
        pytest.param(
            '{"v": 1, "type": "chat.send", "id": "c-9", "data": {"te', "protocol.bad_json", None, id="truncated"
        ),
        pytest.param("null", "protocol.bad_envelope", None, id="not-an-object"),
        pytest.param(envelope(v=2), "protocol.bad_version", "c-9", id="version"),
        pytest.param(envelope(type="websocket.disconnect"), "protocol.unknown_type", "c-9", id="asgi-type"),
        pytest.param(envelope(type="deliver"), "protocol.unknown_type", "c-9", id="layer-type"),
        pytest.param(envelope(type="__init__"), "protocol.unknown_type", "c-9", id="dunder"),
        pytest.param(envelope(data={"text": 42}), "protocol.bad_payload", "c-9", id="wrong-type"),
        pytest.param(envelope(data={"text": "hi", "from": "someone"}), "protocol.bad_payload", "c-9", id="spoof-from"),
        pytest.param(envelope(**{"from": "someone"}), "protocol.bad_envelope", "c-9", id="spoof-envelope-from"),
        pytest.param(
            envelope(data={"text": "hi", "role": "moderator"}), "protocol.bad_payload", "c-9", id="spoof-role"
        ),
        pytest.param(
            envelope(type="chat.history", data={"after_seq": 10**40}), "protocol.bad_payload", "c-9", id="huge-number"
        ),
        pytest.param(envelope(data={"a": [[[[[[[[1]]]]]]]]}), "protocol.too_deep", "c-9", id="deep"),
        pytest.param(envelope(data={"text": "a\u0000b"}), "protocol.bad_payload", "c-9", id="nul-in-text"),
        pytest.param(envelope(to="someone"), "protocol.target_unexpected", "c-9", id="unexpected-target"),
    ],
)
async def test_bad_frame_answered_with_error_and_connection_stays_open(bystanders, text, code, re):
    lead, pat, outsider = bystanders

    await pat.send_text(text)

    answer = await pat.recv()
    assert answer == frame("error", re=re, code=code, detail=answer["detail"], retry_after_ms=None)
    assert answer["detail"]
    await assert_unaffected(pat, lead, outsider)


async def test_spoofed_display_name_in_chat_is_refused(bystanders):
    lead, pat, outsider = bystanders

    await pat.send("chat.send", {"text": "hi", "name": "Lee L. (therapist)"})

    assert (await pat.recv())["code"] == "protocol.bad_payload"
    await assert_unaffected(lead, outsider)


async def test_oversized_chat_closes_1009(bystanders):
    lead, pat, outsider = bystanders

    await pat.send("chat.send", {"text": "x" * 2001})

    assert await pat.closed() == 1009
    await assert_unaffected(lead, outsider)


async def test_oversized_sdp_closes_1009(bystanders):
    lead, pat, outsider = bystanders

    await pat.send("signal.description", {"kind": "offer", "sdp": "v=0\r\n" + "a" * 40_000}, to=lead.member_id)

    assert await pat.closed() == 1009
    await assert_unaffected(lead, outsider)


async def test_oversized_frame_closes_1009(bystanders):
    lead, pat, outsider = bystanders

    await pat.send_text(envelope(data={"text": "y" * MAX_FRAME_BYTES}))

    assert await pat.closed() == 1009
    await assert_unaffected(lead, outsider)


async def test_oversized_frame_in_multibyte_characters_closes_1009(bystanders):
    lead, pat, outsider = bystanders

    await pat.send_text(envelope(data={"text": "é" * (MAX_FRAME_BYTES // 2 + 10)}))

    assert await pat.closed() == 1009
    await assert_unaffected(lead, outsider)


async def test_binary_frame_closes_1003(bystanders):
    lead, pat, outsider = bystanders

    await pat.send_bytes(b'{"v": 1, "type": "ping", "id": "c-1", "data": {}}')

    assert await pat.closed() == 1003
    await assert_unaffected(lead, outsider)


async def test_repeated_bad_frames_close_1008(bystanders):
    lead, pat, outsider = bystanders

    for _ in range(MAX_BAD_FRAMES):
        await pat.send_text("{not json")

    answers = [await pat.recv() for _ in range(MAX_BAD_FRAMES)]
    assert {a["code"] for a in answers} == {"protocol.bad_json"}
    assert await pat.closed() == 1008
    await assert_unaffected(lead, outsider)


async def test_good_frame_resets_bad_frame_count(bystanders):
    lead, pat, outsider = bystanders

    for _ in range(MAX_BAD_FRAMES - 1):
        await pat.send_text("{not json")
    await pat.send("ping")
    for _ in range(MAX_BAD_FRAMES - 1):
        await pat.send_text("{not json")

    answers = [(await pat.recv())["type"] for _ in range(2 * MAX_BAD_FRAMES - 1)]
    assert answers.count("pong") == 1
    await assert_unaffected(pat, lead, outsider)


async def test_flood_is_rate_limited_then_closed_1008(live, sockets, settings):
    settings.WS_RATE_BURST = 5
    settings.WS_RATE_PER_SECOND = 1
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    outsider, _ = await sockets.enter(live.outsider, live.other_session)

    for n in range(6):
        await pat.send("ping", id=f"p-{n}")
    answers = [await pat.recv() for _ in range(6)]

    assert answers[:5] == [frame("pong", re=f"p-{n}") for n in range(5)]
    limited = answers[5]
    assert limited == error("rate.limited", None, retry_after_ms=limited["retry_after_ms"])
    assert 0 < limited["retry_after_ms"] <= 1000
    # Sustained: the connection is closed once the refusals pile up.
    for n in range(MAX_RATE_REFUSALS):
        await pat.send("ping", id=f"q-{n}")
    refusals = [await pat.recv() for _ in range(MAX_RATE_REFUSALS - 1)]
    assert {r["code"] for r in refusals} == {"rate.limited"}
    assert await pat.closed() == 1008
    await all_quiet(lead, outsider)
