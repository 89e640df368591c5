"""signaling.wire: frames written below ASGI reach a real client intact and in order."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import websockets

from signaling.wire import Socket, text_frame
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


@pytest.fixture
def daphne_with_wire_app(tmp_path):
    port = free_port()
    log = tmp_path / "daphne.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "tests.signaling.wire_app:application",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
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
