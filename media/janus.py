"""An asyncio client for Janus's WebSocket API, and a VideoRoom layer on top of it.

Our server is Janus's only API client (browsers never see Janus's API, its secret or its ids):
the Channels consumer will hold one ``JanusClient`` per Janus node and per process, one Janus
session per participant connection, and build every request itself from validated fields.

Layers, bottom up:

- ``JanusClient``: one WebSocket (subprotocol ``janus-protocol``), request/response matching by
  transaction, ``apisecret`` on every request, errors raised as ``JanusError`` with Janus's code.
- ``JanusSession``: create/destroy, a keepalive every 25 s (Janus drops a session after 60 s of
  silence), plugin handles.
- ``JanusHandle``: plugin messages (synchronous answers and ack-then-event alike), trickle,
  hangup, detach, and the handle's events (``JanusEvent``, a queue plus optional listeners).
- ``VideoRoomAdmin`` (room lifecycle, allowed tokens, kick, moderate), ``Publisher`` and
  ``Subscriber``: the VideoRoom requests the broker needs, each one method.

Janus errors seen with the generated config: 403 no or wrong api secret, 429 room creation
without the admin key, 433 a token not in the room's allowed list, 428 subscribing before the
publisher's PeerConnection is up (see ../shared/MEDIA.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets

logger = logging.getLogger(__name__)

SUBPROTOCOL = "janus-protocol"
VIDEOROOM = "janus.plugin.videoroom"
KEEPALIVE_SECONDS = 25.0
REQUEST_TIMEOUT = 10.0

# Janus error codes (core and VideoRoom) the broker acts on, as Janus 1.1.2 answers them here.
UNAUTHORIZED = 403  # api secret missing or wrong
VIDEOROOM_NO_SUCH_ROOM = 426
VIDEOROOM_ROOM_EXISTS = 427
VIDEOROOM_NO_SUCH_FEED = 428  # also: subscribing before the publisher's PeerConnection is up
VIDEOROOM_MISSING_ELEMENT = 429  # e.g. create without admin_key
VIDEOROOM_UNAUTHORIZED = 433  # token not in the allowed list, wrong admin_key or room secret


class JanusError(Exception):
    """A request Janus refused: ``code`` is Janus's numeric error code, ``reason`` its text."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusClosed(JanusError):
    """The WebSocket to Janus closed: every pending request fails with this."""

    def __init__(self, reason: str = "connection to Janus closed") -> None:
        super().__init__(0, reason)


@dataclass
class JanusEvent:
    """Something Janus pushed for one handle, reduced to what the broker dispatches on.

    ``kind`` is one of: ``publishers`` (new feeds; ``data["publishers"]``), ``unpublished``,
    ``leaving``, ``joining``, ``talking``, ``stopped-talking``, ``kicked``, ``destroyed``,
    ``updated``, ``slowlink``, ``hangup``, ``webrtcup``, ``media``, ``detached``, ``trickle``,
    ``event`` (another plugin event) or ``timeout`` (the session timed out).
    """

    kind: str
    handle_id: int | None
    data: dict = field(default_factory=dict)
    jsep: dict | None = None
    raw: dict = field(default_factory=dict)


def classify(message: dict) -> JanusEvent:
    """Turn one pushed Janus message into a JanusEvent (pure: tests feed it recorded messages)."""
    janus = message.get("janus")
    handle_id = message.get("sender")
    if janus == "event":
        data = message.get("plugindata", {}).get("data", {})
        videoroom = data.get("videoroom")
        if videoroom in {"talking", "stopped-talking", "destroyed", "updated", "slow_link"}:
            kind = "slowlink" if videoroom == "slow_link" else videoroom
        elif "publishers" in data:
            kind = "publishers"
        elif "unpublished" in data:
            kind = "unpublished"
        elif "leaving" in data:
            kind = "kicked" if data.get("reason") == "kicked" else "leaving"
        elif "joining" in data:
            kind = "joining"
        elif "kicked" in data:
            kind = "kicked"
        else:
            kind = "event"
        return JanusEvent(kind, handle_id, data, message.get("jsep"), message)
    if janus in {"slowlink", "hangup", "webrtcup", "media", "detached", "trickle", "timeout"}:
        data = {k: v for k, v in message.items() if k not in {"janus", "session_id", "sender"}}
        return JanusEvent(janus, handle_id, data, None, message)
    return JanusEvent("event", handle_id, {}, None, message)


Listener = Callable[[JanusEvent], Awaitable[None] | None]


class JanusClient:
    """One WebSocket to one Janus node. ``async with JanusClient(url, secret) as client: ...``."""

    def __init__(
        self,
        url: str,
        api_secret: str,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.url = url
        self.api_secret = api_secret
        self.request_timeout = request_timeout
        self.keepalive_seconds = keepalive_seconds
        self._ws: Any = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[str, tuple[asyncio.Future, bool]] = {}
        self._sessions: dict[int, JanusSession] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self.closed = asyncio.Event()
        self.on_close: Callable[[], None] | None = None  # called once when the socket to Janus ends

    async def connect(self) -> JanusClient:
        self._ws = await websockets.connect(
            self.url, subprotocols=[SUBPROTOCOL], open_timeout=self.request_timeout, max_size=4 * 1024 * 1024
        )
        self._reader = asyncio.create_task(self._read(), name=f"janus-reader {self.url}")
        return self

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            session._stop_keepalive()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> JanusClient:
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- requests ------------------------------------------------------------------------------

    async def request(self, janus: str, *, final_on_ack: bool = True, **fields: Any) -> dict:
        """Send ``{"janus": janus, ...fields}`` and return Janus's answer for it.

        ``final_on_ack`` False: an ``ack`` only says the request was queued (asynchronous plugin
        requests); the answer is the ``event`` that later carries the same transaction.
        Raises JanusError (Janus refused), JanusClosed (the socket closed) or TimeoutError (no
        answer within ``request_timeout``).
        """
        if self._ws is None or self.closed.is_set():
            raise JanusClosed()
        transaction = f"{self._prefix}-{next(self._ids)}"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[transaction] = (future, final_on_ack)
        message = {"janus": janus, "transaction": transaction, "apisecret": self.api_secret, **fields}
        try:
            await self._ws.send(json.dumps(message))
            answer = await asyncio.wait_for(future, self.request_timeout)
        except websockets.ConnectionClosed as exc:
            raise JanusClosed() from exc
        finally:
            self._pending.pop(transaction, None)
        if answer.get("janus") == "error":
            error = answer.get("error", {})
            raise JanusError(int(error.get("code", 0)), str(error.get("reason", "")))
        return answer

    async def info(self) -> dict:
        return await self.request("info")

    async def create_session(self) -> JanusSession:
        answer = await self.request("create")
        session = JanusSession(self, int(answer["data"]["id"]))
        self._sessions[session.id] = session
        session._start_keepalive()
        return session

    # --- the reader ----------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for text in self._ws:
                try:
                    message = json.loads(text)
                except ValueError:
                    logger.warning("janus sent a frame that is not JSON")
                    continue
                self._dispatch(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            if self.on_close is not None:
                self.on_close()
            for future, _ in list(self._pending.values()):
                if not future.done():
                    future.set_exception(JanusClosed())
            for session in list(self._sessions.values()):
                session._stop_keepalive()
                session._closed()

    def _dispatch(self, message: dict) -> None:
        transaction = message.get("transaction")
        pending = self._pending.get(transaction) if transaction else None
        if pending is not None:
            future, final_on_ack = pending
            if message.get("janus") == "ack" and not final_on_ack:
                return  # queued: the event with this transaction is the answer
            if not future.done():
                future.set_result(message)
            return
        session = self._sessions.get(message.get("session_id"))
        if session is not None:
            session._deliver(classify(message))


class JanusSession:
    """A Janus session: the unit Janus times out, and what we destroy to cut a participant off."""

    def __init__(self, client: JanusClient, session_id: int) -> None:
        self.client = client
        self.id = session_id
        self.handles: dict[int, JanusHandle] = {}
        self._keepalive: asyncio.Task | None = None
        self.timed_out = asyncio.Event()

    async def attach(self, plugin: str = VIDEOROOM) -> JanusHandle:
        answer = await self.client.request("attach", session_id=self.id, plugin=plugin)
        handle = JanusHandle(self, int(answer["data"]["id"]))
        self.handles[handle.id] = handle
        return handle

    async def keepalive(self) -> None:
        await self.client.request("keepalive", session_id=self.id)

    async def destroy(self) -> None:
        """End the session on Janus: every handle's PeerConnection and room membership go with it."""
        self._stop_keepalive()
        self.client._sessions.pop(self.id, None)
        with contextlib.suppress(JanusClosed):
            await self.client.request("destroy", session_id=self.id)

    def _start_keepalive(self) -> None:
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"janus-keepalive {self.id}")

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        self._keepalive = None

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.client.keepalive_seconds)
            try:
                await self.keepalive()
            except JanusClosed:
                return
            except (JanusError, TimeoutError) as exc:
                logger.warning("janus keepalive for session %s failed: %s", self.id, exc)

    def _deliver(self, event: JanusEvent) -> None:
        if event.kind == "timeout":
            self.timed_out.set()
            self._stop_keepalive()
            self.client._sessions.pop(self.id, None)
            for handle in self.handles.values():
                handle._deliver(event)
            return
        handle = self.handles.get(event.handle_id) if event.handle_id is not None else None
        if handle is not None:
            handle._deliver(event)

    def _closed(self) -> None:
        for handle in self.handles.values():
            handle._deliver(JanusEvent("detached", handle.id, {"reason": "connection closed"}))


class JanusHandle:
    """A plugin handle: one PeerConnection (publisher or subscriber) or a control channel."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.id = handle_id
        self.events: asyncio.Queue[JanusEvent] = asyncio.Queue()
        self._listeners: list[Listener] = []
        self._listener_tasks: set[asyncio.Task] = set()  # held so running listeners are not collected

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for each event pushed to this handle (a coroutine is scheduled)."""
        self._listeners.append(listener)

    def _deliver(self, event: JanusEvent) -> None:
        self.events.put_nowait(event)
        for listener in self._listeners:
            try:
                result = listener(event)
            except Exception:  # a broken listener must not stop the reader for every other handle
                logger.exception("janus event listener failed on %s", event.kind)
                continue
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._listener_tasks.add(task)
                task.add_done_callback(self._listener_done)

    def _listener_done(self, task: asyncio.Task) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("janus event listener failed", exc_info=task.exception())

    async def next_event(self, *kinds: str, timeout: float = REQUEST_TIMEOUT) -> JanusEvent:
        """The next queued event of one of ``kinds`` (any kind when none given); others are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if not kinds or event.kind in kinds:
                    return event

    async def message(self, body: dict, jsep: dict | None = None) -> tuple[dict, dict | None]:
        """A plugin request; returns the plugin's data and its JSEP (if any), or raises JanusError."""
        fields: dict[str, Any] = {"session_id": self.session.id, "handle_id": self.id, "body": body}
        if jsep is not None:
            fields["jsep"] = jsep
        answer = await self.session.client.request("message", final_on_ack=False, **fields)
        data = answer.get("plugindata", {}).get("data", {})
        if "error_code" in data:
            raise JanusError(int(data["error_code"]), str(data.get("error", "")))
        return data, answer.get("jsep")

    async def trickle(self, candidate: dict | None) -> None:
        """One ICE candidate (``{"candidate", "sdpMid", "sdpMLineIndex"}``), or None: gathering completed."""
        await self.session.client.request(
            "trickle",
            session_id=self.session.id,
            handle_id=self.id,
            candidate=candidate if candidate is not None else {"completed": True},
        )

    async def hangup(self) -> None:
        await self.session.client.request("hangup", session_id=self.session.id, handle_id=self.id)

    async def detach(self) -> None:
        await self.session.client.request("detach", session_id=self.session.id, handle_id=self.id)
        self.session.handles.pop(self.id, None)


# --- VideoRoom -----------------------------------------------------------------------------------


@dataclass
class RoomSpec:
    """A session's room as Django creates it: private, token-gated, sized for the session.

    ``room`` and ``secret`` are ours (random, kept server-side); the room's ``allowed`` list starts
    empty and gets one token per authorised join.
    """

    room: str
    secret: str
    publishers: int = 16
    bitrate: int = 800_000  # per publisher, bits/s; Janus caps publishers with REMB
    description: str = "telehealth session"
    audiolevel_event: bool = True
    audio_active_packets: int = 50
    audio_level_average: int = 40
    notify_joining: bool = True
    require_pvtid: bool = True
    fir_freq: int = 5  # seconds between keyframe requests Janus sends to publishers
    videocodec: str = "vp8"
    audiocodec: str = "opus"
    allowed: list[str] = field(default_factory=list)


class VideoRoomAdmin:
    """Room lifecycle and authorisation, over one control handle on the broker's Janus session."""

    def __init__(self, handle: JanusHandle, admin_key: str) -> None:
        self.handle = handle
        self.admin_key = admin_key

    @classmethod
    async def open(cls, session: JanusSession, admin_key: str) -> VideoRoomAdmin:
        return cls(await session.attach(VIDEOROOM), admin_key)

    async def create_room(self, spec: RoomSpec) -> dict:
        data, _ = await self.handle.message(
            {
                "request": "create",
                "admin_key": self.admin_key,
                "room": spec.room,
                "permanent": False,
                "description": spec.description,
                "secret": spec.secret,
                "is_private": True,
                "allowed": list(spec.allowed),
                "publishers": spec.publishers,
                "bitrate": spec.bitrate,
                "bitrate_cap": True,
                "fir_freq": spec.fir_freq,
                "audiocodec": spec.audiocodec,
                "videocodec": spec.videocodec,
                "require_pvtid": spec.require_pvtid,
                "audiolevel_event": spec.audiolevel_event,
                "audio_active_packets": spec.audio_active_packets,
                "audio_level_average": spec.audio_level_average,
                "notify_joining": spec.notify_joining,
            }
        )
        return data

    async def destroy_room(self, room: str, secret: str) -> dict:
        data, _ = await self.handle.message({"request": "destroy", "room": room, "secret": secret, "permanent": False})
        return data

    async def exists(self, room: str) -> bool:
        data, _ = await self.handle.message({"request": "exists", "room": room})
        return bool(data.get("exists"))

    async def allow(self, room: str, secret: str, tokens: list[str]) -> list[str]:
        return await self._allowed(room, secret, "add", tokens)

    async def disallow(self, room: str, secret: str, tokens: list[str]) -> list[str]:
        return await self._allowed(room, secret, "remove", tokens)

    async def _allowed(self, room: str, secret: str, action: str, tokens: list[str]) -> list[str]:
        data, _ = await self.handle.message(
            {"request": "allowed", "room": room, "secret": secret, "action": action, "allowed": list(tokens)}
        )
        return list(data.get("allowed", []))

    async def kick(self, room: str, secret: str, participant: str) -> None:
        await self.handle.message({"request": "kick", "room": room, "secret": secret, "id": participant})

    async def moderate(self, room: str, secret: str, participant: str, mid: str, mute: bool) -> None:
        """Stop (or resume) forwarding one of a publisher's streams, whatever its client sends (hard mute)."""
        await self.handle.message(
            {"request": "moderate", "room": room, "secret": secret, "id": participant, "mid": mid, "mute": mute}
        )

    async def participants(self, room: str) -> list[dict]:
        data, _ = await self.handle.message({"request": "listparticipants", "room": room})
        return list(data.get("participants", []))


@dataclass
class Joined:
    id: str
    private_id: int
    publishers: list[dict]


class Publisher:
    """One participant's sending PeerConnection on Janus (its own handle)."""

    def __init__(self, handle: JanusHandle) -> None:
        self.handle = handle
        self.room: str | None = None
        self.joined: Joined | None = None

    @classmethod
    async def open(cls, session: JanusSession) -> Publisher:
        return cls(await session.attach(VIDEOROOM))

    async def join(self, room: str, participant: str, token: str, display: str | None = None) -> Joined:
        body = {"request": "join", "ptype": "publisher", "room": room, "id": participant, "token": token}
        if display is not None:
            body["display"] = display
        data, _ = await self.handle.message(body)
        self.room = room
        self.joined = Joined(str(data["id"]), int(data["private_id"]), list(data.get("publishers", [])))
        return self.joined

    async def configure(
        self, offer_sdp: str, *, audio: bool = True, video: bool = True, bitrate: int | None = None
    ) -> str:
        """Publish with the client's offer; returns Janus's answer SDP."""
        body: dict[str, Any] = {"request": "configure", "audio": audio, "video": video}
        if bitrate is not None:
            body["bitrate"] = bitrate
        _, jsep = await self.handle.message(body, {"type": "offer", "sdp": offer_sdp})
        if not jsep or jsep.get("type") != "answer":
            raise JanusError(0, "configure returned no answer")
        return str(jsep["sdp"])

    async def unpublish(self) -> None:
        await self.handle.message({"request": "unpublish"})

    async def leave(self) -> None:
        await self.handle.message({"request": "leave"})


class Subscriber:
    """One participant's receiving PeerConnection: a single multistream subscription for all feeds."""

    def __init__(self, handle: JanusHandle) -> None:
        self.handle = handle

    @classmethod
    async def open(cls, session: JanusSession) -> Subscriber:
        return cls(await session.attach(VIDEOROOM))

    async def subscribe(
        self, room: str, feeds: list[str], private_id: int | None, token: str | None = None
    ) -> tuple[str, dict]:
        """Ask for ``feeds``; returns Janus's offer SDP and the plugin data (``streams``: mid per feed)."""
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "subscriber",
            "room": room,
            "streams": [{"feed": feed} for feed in feeds],
        }
        if private_id is not None:
            body["private_id"] = private_id
        if token is not None:
            body["token"] = token
        data, jsep = await self.handle.message(body)
        if not jsep or jsep.get("type") != "offer":
            raise JanusError(0, "subscribe returned no offer")
        return str(jsep["sdp"]), data

    async def start(self, answer_sdp: str) -> None:
        await self.handle.message({"request": "start"}, {"type": "answer", "sdp": answer_sdp})

    async def update(self, add: Sequence[str] = (), remove: Sequence[str] = ()) -> tuple[str | None, dict]:
        """Add or drop feeds on the same PeerConnection; returns Janus's new offer SDP (when one is needed)."""
        body: dict[str, Any] = {"request": "update"}
        if add:
            body["subscribe"] = [{"feed": feed} for feed in add]
        if remove:
            body["unsubscribe"] = [{"feed": feed} for feed in remove]
        data, jsep = await self.handle.message(body)
        return (str(jsep["sdp"]) if jsep else None), data

    async def configure_streams(self, streams: list[dict]) -> None:
        """Per subscribed stream, in one request: ``{"mid", "send": False}`` pauses forwarding it,
        ``{"mid", "send": True, "substream": 0..2}`` forwards that simulcast layer (0 low .. 2 high)."""
        await self.handle.message({"request": "configure", "streams": streams})

    async def leave(self) -> None:
        await self.handle.message({"request": "leave"})
