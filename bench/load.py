"""The load driver: R rooms x M members over real WebSockets, in one asyncio process.

Every member sends chat messages at a rate (Poisson arrivals or a fixed interval with a
random phase). The text of each message carries a unique id, the sender's index and the
send time (``time.monotonic()``, one clock for every client since they share a process),
so every receiver computes the relay latency itself. Deliveries are counted against what
was expected: every message attempted by a member should reach each of the other M-1
members of its room, whether or not they managed to join, and a duplicate is not a
delivery. Frames a target sends back to the sender itself (an echo or an ack) are
counted apart.

A target supplies the member list (URL, headers) and a ``Protocol``: how a chat frame
is written, how a delivery is recognised, and when a member is ready (the reference is
ready at its welcome; a telehealth participant once admitted).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench import procstat

monotonic = time.monotonic


@dataclass
class MemberSpec:
    index: int  # global, unique in the run
    room: int
    url: str
    role: str = "peer"  # "peer" (reference), "therapist" or "participant"
    headers: list[tuple[str, str]] = field(default_factory=list)
    origin: str | None = None
    subprotocols: list[str] | None = None


class Protocol:
    """How a target talks. The reference's protocol; the telehealth target subclasses it."""

    name = "reference"

    def chat_frame(self, member: Member, client_id: str, text: str) -> str:
        return json.dumps({"v": 1, "type": "chat.send", "id": client_id, "data": {"text": text}})

    def delivery_text(self, frame: dict) -> str | None:
        """The chat text if ``frame`` delivers a chat message, else None."""
        if frame.get("type") == "chat.send":
            return frame["data"]["text"]
        return None

    def on_frame(self, member: Member, frame: dict) -> None:
        """Any other frame: the first one readies a reference member (its welcome)."""
        if frame.get("type") == "error":
            member.errors[str(frame.get("code"))] += 1
        member.mark_ready()

    async def admit(self, members: list[Member], timeout: float) -> None:
        """Make every joined member ready (a therapist admitting the waiting room, say)."""


class Member:
    __slots__ = (
        "spec",
        "ws",
        "connect_started",
        "first_frame_at",
        "ready_at",
        "ready",
        "first_frame",
        "attempted",
        "send_failed",
        "close_code",
        "join_error",
        "errors",
        "frames",
        "reader",
        "state",
        "member_id",
        "stats",
        "protocol",
    )

    def __init__(self, spec: MemberSpec, stats: Stats, protocol: Protocol) -> None:
        self.spec = spec
        self.stats = stats
        self.protocol = protocol
        self.ws: ClientConnection | None = None
        self.connect_started: float | None = None
        self.first_frame_at: float | None = None
        self.ready_at: float | None = None
        self.ready = asyncio.Event()
        self.first_frame = asyncio.Event()
        self.attempted = 0
        self.send_failed = 0
        self.close_code: int | None = None
        self.join_error: str | None = None
        self.errors: Counter = Counter()
        self.frames: Counter = Counter()
        self.reader: asyncio.Task | None = None
        self.state: dict = {}  # protocol-specific (member id, admission state...)
        self.member_id: str | None = None

    def mark_ready(self) -> None:
        if self.ready_at is None:
            self.ready_at = monotonic()
            self.ready.set()

    @property
    def join_ms(self) -> float | None:
        if self.first_frame_at is None or self.connect_started is None:
            return None
        return (self.first_frame_at - self.connect_started) * 1000

    @property
    def ready_ms(self) -> float | None:
        if self.ready_at is None or self.connect_started is None:
            return None
        return (self.ready_at - self.connect_started) * 1000

    async def read(self) -> None:
        ws = self.ws
        stats = self.stats
        protocol = self.protocol
        try:
            async for raw in ws:
                now = monotonic()
                if self.first_frame_at is None:
                    self.first_frame_at = now
                    self.first_frame.set()
                frame = json.loads(raw)
                kind = frame.get("type")
                self.frames[kind] += 1
                text = protocol.delivery_text(frame)
                if text is not None:
                    stats.record(text, self.spec.index, now)
                else:
                    protocol.on_frame(self, frame)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            # A member that was never ready never will be: wake whoever waits for it.
            self.first_frame.set()
            self.ready.set()


class Stats:
    """Deliveries and latencies of one run."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.seen: set[tuple[str, int]] = set()
        self.duplicates = 0
        self.echoes = 0
        self.malformed = 0

    def record(self, text: str, receiver: int, now: float) -> None:
        try:
            client_id, sender, sent_at = text.split("|")
            sender_index = int(sender)
            sent = float(sent_at)
        except ValueError:
            self.malformed += 1
            return
        if sender_index == receiver:
            self.echoes += 1
            return
        key = (client_id, receiver)
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        self.latencies_ms.append((now - sent) * 1000)

    @property
    def delivered(self) -> int:
        return len(self.seen)


class LoopLag:
    """How late the client's own event loop wakes up: a busy client inflates every latency."""

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.samples_ms: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            before = monotonic()
            await asyncio.sleep(self.period)
            self.samples_ms.append((monotonic() - before - self.period) * 1000)

    def start(self) -> None:
        self.samples_ms = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- phases -----------------------------------------------------------------------------------


async def join_one(member: Member, semaphore: asyncio.Semaphore, timeout: float) -> None:
    """Connect and wait for the first server frame, holding one of the concurrent-join slots."""
    spec = member.spec
    async with semaphore:
        member.connect_started = monotonic()
        try:
            member.ws = await connect(
                spec.url,
                origin=spec.origin,
                subprotocols=spec.subprotocols,
                additional_headers=spec.headers or None,
                compression=None,  # daphne negotiates none either
                proxy=None,  # never through an HTTP proxy from the environment: 127.0.0.1 only
                open_timeout=timeout,
                ping_interval=None,
                close_timeout=2,
                max_queue=None,  # the reader never lags on purpose; let the kernel buffer decide
            )
        except InvalidStatus as exc:
            member.join_error = f"http.{exc.response.status_code}"
            return
        except (OSError, TimeoutError) as exc:
            member.join_error = type(exc).__name__
            return
        except Exception as exc:  # a handshake the library refuses: report it, never crash the run
            member.join_error = type(exc).__name__
            return
        member.reader = asyncio.create_task(member.read())
        try:
            await asyncio.wait_for(member.first_frame.wait(), timeout)
        except TimeoutError:
            member.join_error = "no_first_frame"
        if member.first_frame_at is None and member.join_error is None:
            member.join_error = f"closed.{member.close_code}"  # closed before any frame


async def join_all(members: list[Member], concurrency: int, timeout: float) -> float:
    """Join everyone with at most ``concurrency`` handshakes in flight; returns the wall time."""
    semaphore = asyncio.Semaphore(concurrency)
    started = monotonic()
    await asyncio.gather(*(join_one(m, semaphore, timeout) for m in members))
    return monotonic() - started


async def wait_ready(members: list[Member], timeout: float) -> None:
    joined = [m for m in members if m.ws is not None and m.join_error is None]
    try:
        await asyncio.wait_for(asyncio.gather(*(m.ready.wait() for m in joined)), timeout)
    except TimeoutError:
        pass


async def send_loop(member: Member, rate: float, until: float, poisson: bool, rng: random.Random) -> None:
    ws = member.ws
    protocol = member.protocol
    index = member.spec.index
    now = monotonic()
    next_at = now + (rng.expovariate(rate) if poisson else rng.uniform(0, 1 / rate))
    seq = 0
    while next_at < until:
        delay = next_at - monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        seq += 1
        client_id = f"b{index}.{seq}"
        member.attempted += 1
        sent_at = monotonic()
        try:
            await ws.send(protocol.chat_frame(member, client_id, f"{client_id}|{index}|{sent_at:.6f}"))
        except ConnectionClosed:
            member.send_failed += 1  # the attempt stays expected: its room never gets it
            return
        next_at += rng.expovariate(rate) if poisson else 1 / rate


def expected_deliveries(members: list[Member], room_size: dict[int, int]) -> int:
    return sum(m.attempted * (room_size[m.spec.room] - 1) for m in members)


async def close_all(members: list[Member], timeout: float = 10) -> float:
    """Close every socket at once (the mass disconnect); returns how long the closes took."""
    started = monotonic()
    open_members = [m for m in members if m.ws is not None]

    async def close(member: Member) -> None:
        try:
            await member.ws.close()
        except Exception:
            pass

    try:
        await asyncio.wait_for(asyncio.gather(*(close(m) for m in open_members)), timeout)
    except TimeoutError:
        pass
    readers = [m.reader for m in open_members if m.reader is not None]
    for task in readers:
        if not task.done():
            task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return monotonic() - started


@dataclass
class TrafficResult:
    members: int
    joined: int
    ready: int
    join_errors: Counter
    join_ms: list[float]
    ready_ms: list[float]
    join_wall_s: float
    attempted: int
    expected: int
    delivered: int
    duplicates: int
    echoes: int
    latencies_ms: list[float]
    send_seconds: float
    window_seconds: float
    cpu: dict
    client_cpu_s: float
    loop_lag_ms: list[float]
    error_frames: Counter
    close_codes: Counter
    frames: Counter
    drained: bool


async def run_traffic(
    specs: list[MemberSpec],
    protocol: Protocol,
    cpu_components: dict,
    *,
    rate: float,
    duration: float,
    poisson: bool = True,
    join_concurrency: int = 64,
    join_timeout: float = 20,
    drain: float = 10,
    settle: float = 1.0,
    seed: int = 1,
    keep_open: bool = False,
    on_window=None,
) -> tuple[TrafficResult, list[Member]]:
    """Join everyone, let the room settle, send for ``duration`` s, then wait up to ``drain`` s.

    CPU is metered from the first send to the end of the drain, so joins are not counted in
    the per-delivery cost (the join storm measures those). With ``keep_open`` the sockets
    stay open for the caller (the mass-disconnect check); otherwise they are closed.
    """
    stats = Stats()
    members = [Member(spec, stats, protocol) for spec in specs]
    room_size = Counter(spec.room for spec in specs)
    lag = LoopLag()
    lag.start()
    join_wall = await join_all(members, join_concurrency, join_timeout)
    await protocol.admit(members, join_timeout)
    await wait_ready(members, join_timeout)
    await asyncio.sleep(settle)
    for m in members:
        m.frames.clear()  # count frames of the measured window only
    ready = [m for m in members if m.ready_at is not None and m.close_code is None and m.join_error is None]

    meter = procstat.CpuMeter(
        {**cpu_components, "client": procstat.cpu_seconds_self, "machine": procstat.machine_busy_seconds}
    )
    rng = random.Random(seed)
    lag_before = len(lag.samples_ms)
    meter.start()
    if on_window is not None:
        on_window(duration + drain)  # e.g. start a profiler on the servers for the measured window
    started = monotonic()
    until = started + duration
    await asyncio.gather(*(send_loop(m, rate, until, poisson, random.Random(rng.random())) for m in ready))
    send_seconds = monotonic() - started
    expected = expected_deliveries(members, room_size)
    drain_until = monotonic() + drain
    while stats.delivered < expected and monotonic() < drain_until:
        await asyncio.sleep(0.05)
    drained = stats.delivered >= expected
    window = monotonic() - started
    cpu = meter.stop()
    lag_samples = lag.samples_ms[lag_before:]
    await lag.stop()

    result = TrafficResult(
        members=len(members),
        joined=sum(1 for m in members if m.join_error is None and m.ws is not None),
        ready=len(ready),
        join_errors=Counter(m.join_error for m in members if m.join_error),
        join_ms=[m.join_ms for m in members if m.join_ms is not None],
        ready_ms=[m.ready_ms for m in members if m.ready_ms is not None and m.join_error is None],
        join_wall_s=join_wall,
        attempted=sum(m.attempted for m in members),
        expected=expected,
        delivered=stats.delivered,
        duplicates=stats.duplicates,
        echoes=stats.echoes,
        latencies_ms=stats.latencies_ms,
        send_seconds=send_seconds,
        window_seconds=window,
        cpu=cpu,
        client_cpu_s=cpu.pop("client") or 0.0,
        loop_lag_ms=lag_samples,
        error_frames=sum((m.errors for m in members), Counter()),
        close_codes=Counter(m.close_code for m in members if m.close_code is not None),
        frames=sum((m.frames for m in members), Counter()),
        drained=drained,
    )
    if not keep_open:
        await close_all(members)
    return result, members


@dataclass
class JoinResult:
    joins: int
    concurrency: int
    joined: int
    ready: int
    join_errors: Counter
    join_ms: list[float]
    ready_ms: list[float]
    wall_s: float
    window_seconds: float  # the CPU window: the joins, admission and the hold after them
    cpu: dict
    client_cpu_s: float
    loop_lag_ms: list[float]
    close_codes: Counter


async def run_join_storm(
    specs: list[MemberSpec],
    protocol: Protocol,
    cpu_components: dict,
    *,
    concurrency: int,
    timeout: float = 20,
    hold: float = 2.0,
) -> JoinResult:
    """Everyone joins at once, at most ``concurrency`` handshakes in flight; CPU covers the joins."""
    stats = Stats()
    members = [Member(spec, stats, protocol) for spec in specs]
    lag = LoopLag()
    lag.start()
    meter = procstat.CpuMeter(
        {**cpu_components, "client": procstat.cpu_seconds_self, "machine": procstat.machine_busy_seconds}
    )
    meter.start()
    window_started = monotonic()
    wall = await join_all(members, concurrency, timeout)
    await protocol.admit(members, timeout)
    await wait_ready(members, timeout)
    await asyncio.sleep(hold)  # the tail of roster and presence fan-out belongs to the joins
    cpu = meter.stop()
    window = monotonic() - window_started
    await lag.stop()
    result = JoinResult(
        joins=len(members),
        concurrency=concurrency,
        joined=sum(1 for m in members if m.join_error is None and m.ws is not None),
        ready=sum(1 for m in members if m.ready_at is not None and m.join_error is None),
        join_errors=Counter(m.join_error for m in members if m.join_error),
        join_ms=[m.join_ms for m in members if m.join_ms is not None],
        ready_ms=[m.ready_ms for m in members if m.ready_ms is not None and m.join_error is None],
        wall_s=wall,
        window_seconds=window,
        cpu=cpu,
        client_cpu_s=cpu.pop("client") or 0.0,
        loop_lag_ms=lag.samples_ms,
        close_codes=Counter(m.close_code for m in members if m.close_code is not None),
    )
    await close_all(members)
    return result
