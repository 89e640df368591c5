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
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from accounts.models import Role
from rooms.models import AdmissionPolicy, Seat
from signaling.protocol import SUBPROTOCOL
from tests.factories import enroll, make_clinic, make_user
from tests.media.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FRAME_TIMEOUT = 10.0


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class PrivateRedis:
    """A redis-server of this test's own, so a restart empties only its groups."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen | None = None

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(self._ping, 10, "redis-server to answer")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Daphne:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "telehealth.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        _wait_until(
            lambda: "Listening on TCP address" in log_path.read_text() or self.process.poll() is not None,
            30,
            "daphne to listen",
        )
        assert self.process.poll() is None, log_path.read_text()

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
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
            f"{server.ws_base}/ws/sessions/{session_id}/",
            subprotocols=[SUBPROTOCOL],
            additional_headers={"Cookie": f"sessionid={self.cookie}", "Origin": server.origin},
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


@pytest.fixture(autouse=True)
async def _close_worker_connection():
    """The test's ORM calls run in sync_to_async's worker thread: close its connection at the end,
    or PostgreSQL refuses to drop the test database while it is open."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def redis_server(tmp_path, require_postgres):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def servers(tmp_path, redis_server):
    """Start daphne processes on the test database and the private Redis: ``servers(n)``."""
    started: list[Daphne] = []
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    database_url = f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"

    def start(count: int) -> list[Daphne]:
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "VIRTUAL_ENV") if name in os.environ}
        env.update(
            DJANGO_SETTINGS_MODULE="telehealth.settings",
            PYTHONDONTWRITEBYTECODE="1",
            DATABASE_URL=database_url,
            REDIS_URL=redis_server.url,
            # Short periodic checks so a lost group is noticed within the 10 s the contract allows.
            SESSION_RECHECK_SECONDS="2",
            SEAT_GRACE_SECONDS="30",
        )
        for index in range(count):
            started.append(Daphne(env, tmp_path / f"daphne-{len(started)}-{index}.log"))
        return started[-count:]

    yield start
    for server in started:
        server.stop()

    for server in started:
        text = server.log_path.read_text()
        assert not re.search(r"Exception inside application|Internal Server Error", text), text


def _build_session():
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
    session, cookies = await sync_to_async(_build_session)()
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
    session, cookies = await sync_to_async(_build_session)()
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
    session, cookies = await sync_to_async(_build_session)()
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
