"""The response contract's close codes as a real client sees them from a real daphne.

Channels' test communicator accepts any close code; daphne's ASGI close does not (autobahn's
``sendClose`` takes only 1000 and 3000-4999), so 1003, 1008, 1009 and 1013 sent the usual way
raised inside daphne and reached the client as 1011. These run the real server process.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from asgiref.sync import sync_to_async

from signaling.consumers import MAX_BAD_FRAMES
from signaling.protocol import MAX_FRAME_BYTES, SUBPROTOCOL
from tests.signaling.processes import FRAME_TIMEOUT, Member, build_session, origin, ws_base

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


async def _closed_with(member: Member) -> int:
    await member.closed.wait()
    return member.ws.close_code


async def _still_served(member: Member) -> None:
    """The bystander's connection is untouched: it is still answered."""
    since = len(member.frames)
    message_id = await member.send("ping")
    await member.wait_for(lambda f: f["type"] == "pong" and f.get("re") == message_id, since=since)


async def test_bad_input_closes_with_the_contract_codes_never_1011(servers):
    session, cookies = await sync_to_async(build_session)()
    (server,) = servers(1)
    bystander = Member("p1", cookies["p1"])
    assert (await bystander.connect(server, session.pk))["state"] == "waiting"

    offender = Member("therapist", cookies["therapist"])
    await offender.connect(server, session.pk)
    await offender.ws.send(b"\x00binary")
    assert await _closed_with(offender) == 1003
    await _still_served(bystander)

    offender = Member("therapist", cookies["therapist"])
    await offender.connect(server, session.pk)
    await offender.ws.send(json.dumps({"v": 1, "type": "ping", "id": "big", "data": {"pad": "x" * MAX_FRAME_BYTES}}))
    assert await _closed_with(offender) == 1009
    await _still_served(bystander)

    offender = Member("therapist", cookies["therapist"])
    await offender.connect(server, session.pk)
    for _ in range(MAX_BAD_FRAMES):
        await offender.ws.send("{not json")
    assert await _closed_with(offender) == 1008
    errors = [f for f in offender.frames if f["type"] == "error"]
    assert len(errors) == MAX_BAD_FRAMES and {f["code"] for f in errors} == {"protocol.bad_json"}
    await _still_served(bystander)
    await bystander.close()
    # servers' teardown fails the test if daphne logged an exception inside the application.


async def test_channel_layer_down_answers_unavailable_and_closes_1013(servers, redis_server):
    session, cookies = await sync_to_async(build_session)()
    (server,) = servers(1)
    redis_server.kill()

    async with websockets.connect(
        f"{ws_base(server)}/ws/sessions/{session.pk}/",
        subprotocols=[SUBPROTOCOL],
        additional_headers={"Cookie": f"sessionid={cookies['p1']}", "Origin": origin(server)},
        open_timeout=FRAME_TIMEOUT,
    ) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)

    assert (first["type"], first["code"]) == ("error", "server.unavailable")
    assert ws.close_code == 1013
