"""The pre-call check: a server-side aiortc peer that measures what a person's browser really sends.

From the pre-join screen the browser offers its camera and microphone (and a data channel) to a
``Probe`` here. The probe answers, receives for ``MEASURE_SECONDS``, and reports over the data
channel what arrived: resolution, frame rate, bitrate (from the browser's RTCP sender reports),
packet loss, the round trip (data-channel pings) and a plain verdict from ``judge``. A second check
with the browser restricted to relay candidates, using TURN credentials minted for it, tells whether
the TURN path works.

Bounded: a check ends after ``CHECK_SECONDS`` whatever happens, a person gets ``CHECKS_PER_MINUTE``
checks a minute, and a process runs at most ``MAX_CONCURRENT`` at once (each decodes video).
Nothing is recorded: the report goes to the browser and is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger(__name__)

CONNECT_SECONDS = 8.0  # ICE and DTLS must be up by then
MEASURE_SECONDS = 4.0  # receiving, once connected
CHECK_SECONDS = CONNECT_SECONDS + MEASURE_SECONDS + 2.0  # the hard bound on one check
CHECKS_PER_MINUTE = 4
MAX_CONCURRENT = 4
MAX_SDP_CHARS = 20_000

# Verdict codes (stable: the browser words them, tests assert them).
GOOD_FOR_VIDEO = "precall.good_video"
AUDIO_ONLY = "precall.audio_only"
NO_MEDIA = "precall.no_media"
BLOCKED = "precall.blocked"

VERDICT_TEXT = {
    GOOD_FOR_VIDEO: "Good for video.",
    AUDIO_ONLY: "Audio only recommended: your video would be choppy on this connection.",
    NO_MEDIA: "Connected, but nothing arrived from your camera or microphone: check that they are on.",
    BLOCKED: "Cannot connect: your network blocks the connection to our media servers. "
    "Try another network (for example mobile data instead of a work or hotel Wi-Fi).",
}


@dataclass(frozen=True)
class Measurement:
    connected: bool
    seconds: float = 0.0  # how long media was received
    video_frames: int = 0
    width: int = 0
    height: int = 0
    audio_frames: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    bytes_received: int = 0
    rtt_ms: float | None = None
    relay: bool = False  # the browser used relay candidates only (a TURN check)

    @property
    def fps(self) -> float:
        return self.video_frames / self.seconds if self.seconds else 0.0

    @property
    def kbps(self) -> float:
        return self.bytes_received * 8 / 1000 / self.seconds if self.seconds else 0.0

    @property
    def loss(self) -> float:
        total = self.packets_received + self.packets_lost
        return self.packets_lost / total if total else 0.0


@dataclass(frozen=True)
class Verdict:
    code: str
    text: str
    details: dict = field(default_factory=dict)


def judge(m: Measurement) -> Verdict:
    """A plain verdict from what arrived. Video is good at 10+ fps of 180+ lines with under 5 %
    loss and under 400 ms round trip; audio alone is fine with under 10 % loss."""
    details = {
        "width": m.width,
        "height": m.height,
        "fps": round(m.fps, 1),
        "kbps": round(m.kbps),
        "loss_percent": round(m.loss * 100, 1),
        "rtt_ms": None if m.rtt_ms is None else round(m.rtt_ms),
        "relay": m.relay,
    }
    if not m.connected:
        return Verdict(BLOCKED, VERDICT_TEXT[BLOCKED], details)
    if m.video_frames == 0 and m.audio_frames == 0:
        return Verdict(NO_MEDIA, VERDICT_TEXT[NO_MEDIA], details)
    slow = m.rtt_ms is not None and m.rtt_ms >= 400
    if m.video_frames and m.fps >= 10 and m.height >= 180 and m.loss < 0.05 and not slow:
        return Verdict(GOOD_FOR_VIDEO, VERDICT_TEXT[GOOD_FOR_VIDEO], details)
    return Verdict(AUDIO_ONLY, VERDICT_TEXT[AUDIO_ONLY], details)


class Limiter:
    """``CHECKS_PER_MINUTE`` per person and ``MAX_CONCURRENT`` per process (in this process)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.started: dict[str, deque[float]] = {}
        self.running = 0

    def admit(self, person: str) -> float:
        """0 when a check may start now (and counts it), else the seconds to wait."""
        now = self.clock()
        recent = self.started.setdefault(person, deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= CHECKS_PER_MINUTE:
            return 60 - (now - recent[0])
        if self.running >= MAX_CONCURRENT:
            return 2.0
        recent.append(now)
        self.running += 1
        return 0.0

    def done(self) -> None:
        self.running = max(0, self.running - 1)


LIMITER = Limiter()
RUNNING: set[asyncio.Task] = set()  # checks in progress, kept from the garbage collector


class Probe:
    """One check: answer the browser's offer, receive, report over its data channel, close."""

    def __init__(self, ice_servers: list[dict], *, relay: bool = False) -> None:
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ice_servers
        ]
        # An explicit list, even empty: with None aiortc falls back to a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.relay = relay
        self.connected = asyncio.Event()
        self.channel = None
        self.channel_open = asyncio.Event()
        self.video_frames = self.audio_frames = self.width = self.height = 0
        self.rtts: list[float] = []
        self.counting = False
        self.readers: list[asyncio.Task] = []

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

        @self.pc.on("track")
        def _track(track) -> None:
            self.readers.append(asyncio.ensure_future(self._read(track)))

        @self.pc.on("datachannel")
        def _channel(channel) -> None:
            self.channel = channel

            @channel.on("message")
            def _message(text) -> None:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    echo = json.loads(text)
                    if echo.get("type") == "pong":
                        self.rtts.append((time.monotonic() - float(echo["t"])) * 1000)

            self.channel_open.set()

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not self.counting:
                continue
            if track.kind == "video":
                self.video_frames += 1
                self.width, self.height = frame.width, frame.height
            else:
                self.audio_frames += 1

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp  # aiortc gathers its candidates before this returns

    async def _received(self) -> tuple[int, int, int]:
        """Packets received and lost (inbound RTP) and bytes the browser says it sent (RTCP SR)."""
        received = lost = sent = 0
        for receiver in self.pc.getReceivers():
            for stat in (await receiver.getStats()).values():
                if stat.type == "inbound-rtp":
                    received += stat.packetsReceived
                    lost += max(0, stat.packetsLost)
                elif stat.type == "remote-outbound-rtp":
                    sent += stat.bytesSent
        return received, lost, sent

    async def measure(self) -> Measurement:
        try:
            await asyncio.wait_for(self.connected.wait(), CONNECT_SECONDS)
        except TimeoutError:
            return Measurement(connected=False, relay=self.relay)
        self.counting = True
        start = time.monotonic()
        first = await self._received()
        while time.monotonic() - start < MEASURE_SECONDS:
            if self.channel is not None and self.channel.readyState == "open":
                self.channel.send(json.dumps({"type": "ping", "t": time.monotonic()}))
            await asyncio.sleep(0.5)
        self.counting = False
        seconds = time.monotonic() - start
        last = await self._received()
        return Measurement(
            connected=True,
            seconds=seconds,
            video_frames=self.video_frames,
            width=self.width,
            height=self.height,
            audio_frames=self.audio_frames,
            packets_received=last[0] - first[0],
            packets_lost=last[1] - first[1],
            bytes_received=max(0, last[2] - first[2]),
            rtt_ms=statistics.median(self.rtts) if self.rtts else None,
            relay=self.relay,
        )

    async def run(self) -> Verdict:
        """Measure, tell the browser, close. Never longer than ``CHECK_SECONDS``."""
        try:
            verdict = judge(await asyncio.wait_for(self.measure(), CHECK_SECONDS))
            if self.channel is not None and self.channel.readyState == "open":
                self.channel.send(json.dumps({"type": "report", **asdict(verdict)}))
                await asyncio.sleep(0.2)  # let the report leave before the connection closes
            return verdict
        finally:
            for reader in self.readers:
                reader.cancel()
            await self.pc.close()


def start(probe: Probe) -> asyncio.Task:
    """Run a probe in the background of this process (the HTTP answer does not wait for it)."""

    async def run() -> None:
        try:
            verdict = await probe.run()
            log.info("pre-call check finished: %s", verdict.code)
        except Exception:
            log.exception("pre-call check failed")
        finally:
            LIMITER.done()

    task = asyncio.get_running_loop().create_task(run())
    RUNNING.add(task)
    task.add_done_callback(RUNNING.discard)
    return task
