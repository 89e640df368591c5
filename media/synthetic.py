"""Synthetic participants: aiortc clients that speak our session protocol and send real media.

A synthetic participant does what a browser tab does (docs/protocol.md, ``telehealth.v1``):
opens ``/ws/sessions/<uuid>/`` with a Django session cookie and a same-origin ``Origin``, waits
in the waiting room until it is admitted, then negotiates one RTCPeerConnection per member
(the newer side offers to everyone already in the room; glare is settled by the ``polite``
role the server stamps on each relayed frame), sends audio and video, and counts the frames it
decodes from each peer. Used by tests, by load benchmarks and by
``manage.py drop_synthetic_participants`` for a live demo.

Media is cheap on purpose: the video is a short VP8 clip encoded once per process and replayed
through aiortc's encoded-frame path (``RTCRtpSender`` packs an ``av.Packet`` without encoding),
and the audio is a pre-encoded Opus tone replayed the same way. So a participant costs
packetisation, SRTP and the *receiving* side's decoding, not an encoder per peer. (Replayed
packets carry no audio-level header extension and ignore keyframe requests, so the clip has a
keyframe every second; ``ToneTrack`` encodes live when audio levels matter.)
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import functools
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import av
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

logger = logging.getLogger(__name__)

SUBPROTOCOL = "telehealth.v1"  # docs/protocol.md; media never imports signaling
VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
AUDIO_FRAME = 960  # 20 ms at 48 kHz
# Tries after a `server.unavailable` answer before start() gives up (0.5, 1, 2, 4 s apart).
UNAVAILABLE_RETRIES = 4


# --- media sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """Pre-encoded packets (payload bytes) and how fast to replay them."""

    kind: str
    payloads: tuple[bytes, ...]
    rate: float  # packets per second
    clock: int  # RTP clock of the timestamps


@functools.lru_cache(maxsize=8)
def vp8_clip(width: int = 320, height: int = 240, fps: int = 15, seconds: int = 2, bitrate: int = 300_000) -> Clip:
    """A looping VP8 clip: a bright bar sweeping across a dark frame, a keyframe every second.

    The loop starts on a keyframe, so replaying it forever is a valid stream; the keyframe interval
    bounds how long a new receiver (or a Janus subscriber) waits for its first picture.
    """
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fps
    codec.bit_rate = bitrate
    codec.gop_size = fps
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    bar = max(8, width // 16)
    chroma = bytes([128]) * ((width // 2) * (height // 2))
    packets: list[bytes] = []
    for index in range(fps * seconds):
        frame = av.VideoFrame(width, height, "yuv420p")
        x = (index * (width - bar)) // (fps * seconds)
        row = bytes([30]) * x + bytes([230]) * bar + bytes([30]) * (width - x - bar)
        frame.planes[0].update(row * height)
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frame.pts = index
        packets += [bytes(packet) for packet in codec.encode(frame)]
    packets += [bytes(packet) for packet in codec.encode(None)]
    return Clip("video", tuple(packets), float(fps), VIDEO_CLOCK)


@functools.lru_cache(maxsize=2)
def opus_tone(frequency: int = 440, seconds: int = 1) -> Clip:
    """A looping Opus tone (mono content, stereo as WebRTC's Opus expects), 20 ms per packet."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = AUDIO_RATE, "stereo", "s16", 32_000
    packets: list[bytes] = []
    for index in range(seconds * AUDIO_RATE // AUDIO_FRAME):
        start = index * AUDIO_FRAME
        samples = array.array(
            "h",
            (
                int(6000 * math.sin(2 * math.pi * frequency * (start + n) / AUDIO_RATE))
                for n in range(AUDIO_FRAME)
                for _ in (0, 1)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        packets += [bytes(packet) for packet in codec.encode(frame)]
    return Clip("audio", tuple(packets), AUDIO_RATE / AUDIO_FRAME, AUDIO_RATE)


class ClipTrack(MediaStreamTrack):
    """Replays a Clip forever, in real time, as ``av.Packet``s (aiortc packs them without encoding)."""

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.kind = clip.kind
        self._clip = clip
        self._index = 0  # packets sent: drives timestamps and pacing
        self._position = 0  # where in the clip the next packet comes from
        self._started: float | None = None
        self._time_base = fractions.Fraction(1, clip.clock)
        self._step = clip.clock / clip.rate
        self._keyframe_wanted = False
        # VP8: bit 0 of the first byte is 0 on a keyframe. Audio has no keyframes.
        self._keyframes = [i for i, p in enumerate(clip.payloads) if clip.kind == "video" and not p[0] & 1]

    def request_keyframe(self) -> None:
        """A receiver lost the picture (PLI/FIR): jump to the clip's next keyframe instead of waiting for it."""
        self._keyframe_wanted = bool(self._keyframes)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._started is None:
            self._started = now
        due = self._started + self._index / self._clip.rate
        if due > now:
            await asyncio.sleep(due - now)
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            position = self._position % len(self._clip.payloads)
            self._position = next((k for k in self._keyframes if k >= position), self._keyframes[0])
        packet = av.Packet(self._clip.payloads[self._position % len(self._clip.payloads)])
        packet.pts = int(self._index * self._step)
        packet.time_base = self._time_base
        self._index += 1
        self._position += 1
        return packet


class ToneTrack(MediaStreamTrack):
    """A live-encoded tone (aiortc encodes each frame, so packets carry the audio level Janus reads)."""

    kind = "audio"

    def __init__(self, frequency: int = 440, amplitude: int = 12000) -> None:
        super().__init__()
        self._pts = 0
        self._started: float | None = None
        self._samples = [int(amplitude * math.sin(2 * math.pi * frequency * n / AUDIO_RATE)) for n in range(AUDIO_RATE)]

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._started is None:
            self._started = now
        due = self._started + self._pts / AUDIO_RATE
        if due > now:
            await asyncio.sleep(due - now)
        start = self._pts % AUDIO_RATE
        chunk = (self._samples + self._samples)[start : start + AUDIO_FRAME]
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_FRAME)
        frame.planes[0].update(array.array("h", chunk).tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._pts += AUDIO_FRAME
        return frame


def add_clip_tracks(pc: RTCPeerConnection, *, audio: bool = True, video: bool = True) -> None:
    """Send the replayed clips on ``pc``, VP8 only (the clip is VP8; Opus is aiortc's only audio codec here)."""
    if audio:
        pc.addTrack(ClipTrack(opus_tone()))
    if video:
        track = ClipTrack(vp8_clip())
        transceiver = pc.addTransceiver(track, direction="sendrecv")
        vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/VP8", "video/rtx")]
        transceiver.setCodecPreferences(vp8)
        forward_keyframe_requests(transceiver.sender, track)


def forward_keyframe_requests(sender: RTCRtpSender, track: ClipTrack) -> None:
    """Let PLI/FIR from receivers (Janus asks when a subscriber joins) reach a replayed clip.

    aiortc turns a keyframe request into a flag for its encoder, which replayed packets bypass;
    its ``_send_keyframe`` hook is wrapped so the clip jumps to a keyframe instead. Without the
    hook (another aiortc version) receivers simply wait for the clip's next keyframe.
    """
    original = getattr(sender, "_send_keyframe", None)
    if original is None:
        return

    def send_keyframe() -> None:
        original()
        track.request_keyframe()

    sender._send_keyframe = send_keyframe


# --- receiving -----------------------------------------------------------------------------------


@dataclass
class Received:
    """What one peer's media has delivered here: decoded frames per kind, and when the first came."""

    frames: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    first_frame_at: dict[str, float] = field(default_factory=dict)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def consume(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._drain(track)))

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.frames[track.kind] += 1
                self.first_frame_at.setdefault(track.kind, time.monotonic())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await task


# --- the participant -----------------------------------------------------------------------------


@dataclass
class Peer:
    member: str
    pc: RTCPeerConnection
    received: Received
    polite: bool | None = None  # unknown until the server stamps a frame from this peer
    conn: int | None = None


# sfu.link states after which the client publishes and subscribes again (static/js/sfu.js too).
SFU_RESTART_STATES = frozenset({"hangup", "down", "moved"})


class SyntheticParticipant:
    """One synthetic person in one session. ``await start()``, then ``await admitted()``, ``close()``.

    ``base_url`` is the server's http(s) URL; ``cookie`` the Django ``sessionid`` of a logged-in
    user on the session's roster. ``admit_waiting``: as a therapist, admit everyone who waits
    (a live demo without a human at the therapist's screen).

    The media path follows the room (``room.media.mode`` in welcome/admitted): peer to peer, one
    RTCPeerConnection per member, or through the SFU: one publishing connection (``sfu.publish``)
    and one receiving connection for every other member's streams (``sfu.subscribe``, answering
    each ``sfu.offer`` with ``sfu.start``). Either way ``frames_from()`` counts per member.
    """

    def __init__(
        self,
        base_url: str,
        session_id: str,
        cookie: str,
        *,
        label: str = "synthetic",
        admit_waiting: bool = False,
        audio: bool = True,
        video: bool = True,
        tone: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        parsed = urlparse(base_url)
        scheme = "wss" if parsed.scheme == "https" else "ws"
        self.ws_url = f"{scheme}://{parsed.netloc}/ws/sessions/{session_id}/"
        self.origin = f"{parsed.scheme}://{parsed.netloc}"
        self.cookie = cookie
        self.label = label
        self.admit_waiting = admit_waiting
        self.audio = audio
        self.video = video
        self.tone = tone  # live-encoded audio (with audio levels: SFU talking events) instead of the clip
        self.connect_timeout = connect_timeout
        self.member_id: str | None = None
        self.role: str | None = None
        self.state: str | None = None  # "waiting", "admitted", then "closed"
        self.close_code: int | None = None
        self.peers: dict[str, Peer] = {}
        self.ice_servers: list[dict] = []
        self.errors: list[dict] = []
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._ids = 0
        self._admitted = asyncio.Event()
        self._closed = asyncio.Event()
        self._roster: dict[str, dict] = {}
        self._work: set[asyncio.Task] = set()
        # Frame counts of peers whose connection was replaced or closed, so totals survive renegotiation.
        self.retired: dict[str, list[dict[str, int]]] = {}
        self.collisions = 0  # offers that crossed ours (glare), settled by the polite role
        # SFU mode: the publishing and the receiving connection, who each received mid belongs to.
        self.media_mode: str | None = None
        self.sfu_pub: RTCPeerConnection | None = None
        self.sfu_sub: RTCPeerConnection | None = None
        self.sfu_received: dict[str, Received] = {}  # per member, over the one receiving connection
        self.sfu_offers = 0  # subscription offers answered
        self.sfu_published = asyncio.Event()
        self.subscribe_sent_at: float | None = None  # when sfu.subscribe went out
        self.sfu_offer_at: float | None = None  # when the first subscription offer came in
        self.sfu_connected_at: float | None = None  # when the receiving connection was up (ICE + DTLS)
        self.talking: list[tuple[str, bool]] = []
        self.frames: list[dict] = []  # every sfu.* and error frame received, for tests
        self._mid_owner: dict[str, tuple[str, str]] = {}  # mid -> (member, kind)
        self._drained: set[str] = set()
        self._answers: dict[str, asyncio.Future] = {}
        self.sfu_restarts = 0  # times the server said to publish and subscribe again (sfu.link)
        self._sfu_restarting = asyncio.Lock()

    # --- lifecycle ---

    async def start(self) -> dict:
        """Connect and return the ``welcome`` frame (the handshake is refused with an exception).

        Like the browser, it tries again with backoff while the server answers
        ``server.unavailable`` (a backing service busy or down: close 1013).
        """
        for attempt in range(UNAVAILABLE_RETRIES + 1):
            self._ws = await websockets.connect(
                self.ws_url,
                subprotocols=[SUBPROTOCOL],
                additional_headers={"Cookie": f"sessionid={self.cookie}", "Origin": self.origin},
                open_timeout=self.connect_timeout,
                max_size=1024 * 1024,
            )
            welcome = json.loads(await asyncio.wait_for(self._ws.recv(), self.connect_timeout))
            if welcome.get("code") != "server.unavailable" or attempt == UNAVAILABLE_RETRIES:
                break
            await self._ws.close()
            await asyncio.sleep(0.5 * 2**attempt)
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected welcome, got {welcome.get('type')!r}")
        self.member_id, self.role, self.state = welcome["member"], welcome["role"], welcome["state"]
        self._reader = asyncio.create_task(self._read(), name=f"synthetic {self.label}")
        if welcome["state"] == "admitted":
            await self._enter(welcome["room"])
        return welcome

    async def admitted(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._admitted.wait(), timeout)

    async def close(self) -> None:
        if self._ws is not None and not self._closed.is_set():
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.send("session.leave")
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for task in list(self._work):
            task.cancel()
        for member in list(self.peers):
            await self._drop_peer(member)
        await self._close_sfu()
        self.state = "closed"

    def frames_from(self) -> dict[str, dict[str, int]]:
        """Decoded frames per peer member id and kind: ``{member: {"audio": n, "video": n}}``."""
        if self.media_mode == "sfu":
            return {member: dict(received.frames) for member, received in self.sfu_received.items()}
        return {member: dict(peer.received.frames) for member, peer in self.peers.items()}

    async def closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the socket; its close code."""
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_code

    # --- protocol ---

    async def send(self, type_: str, data: dict | None = None, to: str | None = None) -> str:
        self._ids += 1
        message_id = f"{self.label}-{self._ids}"
        envelope: dict = {"v": 1, "type": type_, "id": message_id, "data": data or {}}
        if to is not None:
            envelope["to"] = to
        await self._ws.send(json.dumps(envelope))
        return message_id

    async def _read(self) -> None:
        try:
            async for text in self._ws:
                frame = json.loads(text)
                try:
                    await self._handle(frame)
                except websockets.ConnectionClosed:
                    break  # closed while answering (an offer that crossed our leaving)
                except Exception:  # one bad negotiation must not end the participant
                    logger.exception("%s: handling %s failed", self.label, frame.get("type"))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self._closed.set()

    async def _handle(self, frame: dict) -> None:
        kind = frame["type"]
        future = self._answers.get(frame.get("re") or "")
        if future is not None and not future.done():
            future.set_result(frame)
        if kind == "admitted":
            self.state = "admitted"
            await self._enter(frame["room"])
        elif kind == "waiting.list" and self.admit_waiting:
            for entry in frame["entries"]:
                await self.send("mod.admit", {"member": entry["member"]})
        elif kind in ("member.joined", "member.updated"):
            await self._member_changed(frame["member"])
        elif kind == "member.left":
            self._roster.pop(frame["member"], None)
            await self._drop_peer(frame["member"])
        elif kind == "signal.description":
            await self._on_description(frame)
        elif kind == "signal.candidate":
            await self._on_candidate(frame)
        elif kind.startswith("sfu.") or kind in ("error", "ack"):
            await self._on_sfu_frame(frame)
        if kind == "error":
            self.errors.append(frame)
            logger.warning("%s: server error %s %s", self.label, frame.get("code"), frame.get("detail"))

    async def _enter(self, room: dict) -> None:
        self.ice_servers = room.get("ice_servers", [])
        self._roster = {m["member"]: m for m in room["roster"]}
        self.media_mode = room.get("media", {}).get("mode", "p2p")
        self._admitted.set()
        if self.media_mode == "sfu":
            self._spawn(self._sfu_begin())
            return
        # We are the newer side: offer to everyone already here (they answer).
        for member, info in self._roster.items():
            if member != self.member_id and info["presence"] == "connected":
                self._spawn(self._offer(member, info["conn"]))

    async def _member_changed(self, info: dict) -> None:
        member = info["member"]
        previous = self._roster.get(member)
        self._roster[member] = info
        peer = self.peers.get(member)
        if peer is not None and previous is not None and info["conn"] != previous["conn"]:
            # Their connection is new: they will offer again, on a fresh PeerConnection.
            await self._drop_peer(member)

    # --- negotiation ---

    def _configuration(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self.ice_servers
        ]
        return RTCConfiguration(iceServers=servers)

    def _new_peer(self, member: str) -> Peer:
        pc = RTCPeerConnection(self._configuration())
        received = Received()
        pc.on("track", received.consume)
        add_clip_tracks(pc, audio=self.audio, video=self.video)
        peer = Peer(member, pc, received, conn=self._roster.get(member, {}).get("conn"))
        self.peers[member] = peer
        return peer

    async def _offer(self, member: str, conn: int | None) -> None:
        peer = self.peers.get(member) or self._new_peer(member)
        # aiortc gathers every candidate before setLocalDescription returns: the SDP carries them.
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        if self.peers.get(member) is peer and peer.pc.signalingState == "have-local-offer":
            await self.send("signal.description", {"kind": "offer", "sdp": peer.pc.localDescription.sdp}, to=member)

    async def _on_description(self, frame: dict) -> None:
        member, polite = frame["from"], bool(frame["polite"])
        peer = self.peers.get(member)
        if frame["kind"] == "answer":
            if peer is not None and peer.pc.signalingState == "have-local-offer":
                peer.polite = polite
                await peer.pc.setRemoteDescription(RTCSessionDescription(frame["sdp"], "answer"))
            return
        collision = peer is not None and peer.pc.signalingState != "stable"
        if collision:
            self.collisions += 1
        if collision and not polite:
            return  # impolite: our offer wins, theirs is dropped
        if collision or (peer is not None and peer.pc.connectionState in ("failed", "closed")):
            # Polite side of a glare: aiortc has no rollback, so start over with a fresh connection.
            await self._drop_peer(member)
            peer = None
        if peer is None:
            peer = self._new_peer(member)
        peer.polite = polite
        await peer.pc.setRemoteDescription(RTCSessionDescription(frame["sdp"], "offer"))
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        await self.send("signal.description", {"kind": "answer", "sdp": peer.pc.localDescription.sdp}, to=member)

    async def _on_candidate(self, frame: dict) -> None:
        peer = self.peers.get(frame["from"])
        text = frame["candidate"]
        if peer is None or not text or peer.pc.remoteDescription is None:
            return
        candidate = candidate_from_sdp(text.removeprefix("candidate:"))
        candidate.sdpMid = frame.get("sdp_mid")
        candidate.sdpMLineIndex = frame.get("sdp_mline_index")
        await peer.pc.addIceCandidate(candidate)

    async def _drop_peer(self, member: str) -> None:
        peer = self.peers.pop(member, None)
        if peer is not None:
            await peer.received.stop()
            await peer.pc.close()
            self.retired.setdefault(member, []).append(dict(peer.received.frames))

    # --- through the SFU ---

    async def request(self, type_: str, data: dict | None = None, timeout: float = 10.0) -> dict:
        """Send a message and wait for the frame that answers it (``re`` = its id)."""
        message_id = f"{self.label}-{self._ids + 1}"
        future = asyncio.get_running_loop().create_future()
        self._answers[message_id] = future
        try:
            await self.send(type_, data)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._answers.pop(message_id, None)

    async def _sfu_begin(self) -> None:
        if not (self.audio or self.video):  # a watcher: receive only
            self.subscribe_sent_at = time.monotonic()
            await self.send("sfu.subscribe", {"feeds": None})
            return
        self.sfu_pub = RTCPeerConnection(self._configuration())
        if self.audio and self.tone:
            self.sfu_pub.addTrack(ToneTrack())
        add_clip_tracks(self.sfu_pub, audio=self.audio and not self.tone, video=self.video)
        await self.sfu_pub.setLocalDescription(await self.sfu_pub.createOffer())
        answer = await self.request("sfu.publish", {"sdp": self.sfu_pub.localDescription.sdp})
        if answer["type"] != "sfu.answer":
            raise RuntimeError(f"{self.label}: publish refused: {answer.get('code')}")
        await self.sfu_pub.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        self.sfu_published.set()
        self.subscribe_sent_at = time.monotonic()
        await self.send("sfu.subscribe", {"feeds": None})

    async def _on_sfu_frame(self, frame: dict) -> None:
        self.frames.append({k: v for k, v in frame.items() if k != "sdp"})
        if frame["type"] == "sfu.offer":
            await self._on_sfu_offer(frame)
        elif frame["type"] == "sfu.talking":
            self.talking.append((frame["member"], frame["talking"]))
        elif frame["type"] == "sfu.link" and frame["state"] in SFU_RESTART_STATES:
            self._spawn(self._sfu_restart())

    async def _sfu_restart(self) -> None:
        """Start media over on fresh connections, as the browser does (the SFU dropped us, or the
        session moved to another node); frame counts per member carry on."""
        async with self._sfu_restarting:
            self.sfu_restarts += 1
            await self._close_sfu()
            self._mid_owner.clear()
            self._drained.clear()
            self.sfu_published.clear()
            await self._sfu_begin()

    async def _on_sfu_offer(self, frame: dict) -> None:
        if self.sfu_sub is None:
            # One connection carries every feed: aiortc needs max-bundle for that (docs/media.md).
            config = self._configuration()
            config.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
            self.sfu_sub = RTCPeerConnection(config)
            self.sfu_offer_at = time.monotonic()
            pc = self.sfu_sub

            @pc.on("connectionstatechange")
            def connected() -> None:
                if pc.connectionState == "connected" and self.sfu_connected_at is None:
                    self.sfu_connected_at = time.monotonic()

        for stream in frame["streams"]:
            self._mid_owner[stream["mid"]] = (stream["member"], stream["kind"])
        await self.sfu_sub.setRemoteDescription(RTCSessionDescription(frame["sdp"], "offer"))
        for transceiver in self.sfu_sub.getTransceivers():
            mid = transceiver.mid
            if mid in self._mid_owner and mid not in self._drained:
                self._drained.add(mid)
                self._spawn(self._drain_mid(mid, transceiver.receiver.track))
        await self.sfu_sub.setLocalDescription(await self.sfu_sub.createAnswer())
        self.sfu_offers += 1
        await self.send("sfu.start", {"sdp": self.sfu_sub.localDescription.sdp})

    async def _drain_mid(self, mid: str, track: MediaStreamTrack) -> None:
        # The mid's owner is looked up per frame: the SFU may hand a freed mid to another member.
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                member, kind = self._mid_owner.get(mid, ("", ""))
                if not member:
                    continue
                received = self.sfu_received.setdefault(member, Received())
                received.frames[kind] += 1
                received.first_frame_at.setdefault(kind, time.monotonic())

    async def _close_sfu(self) -> None:
        for pc in (self.sfu_pub, self.sfu_sub):
            if pc is not None:
                await pc.close()
        self.sfu_pub = self.sfu_sub = None

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._work.add(task)
        task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Task) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: negotiation failed", self.label, exc_info=task.exception())


async def wait_for_frames(
    participants: Iterable[SyntheticParticipant], *, video: int, audio: int = 0, timeout: float = 20.0
) -> float:
    """Wait until every participant has decoded ``video`` (and ``audio``) frames from every other one.

    Returns the seconds it took; raises TimeoutError with the counts when it does not happen.
    """
    group = list(participants)
    started = time.monotonic()

    def done() -> bool:
        for me in group:
            for other in group:
                if other is me:
                    continue
                frames = me.frames_from().get(other.member_id or "")
                if not frames or frames["video"] < video or frames["audio"] < audio:
                    return False
        return True

    while not done():
        if time.monotonic() - started > timeout:
            counts = {p.label: p.frames_from() for p in group}
            raise TimeoutError(f"frames not received within {timeout} s: {counts}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started
