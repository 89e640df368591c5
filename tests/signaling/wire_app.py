"""A bare ASGI app for tests/signaling/test_wire.py, served by a real daphne process.

It reports whether ``signaling.wire`` found daphne's socket behind ``send`` (and that nothing can
be written before the handshake is accepted), then, for each number N it receives, sends N frames
alternating between the direct way and ASGI's, of sizes in each of the three length encodings.
On ``/echo/`` it sends every text it receives back as ``{"echo": text}``. Daphne reads with the
shortcut of ``signaling.wire.read_text_frames_directly``, as telehealth.asgi has it.
"""

import json

from signaling.wire import Socket, read_text_frames_directly, text_frame

read_text_frames_directly()

PADDING = (10, 300, 70_000)  # 7-bit, 16-bit and 64-bit payload lengths


async def application(scope, receive, send):
    if scope["type"] != "websocket":
        return
    socket = Socket.of(send)
    await receive()  # websocket.connect
    before_accept = socket.write(text_frame(b"too early")) if socket is not None else None
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"found": socket is not None, "early": before_accept})})
    if scope["path"] == "/echo/":
        while (event := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": json.dumps({"echo": event["text"]})})
        return
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        direct = 0
        for i in range(int(event["text"])):
            payload = json.dumps({"i": i, "pad": "x" * PADDING[i % 3]})
            if i % 2 == 0 and socket is not None and socket.write(text_frame(payload.encode())):
                direct += 1
            else:
                await send({"type": "websocket.send", "text": payload})
        await send({"type": "websocket.send", "text": json.dumps({"direct": direct})})
