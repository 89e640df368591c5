"""What the driver measures: the bare reference relay, and the real telehealth endpoint under daphne.

A target starts its server process(es) for one run, hands out the members (URL,
headers, role) and the protocol they speak, says which processes' CPU counts, and
stops everything it started (by pid, never by name).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from bench import procstat
from bench.load import Member, MemberSpec, Protocol
from telehealth import serve
from telehealth.proxy import Proxy

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "bench"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


wait_for_port = serve.wait_for_port  # bench/media.py waits for its Janus with it too


stop_process = serve.stop  # bench/media.py stops its Janus with it too


class Target:
    name = "target"
    procs = 1

    def __init__(self, redis_url: str | None = None) -> None:
        self.processes: list[subprocess.Popen] = []
        self.protocol: Protocol = Protocol()
        self.redis_url = redis_url  # whose redis-server's CPU counts

    def start(self, rooms: int, members: int) -> list[MemberSpec]:
        raise NotImplementedError

    def cpu_components(self) -> dict:
        """name -> function returning cumulative CPU seconds. ``server`` and ``redis`` always."""
        pids = [p.pid for p in self.processes]
        redis_pid = procstat.redis_pid(self.redis_url)
        postmaster = procstat.postmaster_pid()
        return {
            "server": lambda: _sum_or_none(procstat.cpu_seconds(pid) for pid in pids),
            "redis": (lambda: procstat.cpu_seconds(redis_pid)) if redis_pid else (lambda: None),
            "postgres": (lambda: procstat.tree_cpu_seconds(postmaster)) if postmaster else (lambda: None),
        }

    def stop(self) -> None:
        for proc in self.processes:
            stop_process(proc)
        self.processes = []

    def log_text(self) -> str:
        return ""


def _sum_or_none(values) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


# --- the reference -----------------------------------------------------------------------------


class ReferenceTarget(Target):
    """bench/reference_relay.py in its own process: rooms by path, fan-out to the other members."""

    name = "reference"

    def cpu_components(self) -> dict:
        components = super().cpu_components()
        del components["postgres"]  # the relay uses none: PostgreSQL's CPU here is someone else's
        return components

    def start(self, rooms: int, members: int) -> list[MemberSpec]:
        port = free_port()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / "reference.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.reference_relay", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes = [proc]
        wait_for_port(port, proc)
        return [
            MemberSpec(index=r * members + m, room=r, url=f"ws://{HOST}:{port}/room/{r}")
            for r in range(rooms)
            for m in range(members)
        ]


# --- the real endpoint -------------------------------------------------------------------------


class TelehealthProtocol(Protocol):
    """The session protocol v1 (signaling/protocol.py), as far as the driver needs it.

    - ready: ``welcome`` with ``state: "admitted"`` (therapists, and participants the
      "auto then knock" policy lets straight in), or a later ``admitted`` frame (after the
      therapist's ``mod.admit_all``)
    - a delivery: a ``chat.message`` frame; the driver's stamp travels in ``message.text``
    """

    name = "telehealth.v1"

    def chat_frame(self, member: Member, client_id: str, text: str) -> str:
        return json.dumps({"v": 1, "type": "chat.send", "id": client_id, "data": {"text": text}})

    def delivery_text(self, frame: dict) -> str | None:
        if frame.get("type") == "chat.message":
            return (frame.get("message") or {}).get("text")
        return None

    def on_frame(self, member: Member, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "error":
            member.errors[str(frame.get("code"))] += 1
        elif kind == "welcome":
            member.member_id = frame.get("member")
            member.state["welcome_state"] = frame.get("state")
            if frame.get("state") == "admitted":
                member.mark_ready()
        elif kind == "admitted":
            member.mark_ready()

    async def admit(self, members: list[Member], timeout: float) -> None:
        """A room's therapist sends ``mod.admit_all`` when someone there still waits."""
        waiting_rooms = {m.spec.room for m in members if m.ws is not None and m.ready_at is None}
        for m in members:
            if m.spec.role == "therapist" and m.spec.room in waiting_rooms and m.ws is not None:
                try:
                    await m.ws.send(json.dumps({"v": 1, "type": "mod.admit_all", "id": f"admit-{m.spec.index}"}))
                except ConnectionClosed:
                    pass


class TelehealthTarget(Target):
    """daphne serving telehealth.asgi:application, N processes on one Redis; clients split across them."""

    name = "telehealth"

    def __init__(self, env: dict[str, str], procs: int = 1, label: str = "run", proxy: bool = False) -> None:
        super().__init__(env.get("REDIS_URL") or None)
        self.env = env
        self.procs = procs
        self.label = label
        self.proxy = proxy  # clients go through nginx (telehealth/proxy.py), which routes by session
        self.front: Proxy | None = None
        self.protocol = TelehealthProtocol()
        self.logs: list[Path] = []
        self.sessions: set[str] = set()  # UUID hex of this run's sessions (its channel-layer groups)

    def start(self, rooms: int, members: int) -> list[MemberSpec]:
        from bench import fixtures
        from signaling.protocol import SUBPROTOCOL

        room_fixtures = fixtures.create_rooms(rooms, members)
        self.sessions = {uuid.UUID(room.session_id).hex for room in room_fixtures}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        ports = []
        for k in range(self.procs):
            port = free_port()
            log_path = LOG_DIR / f"{self.label}-daphne-{k}.log"
            log = open(log_path, "w")
            proc = subprocess.Popen(
                serve.command(HOST, port),
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.processes.append(proc)
            self.logs.append(log_path)
            ports.append(port)
        for port, proc in zip(ports, self.processes, strict=True):
            wait_for_port(port, proc, timeout=60)
        if self.proxy:
            upstreams = [f"{HOST}:{port}" for port in ports]
            self.front = Proxy(upstreams, LOG_DIR / f"{self.label}-nginx", free_port())
        specs = []
        for r, room in enumerate(room_fixtures):
            for m, seat in enumerate(room.seats):
                # Without the proxy, members of one room alternate across processes: fan-out has to
                # cross the layer. With it, nginx picks each session's process.
                port = self.front.port if self.front else ports[(r * members + m) % self.procs]
                specs.append(
                    MemberSpec(
                        index=r * members + m,
                        room=r,
                        url=f"ws://{HOST}:{port}/ws/sessions/{room.session_id}/",
                        role=seat.role,
                        headers=[("Cookie", f"sessionid={seat.cookie}")],
                        origin=f"http://{HOST}:{port}",
                        subprotocols=[SUBPROTOCOL],
                    )
                )
        return specs

    def cpu_components(self) -> dict:
        components = super().cpu_components()
        if self.front is not None:
            master = self.front.process.pid
            components["proxy"] = lambda: procstat.tree_cpu_seconds(master)
        return components

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
            self.front = None
        super().stop()

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def stored_chat_messages(self) -> int | None:
        """Chat messages of this run's sessions stored in the database (None if the model is not there)."""
        from django.db import connections

        try:
            from rooms.models import ChatMessage
        except ImportError:
            return None
        try:
            return ChatMessage.objects.filter(session_id__in=[uuid.UUID(hex=h) for h in self.sessions]).count()
        finally:
            connections.close_all()


# --- the channel layer in Redis -----------------------------------------------------------------


_HEX32 = re.compile(r"[0-9a-f]{32}")


def layer_state(redis_url: str, prefix: str, sessions: set[str] | None = None) -> dict:
    """Group memberships the Redis channel layer holds under ``prefix``.

    The core layer keeps each group as a sorted set ``<prefix>:group:<name>`` of channel
    names; the Pub/Sub layer keeps no membership in keys but one subscription per
    channel, so both are counted. With ``sessions`` (UUID hex strings), only groups whose
    name carries one of those session ids count: the groups of this run, not leftovers.
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        groups = members = 0
        for key in client.scan_iter(match=f"{prefix}:group:*", count=1000):
            if sessions is not None and not (set(_HEX32.findall(key.decode(errors="replace"))) & sessions):
                continue
            groups += 1
            members += client.zcard(key)
        # Pub/Sub channels are global to the Redis server (not per database): with ``sessions``, count
        # the group channels of this run's sessions, and the rest (other runs, connections' own
        # channels, anything else subscribed under the prefix) apart.
        names = [name.decode(errors="replace") for name in client.pubsub_channels(f"{prefix}*")]
        ours = [n for n in names if sessions is None or set(_HEX32.findall(n)) & sessions]
    finally:
        client.close()
    return {
        "groups": groups,
        "memberships": members,
        "pubsub_channels": len(ours),
        "pubsub_other": len(names) - len(ours),
    }


def clear_layer(redis_url: str, prefix: str) -> int:
    """Delete the bench's own keys (``prefix*`` in the bench's Redis database) before a clean run."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


def layer_failures(log: str) -> dict:
    """What daphne's output says went wrong in the layer (the failed ``group_discard`` trap).

    A failed discard shows up either as the consumer's own warning ("group_discard failed",
    followed by its traceback) or as an unhandled traceback through ``group_discard``; each
    is counted once. A traceback runs until the next log record (a line starting with a
    digit: a timestamp, or the access log's client address).
    """
    lines = log.splitlines()
    logged = unlogged = tracebacks = 0
    previous = ""
    block: list[str] | None = None
    block_after = ""
    for line in [*lines, "0 end"]:
        if block is not None:
            if not line[:1].isdigit():
                block.append(line)
                continue
            if "group_discard failed" not in block_after and any("group_discard" in entry for entry in block):
                unlogged += 1
            block = None
        if line.startswith("Traceback"):
            tracebacks += 1
            block, block_after = [line], previous
            continue
        if "group_discard failed" in line:
            logged += 1
        if line.strip():
            previous = line
    return {
        "tracebacks": tracebacks,
        "group_discard": logged + unlogged,
        "too_many_connections": sum(1 for line in lines if "Too many connections" in line),
        "application_errors": sum(1 for line in lines if "Exception inside application" in line),
    }
