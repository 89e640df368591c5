"""signaling.wire: frames written below ASGI reach a real client intact and in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import websockets

from signaling.wire import PONG, TEXT, Socket, read_text_frames_directly, text_frame, unmask, whole_client_frames
from tests.media.conftest import free_port
from tests.signaling.wire_app import PADDING

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65_535, b"\x81\x7e\xff\xff"),
        (65_536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_is_one_final_unmasked_text_frame(size, header):
    payload = b"x" * size
    assert text_frame(payload) == header + payload


def test_only_daphnes_send_has_a_socket():
    async def send(message):
        return None

    class NotAProtocol:
        pass

    def handle_reply(protocol, message):
        return None

    assert Socket.of(send) is None
    assert Socket.of(partial(handle_reply, NotAProtocol())) is None


@contextlib.contextmanager
def serving_wire_app(tmp_path, *daphne_options: str):
    port = free_port()
    log = tmp_path / "daphne.log"
    command = [sys.executable, "-m", "daphne", *daphne_options, "-b", "127.0.0.1", "-p", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "tests.signaling.wire_app:application"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while "Listening on TCP address" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def daphne_with_wire_app(tmp_path):
    with serving_wire_app(tmp_path) as url:
        yield url


async def test_frames_written_straight_to_daphnes_socket_arrive_intact_and_in_order(daphne_with_wire_app):
    async with websockets.connect(daphne_with_wire_app, max_size=None) as ws:
        hello = json.loads(await ws.recv())
        assert hello == {"found": True, "early": False}  # found behind daphne's send; nothing before accept

        # Sixty frames, half direct and half through ASGI, some larger than a socket buffer takes at
        # once; the client reads only after a pause, so later writes find data still queued.
        await ws.send("60")
        await asyncio.sleep(0.5)
        received = [json.loads(await ws.recv()) for _ in range(60)]
        summary = json.loads(await ws.recv())

    assert [frame["i"] for frame in received] == list(range(60))
    assert [len(frame["pad"]) for frame in received] == [PADDING[i % 3] for i in range(60)]
    assert summary == {"direct": 30}


# --- reading: whole text frames straight to daphne's onMessage ----------------------------------

MASK = b"\x9a\x15\x7e\x42"


def client_frame(payload: bytes, *, opcode: int = 1, fin: bool = True, mask: bytes = MASK, rsv: int = 0) -> bytes:
    """A frame as a client sends it (RFC 6455 5.2), masked unless ``mask`` is empty."""
    size = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    flag = 0x80 if mask else 0
    if size < 126:
        header = bytes((first, flag | size))
    elif size < 1 << 16:
        header = bytes((first, flag | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, flag | 127)) + size.to_bytes(8, "big")
    return header + mask + (unmask(payload, mask) if mask else payload)


def test_unmask_is_the_xor_with_the_repeated_mask():
    payload = bytes(range(256)) * 3 + b"tail"
    expected = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    assert unmask(payload, MASK) == expected
    assert unmask(expected, MASK) == payload
    assert unmask(b"", MASK) == b""


def test_whole_text_frames_are_read_in_order():
    texts = ["", "hello", "é, 日本, 🙂", "x" * 125, "y" * 126, "z" * 65_535]
    data = b"".join(client_frame(t.encode()) for t in texts)
    assert whole_client_frames(data) == [(TEXT, t.encode(), MASK) for t in texts]


def test_pongs_are_read_with_the_text_frames():
    data = client_frame(b"a") + client_frame(b"ping-payload", opcode=10) + client_frame(b"", opcode=10)
    assert whole_client_frames(data) == [(TEXT, b"a", MASK), (PONG, b"ping-payload", MASK), (PONG, b"", MASK)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(client_frame(b"hi")[:-1], id="the-frame-continues-in-the-next-read"),
        pytest.param(client_frame(b"hi") + client_frame(b"there")[:3], id="a-second-frame-starts"),
        pytest.param(client_frame(b"part", fin=False), id="a-fragment"),
        pytest.param(client_frame(b"hi", opcode=2), id="binary"),
        pytest.param(client_frame(b"", opcode=9), id="ping"),
        pytest.param(client_frame(b"x" * 126, opcode=10), id="a-pong-longer-than-a-control-frame-may-be"),
        pytest.param(client_frame(b"p", opcode=10, fin=False), id="a-fragmented-pong"),
        pytest.param(client_frame(b"\x03\xe8", opcode=8), id="close"),
        pytest.param(client_frame(b"hi", mask=b""), id="unmasked"),
        pytest.param(client_frame(b"hi", rsv=4), id="an-extension-bit"),
        pytest.param(client_frame(b"\xff\xfe"), id="invalid-utf-8"),
        pytest.param(client_frame("\ud800".encode("utf-8", "surrogatepass")), id="a-surrogate"),
        pytest.param(bytes((0x81, 0xFE, 0, 5)) + MASK + unmask(b"hello", MASK), id="non-minimal-length"),
        pytest.param(client_frame(b"x" * 65_536), id="a-64-bit-length"),
        pytest.param(client_frame(b"hi") + client_frame(b"", opcode=9), id="text-then-ping"),
    ],
)
def test_anything_else_is_left_to_autobahn(data):
    assert whole_client_frames(data) is None


def test_frames_over_the_limit_are_left_to_autobahn():
    data = client_frame(b"x" * 200)
    assert whole_client_frames(data, limit=200) == [(TEXT, b"x" * 200, MASK)]
    assert whole_client_frames(data, limit=199) is None


class RecordingProtocol:
    """Stands in for daphne's protocol: the state the shortcut reads, and what it hands on."""

    STATE_OPEN = 3

    def __init__(self, **state):
        self.state = 3
        self.data = b""
        self.current_frame = None
        self.inside_message = False
        self._perMessageCompress = None
        self.logOctets = self.logFrames = False
        self.maxFramePayloadSize = 0
        self.maxMessagePayloadSize = 1_000
        self.trackedTimings = None
        self._listeners = None
        self.autoPingTimeoutCall = None
        self.autoPingRestartOnAnyTraffic = True
        self.trafficStats = type(
            "Stats", (), {"incomingOctetsWireLevel": 0, "incomingWebSocketFrames": 0, "incomingWebSocketMessages": 0}
        )()
        self.__dict__.update(state)
        self.messages = []
        self.general = []

    def onMessage(self, payload, is_binary):  # noqa: N802 - autobahn's name
        self.messages.append((payload, is_binary))


@pytest.fixture
def shortcut(monkeypatch):
    """daphne's dataReceived with the shortcut, around a recording general path."""
    from daphne.ws_protocol import WebSocketProtocol

    monkeypatch.setattr(WebSocketProtocol, "dataReceived", lambda self, data: self.general.append(data))
    read_text_frames_directly()
    return WebSocketProtocol.dataReceived


def test_the_shortcut_hands_whole_text_frames_to_onmessage(shortcut):
    protocol = RecordingProtocol()
    data = client_frame(b'{"a":1}') + client_frame(b'{"b":2}')
    shortcut(protocol, data)
    assert protocol.messages == [(b'{"a":1}', False), (b'{"b":2}', False)]
    assert protocol.general == []
    stats = protocol.trafficStats
    assert (stats.incomingOctetsWireLevel, stats.incomingWebSocketFrames, stats.incomingWebSocketMessages) == (
        len(data),
        2,
        2,
    )


def test_a_pong_goes_to_autobahns_own_control_frame_handling(shortcut):
    protocol = RecordingProtocol()
    seen = []
    protocol.processControlFrame = lambda: seen.append(
        (protocol.current_frame.opcode, protocol.current_frame.length, protocol.control_frame_data)
    )
    shortcut(protocol, client_frame(b"answer", opcode=10) + client_frame(b"next"))
    assert seen == [(10, 6, [b"answer"])]
    assert protocol.current_frame is None  # as autobahn leaves it after a frame
    assert protocol.messages == [(b"next", False)]


def test_a_text_frame_counts_as_a_sign_of_life_while_a_pong_is_awaited(shortcut):
    cancelled = []
    protocol = RecordingProtocol(autoPingTimeoutCall=object())
    protocol._cancelAutoPingTimeoutCall = lambda: cancelled.append(True)
    shortcut(protocol, client_frame(b"hi"))
    assert cancelled == [True]  # autobahn's autoPingRestartOnAnyTraffic, as on its general path
    protocol = RecordingProtocol(autoPingTimeoutCall=object(), autoPingRestartOnAnyTraffic=False)
    protocol._cancelAutoPingTimeoutCall = lambda: cancelled.append(False)
    shortcut(protocol, client_frame(b"hi"))
    assert cancelled == [True]


@pytest.mark.parametrize(
    "state",
    [
        {"data": b"\x81"},  # autobahn holds the start of a frame
        {"current_frame": object()},
        {"inside_message": True},
        {"_perMessageCompress": object()},
        {"state": 2},  # closing
        {"logFrames": True},
        {"maxMessagePayloadSize": 3},  # the frame is over daphne's message limit
        {"trackedTimings": object()},
        {"_listeners": {"message": [print]}},  # someone observes autobahn's message event
    ],
)
def test_the_general_path_reads_whenever_autobahn_has_state_or_limits_apply(shortcut, state):
    protocol = RecordingProtocol(**state)
    data = client_frame(b'{"a":1}')
    shortcut(protocol, data)
    assert protocol.messages == []
    assert protocol.general == [data]


def test_frames_after_one_that_closed_the_connection_are_not_handed_on(shortcut):
    protocol = RecordingProtocol()

    def on_message(payload, is_binary):
        protocol.messages.append(payload)
        protocol.state = 2  # the application closed the connection

    protocol.onMessage = on_message
    shortcut(protocol, client_frame(b"first") + client_frame(b"second"))
    assert protocol.messages == [b"first"]


async def test_a_real_daphne_reads_every_kind_of_input_as_before(daphne_with_wire_app):
    url = daphne_with_wire_app + "echo/"

    async def echoes(ws, count):
        return [json.loads(await asyncio.wait_for(ws.recv(), 5))["echo"] for _ in range(count)]

    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # hello
        raw = ws.transport.write
        raw(client_frame(b"one") + client_frame("twó".encode()))  # two whole frames in one read
        assert await echoes(ws, 2) == ["one", "twó"]
        frame = client_frame(b"split")
        raw(frame[:4])  # a frame across two reads
        await asyncio.sleep(0.2)
        raw(frame[4:] + client_frame(b"after"))
        assert await echoes(ws, 2) == ["split", "after"]
        raw(client_frame(b"frag", fin=False) + client_frame(b"ment", opcode=0))  # a fragmented message
        raw(client_frame(b"x" * 70_000))  # a 64-bit length
        assert await echoes(ws, 2) == ["fragment", "x" * 70_000]
        pong = await ws.ping(b"check")
        await asyncio.wait_for(pong, 5)  # control frames still answered
        raw(client_frame(b"still"))
        assert await echoes(ws, 1) == ["still"]

    async with websockets.connect(url) as ws:
        await ws.recv()
        ws.transport.write(client_frame(b"\xff\xfe"))  # invalid UTF-8: autobahn fails the connection
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)  # no echo
    # autobahn fails it by dropping the TCP connection (its failByDrop), as it did without the shortcut.
    assert ws.close_code == 1006


async def test_pongs_read_by_the_shortcut_keep_a_quiet_connection_open(tmp_path):
    # daphne pings every second and drops a connection whose pong is 2 s late; the client sends
    # nothing of its own for 5 s, so only its pongs (read by the shortcut) keep it open.
    with serving_wire_app(tmp_path, "--ping-interval", "1", "--ping-timeout", "2") as url:
        async with websockets.connect(url + "echo/", ping_interval=None) as ws:
            await ws.recv()  # hello
            await asyncio.sleep(5)
            await ws.send("still here")
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"echo": "still here"}
