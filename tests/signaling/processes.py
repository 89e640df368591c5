"""Real server processes for the signaling tests: daphne and a private redis-server.

Used by the tests that must see what a real client sees (test_multiprocess.py, two daphne on one
Redis; test_daphne_close_codes.py, the contract's close codes from daphne itself). The fixtures
that start them are in conftest.py (``servers``, ``redis_server``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import websockets
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from rooms.models import AdmissionPolicy
from signaling.protocol import SUBPROTOCOL
from telehealth import serve
from tests.factories import enroll, make_clinic, make_user
from tests.media.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]

FRAME_TIMEOUT = 10.0


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class PrivateRedis:
    """A redis-server of this test's own, so a restart empties only its groups."""

    def __init__(self, tmp_path: Path, *options: str) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.options = options  # more redis-server options, e.g. "--requirepass", "secret"
        self.process: subprocess.Popen | None = None

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up, with or without a password
        except OSError:
            return False

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (scripts/test installs it)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ping, 10, "redis-server to answer")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def ws_base(server) -> str:
    """Where a client reaches ``server`` (a ``Daphne``, or nginx in front of some: anything with a
    ``port`` on 127.0.0.1)."""
    return f"ws://127.0.0.1:{server.port}"


def origin(server) -> str:
    """The Origin a browser on ``server``'s pages sends."""
    return f"http://127.0.0.1:{server.port}"


class Daphne:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            serve.command("127.0.0.1", self.port),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: "Listening on TCP address" in log_path.read_text() or self.process.poll() is not None,
            30,
            "daphne to listen",
        )
        assert self.process.poll() is None, log_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        serve.stop(self.process)
        self.log.close()


class Member:
    """A protocol client over a real socket: every frame it receives is kept, in order."""

    def __init__(self, name: str, cookie: str) -> None:
        self.name = name
        self.cookie = cookie
        self.frames: list[dict] = []
        self.ws = None
        self.reader: asyncio.Task | None = None
        self.closed = asyncio.Event()
        self.member_id: str | None = None
        self.resume_token: str | None = None
        self._ids = 0

    async def connect(self, server: Daphne, session_id) -> dict:
        self.closed = asyncio.Event()
        self.ws = await websockets.connect(
            f"{ws_base(server)}/ws/sessions/{session_id}/",
            subprotocols=[SUBPROTOCOL],
            additional_headers={"Cookie": f"sessionid={self.cookie}", "Origin": origin(server)},
            open_timeout=FRAME_TIMEOUT,
        )
        start = len(self.frames)
        self.reader = asyncio.create_task(self._read(self.ws))
        welcome = await self.wait_for(lambda f: f["type"] == "welcome", since=start)
        self.member_id = welcome["member"]
        self.resume_token = welcome["resume_token"]
        return welcome

    async def _read(self, ws) -> None:
        try:
            async for text in ws:
                self.frames.append(json.loads(text))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send(self, type_: str, data: dict | None = None, to: str | None = None) -> str:
        self._ids += 1
        message_id = f"{self.name}-{self._ids}"
        envelope = {"v": 1, "type": type_, "id": message_id, "data": data or {}}
        if to:
            envelope["to"] = to
        await self.ws.send(json.dumps(envelope))
        return message_id

    async def wait_for(self, predicate, *, since: int = 0, timeout: float = FRAME_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames[since:]:
                if predicate(frame):
                    return frame
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no matching frame in {timeout}s; got {self.frames[since:]}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait_for(self.reader, FRAME_TIMEOUT)


def build_session():
    """A group session started 5 minutes ago (therapist admits), and login cookies for the
    therapist and two participants (run it in a thread: it uses the ORM)."""
    clinic = make_clinic(group_start=timezone.now() - timedelta(minutes=5))
    session = clinic.group_session
    session.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
    session.save(update_fields=["admission_policy"])
    second = make_user(Role.PARTICIPANT, first="Sam", last="Second")
    enroll(second, clinic.track, start=timezone.localdate() - timedelta(days=30))
    cookies = {}
    for name, user in (("therapist", clinic.lead), ("p1", clinic.participant), ("p2", second)):
        client = Client()
        client.force_login(user)
        cookies[name] = client.cookies["sessionid"].value
    return session, cookies
