"""The consumer's loop: one queue for everything a connection handles, no task per source."""

from __future__ import annotations

import asyncio

from signaling.consumers import SessionConsumer
from tests.signaling.helpers import all_quiet


def _tasks() -> int:
    return len(asyncio.all_tasks())


async def test_the_asgi_servers_own_queue_is_the_loops_queue():
    queue: asyncio.Queue = asyncio.Queue()

    events, pump = SessionConsumer._queue_of(queue.get)

    assert events is queue and pump is None


async def test_any_other_receive_is_pumped_into_a_queue_in_order():
    messages = iter([{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "1"}])
    arrived = asyncio.Event()

    async def receive() -> dict:
        try:
            return next(messages)
        except StopIteration:
            arrived.set()
            await asyncio.Event().wait()  # nothing more, ever

    events, pump = SessionConsumer._queue_of(receive)
    await asyncio.wait_for(arrived.wait(), 5)

    assert [events.get_nowait(), events.get_nowait()] == [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "1"},
    ]
    pump.cancel()


async def test_an_open_connection_holds_no_task_but_its_own(live, sockets):
    # Channels' await_many_dispatch kept one task per source (the socket, the inbox, the timed check,
    # Janus's events) for every connection, and made a fresh one for each client frame: with 1,200
    # connections, 4,800 tasks waiting. Now each connection is its application's task alone.
    lead, _ = await sockets.enter(live.lead, live.session)
    pat, _ = await sockets.enter(live.pat, live.session)
    await lead.recv_type("member.joined")
    await all_quiet(lead, pat)
    with_two = _tasks()

    for user in (live.sam, live.kim, live.co):
        await sockets.enter(user, live.session)
    await asyncio.sleep(0.2)  # whatever the joins started has run

    assert _tasks() - with_two == 3
    # And they work: a frame each way.
    await pat.send("chat.send", id="c-1", data={"text": "hello"})
    frame = await lead.recv()
    while frame["type"] != "chat.message":
        frame = await lead.recv()
    assert frame["message"]["text"] == "hello"
