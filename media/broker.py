"""The server-side SFU broker: our server is Janus's only API client (docs/media.md).

Two layers, both asyncio and process-local:

- ``Broker`` (one per process and event loop, ``get_broker()``): one ``JanusClient`` and one
  control session per Janus node, the VideoRoom admin handle on it, and the room lifecycle at
  Janus (create, destroy, kick, moderate). Room ids, secrets and the admin key stay here.
- ``MemberLink`` (one per member connection in an SFU session): the member's own Janus session
  with a publisher handle and one multistream subscriber handle; a one-time token added to the
  room's allowed list before the publisher joins; Janus events turned into ``Output`` values.

Nothing here knows about sockets or our protocol (media never imports signaling): the consumer
(signaling.handlers.sfu) passes validated fields in and turns the outputs into frames. Every
Janus request is built here, from those fields; nothing a client sent is relayed to Janus as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from websockets.exceptions import WebSocketException

from media import layers
from media.janus import (
    VIDEOROOM_NO_SUCH_FEED,
    VIDEOROOM_NO_SUCH_ROOM,
    VIDEOROOM_ROOM_EXISTS,
    JanusClient,
    JanusClosed,
    JanusError,
    JanusEvent,
    JanusSession,
    Publisher,
    RoomSpec,
    Subscriber,
    VideoRoomAdmin,
)
from media.sfu import RoomInfo

log = logging.getLogger(__name__)

# What a Janus call raises when the node is unreachable, slow or not Janus (as opposed to refusing
# a request): a refused connection, a timeout, a WebSocket handshake that fails.
UNREACHABLE = (JanusClosed, TimeoutError, OSError, WebSocketException)

VIDEOROOM_ID_EXISTS = 436  # a publisher with this id is already in the room (an older connection)

# Stable codes the consumer turns into error frames.
UNAVAILABLE = "sfu.unavailable"  # Janus unreachable or not answering
REJECTED = "sfu.rejected"  # Janus refused the SDP or candidate
NOT_PUBLISHING = "sfu.not_negotiating"  # an answer or candidate with nothing to apply it to
FEED_NOT_FOUND = "sfu.feed_not_found"  # a subscription to a member who does not publish in this session
TOO_MANY_CANDIDATES = "sfu.too_many_candidates"
ROOM_GONE = "sfu.session_ended"

PUBLISHER = "publisher"
SUBSCRIBER = "subscriber"
MAX_CANDIDATES_PER_HANDLE = 64
SUBSCRIBE_RETRIES = 5  # a feed announced before its PeerConnection is up answers 428 for a moment
SUBSTREAM = {layers.LOW: 0, layers.HIGH: 2}  # Janus picks the nearest layer the publisher really sends
LAYERS_DUE = "layers.due"  # our own event kind (never from Janus): re-fit the layers now


class BrokerError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _refused(exc: Exception) -> BrokerError:
    return BrokerError(UNAVAILABLE if isinstance(exc, UNREACHABLE) else REJECTED)


# --- the process-wide part ---------------------------------------------------------------------


@dataclass
class _Node:
    client: JanusClient
    control: JanusSession
    admin: VideoRoomAdmin


class Broker:
    """Janus nodes of this process: connections opened lazily, reopened after Janus restarts."""

    def __init__(self, api_secret: str, admin_key: str) -> None:
        self.api_secret = api_secret
        self.admin_key = admin_key
        self._nodes: dict[str, _Node] = {}
        self._lock = asyncio.Lock()
        self._opened: set[tuple[str, str]] = set()  # (node, room) this process knows exist at Janus
        self.failures: dict[str, int] = {}  # health checks failed in a row, per node (this process's view)
        self._trouble = asyncio.Event()  # a node's socket closed: check the nodes now

    async def node(self, url: str) -> _Node:
        async with self._lock:
            node = self._nodes.get(url)
            if node is not None and not node.client.closed.is_set() and not node.control.timed_out.is_set():
                return node
            if node is not None:
                self._opened = {key for key in self._opened if key[0] != url}  # Janus may have restarted
                with contextlib.suppress(Exception):
                    await node.client.close()
            client = await JanusClient(url, self.api_secret).connect()
            client.on_close = self._trouble.set
            control = await client.create_session()
            node = _Node(client, control, await VideoRoomAdmin.open(control, self.admin_key))
            self._nodes[url] = node
            return node

    async def healthy(self, url: str, timeout: float) -> bool:
        """One health check: the node's socket opens (again) and Janus answers ``info`` in time."""
        try:
            node = await asyncio.wait_for(self.node(url), timeout)
            await asyncio.wait_for(node.client.info(), timeout)
        except (JanusError, *UNREACHABLE):
            return False
        return True

    async def check(self, url: str, timeout: float, failures_to_down: int) -> bool | None:
        """A health check with this process's memory: False once ``failures_to_down`` checks in a
        row failed, True when it passed, None while the verdict is still out."""
        if await self.healthy(url, timeout):
            self.failures[url] = 0
            return True
        self.failures[url] = self.failures.get(url, 0) + 1
        return False if self.failures[url] >= failures_to_down else None

    def suspect(self) -> None:
        """A request to a node failed as unreachable: the health loop checks at once."""
        self._trouble.set()

    async def trouble(self, timeout: float) -> None:
        """Wait until a node's socket closes or ``timeout`` passes (the health loop's pace)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._trouble.wait(), timeout)
        self._trouble.clear()

    async def ensure_room(self, info: RoomInfo) -> bool:
        """Create the session's room at Janus unless it exists (idempotent across processes).

        True when this call created it."""
        if (info.node, info.room) in self._opened:
            return False
        node = await self.node(info.node)
        spec = RoomSpec(room=info.room, secret=info.secret, publishers=info.publishers, audio_active_packets=25)
        created = True
        try:
            await node.admin.create_room(spec)
        except JanusError as exc:
            if exc.code != VIDEOROOM_ROOM_EXISTS:
                raise
            created = False  # another process (or an earlier call) made it
        self._opened.add((info.node, info.room))
        return created

    async def destroy_room(self, info: RoomInfo) -> None:
        self._opened.discard((info.node, info.room))
        node = await self.node(info.node)
        try:
            await node.admin.destroy_room(info.room, info.secret)
        except JanusError as exc:
            if exc.code != VIDEOROOM_NO_SUCH_ROOM:
                raise

    async def allow(self, info: RoomInfo, token: str) -> None:
        await (await self.node(info.node)).admin.allow(info.room, info.secret, [token])

    async def disallow(self, info: RoomInfo, token: str) -> None:
        with contextlib.suppress(JanusError):  # the room may be gone already
            await (await self.node(info.node)).admin.disallow(info.room, info.secret, [token])

    async def kick(self, info: RoomInfo, member_id: str) -> None:
        """Cut a member off at Janus (their streams stop being forwarded at once)."""
        try:
            await (await self.node(info.node)).admin.kick(info.room, info.secret, member_id)
        except JanusError as exc:
            if exc.code not in (VIDEOROOM_NO_SUCH_FEED, VIDEOROOM_NO_SUCH_ROOM):
                raise

    async def moderate(self, info: RoomInfo, member_id: str, mid: str, mute: bool) -> None:
        await (await self.node(info.node)).admin.moderate(info.room, info.secret, member_id, mid, mute)

    async def close(self) -> None:
        for node in self._nodes.values():
            with contextlib.suppress(Exception):
                await node.client.close()
        self._nodes.clear()


_brokers: dict[int, tuple[asyncio.AbstractEventLoop, Broker]] = {}


def get_broker() -> Broker:
    """This event loop's broker (a process runs one loop under daphne; tests may run several)."""
    loop = asyncio.get_running_loop()
    entry = _brokers.get(id(loop))
    if entry is None or entry[0] is not loop:
        entry = (loop, Broker(settings.JANUS_API_SECRET, settings.JANUS_ADMIN_KEY))
        _brokers[id(loop)] = entry
    return entry[1]


# --- one member connection -----------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    mid: str
    member: str
    kind: str  # "audio" or "video"


@dataclass(frozen=True)
class Offer:
    """A subscription offer for the client to answer (``sfu.start``)."""

    sdp: str
    streams: tuple[Stream, ...]

    @property
    def feeds(self) -> list[str]:
        return sorted({s.member for s in self.streams})


@dataclass(frozen=True)
class Talking:
    member: str
    talking: bool


@dataclass(frozen=True)
class LinkState:
    """Janus reports trouble on one of this member's PeerConnections."""

    handle: str  # PUBLISHER or SUBSCRIBER
    state: str  # "slowlink", "hangup" or "down" (Janus dropped the member's session)
    uplink: bool | None = None


Output = Offer | Talking | LinkState


def _mids(sdp: str) -> dict[str, list[str]]:
    """The mids of an SDP per media kind (``m=audio`` / ``m=video`` sections)."""
    mids: dict[str, list[str]] = {"audio": [], "video": []}
    kind = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
        elif line.startswith("a=mid:") and kind in mids:
            mids[kind].append(line[6:].strip())
    return mids


_FEED = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _feed(value) -> str | None:
    return value if isinstance(value, str) and _FEED.match(value) else None


@dataclass
class _Subscription:
    wanted: set[str] | None = None  # None: every feed
    active: bool = False  # the client asked to subscribe
    subscriber: Subscriber | None = None
    subscribed: set[str] = field(default_factory=set)
    negotiating: bool = False  # an offer is out, its answer (start) not yet in
    streams: tuple[Stream, ...] = ()


class MemberLink:
    """One member connection's presence at Janus. Not thread-safe: the consumer's loop owns it.

    ``notify`` is called from Janus's reader with ``(handle name, JanusEvent)``; the consumer
    queues it and later calls ``on_event`` from its own loop, which returns outputs to send.
    """

    def __init__(
        self, broker: Broker, info: RoomInfo, member_id: str, notify: Callable[[str, JanusEvent], None]
    ) -> None:
        self.broker = broker
        self.info = info
        self.member_id = member_id
        self._notify = notify
        self.session: JanusSession | None = None
        self.publisher: Publisher | None = None
        self.private_id: int | None = None
        self.token: str | None = None
        self.feeds: set[str] = set()  # members publishing in the room, self excluded
        self.published_mids: dict[str, list[str]] = {"audio": [], "video": []}
        self.candidates: dict[str, int] = {PUBLISHER: 0, SUBSCRIBER: 0}
        self.sub = _Subscription()
        self.closed = False
        self.moderation: tuple[bool, bool] = (False, False)  # (audio blocked, video blocked) at Janus
        # Simulcast (media.layers): the layout's wishes, the budget, what each video mid forwards.
        self.wanted_layers: dict[str, str] = {}
        self.chosen_layers: dict[str, str] = {}
        self.budget = layers.Budget()
        self.forwarding: dict[str, tuple[str, str]] = {}  # mid -> (member, quality) configured at Janus

    # --- opening ---

    async def open(self) -> None:
        """Join the room as a publisher (without media yet): the subscription needs its private id."""
        if self.session is not None:
            return
        try:
            await self.broker.ensure_room(self.info)
            node = await self.broker.node(self.info.node)
            self.token = secrets.token_urlsafe(24)
            await self.broker.allow(self.info, self.token)
            self.session = await node.client.create_session()
            self.publisher = await Publisher.open(self.session)
            self.publisher.handle.add_listener(lambda event: self._notify(PUBLISHER, event))
            try:
                joined = await self.publisher.join(self.info.room, self.member_id, self.token)
            except JanusError as exc:
                if exc.code != VIDEOROOM_ID_EXISTS:
                    raise
                # An older connection of this member is still in the room: the newest one wins.
                await self.broker.kick(self.info, self.member_id)
                joined = await self.publisher.join(self.info.room, self.member_id, self.token)
        except (JanusError, *UNREACHABLE) as exc:
            log.warning("sfu join failed: %s", type(exc).__name__)
            await self.close()
            self.closed = False  # a later request may try again
            raise _refused(exc) from None
        self.private_id = joined.private_id
        self.feeds = {f for f in (_feed(p.get("id")) for p in joined.publishers) if f and f != self.member_id}

    # --- publishing ---

    async def publish(self, offer_sdp: str) -> str:
        """The client's offer in, Janus's answer out. A new offer (ICE restart) republishes."""
        await self.open()
        self.candidates[PUBLISHER] = 0
        try:
            answer = await self.publisher.configure(offer_sdp)
        except (JanusError, *UNREACHABLE) as exc:
            raise _refused(exc) from None
        self.published_mids = _mids(answer)
        self.moderation = (False, False)
        return answer

    async def enforce(self, audio_blocked: bool, video_blocked: bool) -> None:
        """Hard mute / camera block at Janus: it stops forwarding, whatever the client sends."""
        if self.publisher is None or self.closed:
            return
        wanted = (audio_blocked, video_blocked)
        for kind, blocked, was in (
            ("audio", audio_blocked, self.moderation[0]),
            ("video", video_blocked, self.moderation[1]),
        ):
            if blocked == was:
                continue
            for mid in self.published_mids[kind]:
                await self.broker.moderate(self.info, self.member_id, mid, blocked)
        self.moderation = wanted

    # --- subscribing ---

    async def subscribe(self, wanted: list[str] | None) -> Offer | None:
        """Subscribe to ``wanted`` feeds (None: all). Returns the offer, or None when nobody publishes
        yet (the offer comes as an output when someone does)."""
        await self.open()
        if wanted is not None:
            unknown = set(wanted) - self.feeds
            if unknown:
                raise BrokerError(FEED_NOT_FOUND)
        self.sub.wanted = None if wanted is None else set(wanted)
        self.sub.active = True
        return await self._sync()

    async def start(self, answer_sdp: str) -> list[Output]:
        """The client's answer to the latest subscription offer."""
        if self.sub.subscriber is None or not self.sub.negotiating:
            raise BrokerError(NOT_PUBLISHING)
        try:
            await self.sub.subscriber.start(answer_sdp)
        except (JanusError, *UNREACHABLE) as exc:
            raise _refused(exc) from None
        self.sub.negotiating = False
        await self._apply_layers()  # a new member's picture (or a reused mid) gets its layer at once
        offer = await self._sync()  # feeds that came or went while the client answered
        return [offer] if offer else []

    async def _sync(self) -> Offer | None:
        sub = self.sub
        if not sub.active or sub.negotiating or self.closed:
            return None
        target = self.feeds if sub.wanted is None else self.feeds & sub.wanted
        try:
            if sub.subscriber is None:
                if not target:
                    return None
                sdp, data = await self._first_subscription(sorted(target))
            else:
                add, remove = sorted(target - sub.subscribed), sorted(sub.subscribed - target)
                if not add and not remove:
                    return None
                sdp, data = await sub.subscriber.update(add=add, remove=remove)
        except (JanusError, *UNREACHABLE) as exc:
            log.warning("sfu subscription failed: %s", type(exc).__name__)
            raise _refused(exc) from None
        sub.subscribed = set(target)
        return self._offer(sdp, data)

    async def _first_subscription(self, feeds: list[str]) -> tuple[str, dict]:
        subscriber = await Subscriber.open(self.session)
        subscriber.handle.add_listener(lambda event: self._notify(SUBSCRIBER, event))
        for attempt in range(SUBSCRIBE_RETRIES):
            try:
                sdp, data = await subscriber.subscribe(self.info.room, feeds, self.private_id, token=self.token)
                self.sub.subscriber = subscriber
                return sdp, data
            except JanusError as exc:
                if exc.code != VIDEOROOM_NO_SUCH_FEED or attempt == SUBSCRIBE_RETRIES - 1:
                    with contextlib.suppress(JanusError, *UNREACHABLE):
                        await subscriber.handle.detach()
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _offer(self, sdp: str | None, data: dict) -> Offer | None:
        streams = data.get("streams")
        if isinstance(streams, list):
            self.sub.streams = tuple(
                Stream(str(s["mid"]), member, s["type"])
                for s in streams
                if isinstance(s, dict)
                and s.get("active", True)
                and s.get("type") in ("audio", "video")
                and (member := _feed(s.get("feed_id")))
                and s.get("mid") is not None
            )
        if sdp is None:
            return None
        self.sub.negotiating = True
        self.candidates[SUBSCRIBER] = 0
        return Offer(sdp, self.sub.streams)

    # --- simulcast and bandwidth ---

    async def choose_layers(self, wanted: dict[str, str], downlink_kbps: int | None = None) -> dict[str, str]:
        """The subscriber's layout wishes (member -> off/low/high, most important first) and its own
        downlink estimate (None: no limit seen). Returns what is forwarded now, after fitting."""
        self.wanted_layers = dict(wanted)
        self.budget.client_kbps = downlink_kbps
        return await self._apply_layers()

    async def _apply_layers(self) -> dict[str, str]:
        """Configure at Janus what ``layers.fit`` decides, only for streams whose choice changed.
        Members this subscription does not carry (gone, or not publishing yet) are skipped."""
        subscriber = self.sub.subscriber
        if subscriber is None or not self.wanted_layers:
            return {}
        chosen = layers.fit(self.wanted_layers, self.budget.limit(time.monotonic()))
        changes = []
        for stream in self.sub.streams:
            quality = chosen.get(stream.member)
            if stream.kind != "video" or quality is None or self.forwarding.get(stream.mid) == (stream.member, quality):
                continue
            if quality == layers.OFF:
                changes.append({"mid": stream.mid, "send": False})
            else:
                changes.append({"mid": stream.mid, "send": True, "substream": SUBSTREAM[quality]})
        if changes:
            try:
                await subscriber.configure_streams(changes)
            except (JanusError, *UNREACHABLE) as exc:
                raise _refused(exc) from None
            owner = {s.mid: s.member for s in self.sub.streams}
            for change in changes:
                self.forwarding[change["mid"]] = (owner[change["mid"]], chosen[owner[change["mid"]]])
        self.chosen_layers = chosen
        return chosen

    def _downlink_trouble(self) -> None:
        """Janus loses packets on its way to this subscriber: cap the budget for a while, and look
        again when the cap runs out (a LAYERS_DUE event through the connection's own queue)."""
        self.budget.slowlink(self.chosen_layers or self.wanted_layers, time.monotonic())
        loop = asyncio.get_running_loop()
        loop.call_later(layers.SLOWLINK_SECONDS + 0.1, self._notify, SUBSCRIBER, JanusEvent(LAYERS_DUE, None))

    # --- trickle ---

    async def trickle(self, handle: str, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        """One ICE candidate of the client's PeerConnection ``handle``; empty: end of candidates."""
        target = self.publisher.handle if handle == PUBLISHER and self.publisher else None
        if handle == SUBSCRIBER and self.sub.subscriber is not None:
            target = self.sub.subscriber.handle
        if target is None:
            raise BrokerError(NOT_PUBLISHING)
        if self.candidates[handle] >= MAX_CANDIDATES_PER_HANDLE:
            raise BrokerError(TOO_MANY_CANDIDATES)
        self.candidates[handle] += 1
        built: dict | None = None
        if candidate:
            built = {"candidate": candidate}
            if sdp_mid is not None:
                built["sdpMid"] = sdp_mid
            if sdp_mline_index is not None:
                built["sdpMLineIndex"] = sdp_mline_index
        try:
            await target.trickle(built)
        except (JanusError, *UNREACHABLE) as exc:
            raise _refused(exc) from None

    # --- Janus events ---

    async def on_event(self, handle: str, event: JanusEvent) -> list[Output]:
        """A Janus event for one of this member's handles -> what the member should be told."""
        if self.closed:
            return []
        data = event.data
        outputs: list[Output] = []
        if handle == PUBLISHER:
            if event.kind == "publishers":
                for entry in data.get("publishers", []):
                    feed = _feed(entry.get("id")) if isinstance(entry, dict) else None
                    if feed and feed != self.member_id:
                        self.feeds.add(feed)
            elif event.kind in ("unpublished", "leaving", "kicked"):
                if event.kind == "kicked" and data.get("leaving") == "ok":
                    return [LinkState(PUBLISHER, "down")]  # we were kicked (a newer tab, a removal)
                gone = _feed(data.get("unpublished") or data.get("leaving") or data.get("kicked"))
                if gone:
                    self.feeds.discard(gone)
                    # Janus drops a departed feed's streams from subscriptions by itself.
                    self.sub.subscribed.discard(gone)
            elif event.kind in ("talking", "stopped-talking"):
                member = _feed(data.get("id"))
                if member:
                    return [Talking(member, event.kind == "talking")]
                return []
        if event.kind == LAYERS_DUE:
            await self._apply_layers()  # a slowlink cap ran out: back to what the layout wants
            return []
        if event.kind == "slowlink":
            if handle == SUBSCRIBER and not data.get("uplink"):
                self._downlink_trouble()
                await self._apply_layers()
            return [LinkState(handle, "slowlink", bool(data.get("uplink")))]
        if event.kind == "hangup":
            return [LinkState(handle, "hangup")]
        if event.kind in ("timeout", "detached") and handle == PUBLISHER:
            return [LinkState(PUBLISHER, "down")]
        if handle == SUBSCRIBER and event.jsep and event.jsep.get("type") == "offer":
            # Janus renegotiates by itself (a feed left): pass its offer on.
            self.sub.negotiating = False
            offer = self._offer(str(event.jsep.get("sdp", "")), data)
            return [offer] if offer else []
        try:
            offer = await self._sync()
        except BrokerError as exc:
            log.warning("sfu subscription update failed: %s", exc.code)
            return outputs
        if offer is not None:
            outputs.append(offer)
        return outputs

    # --- closing ---

    async def close(self, *, removed: bool = False) -> None:
        """Leave Janus: the token is revoked, the member's Janus session (and PeerConnections) ends.

        ``removed``: kicked too, so Janus stops forwarding at once even if the session lingers."""
        if self.closed:
            return
        self.closed = True
        try:
            if removed:
                await self.broker.kick(self.info, self.member_id)
            if self.token is not None:
                await self.broker.disallow(self.info, self.token)
        except (JanusError, *UNREACHABLE):
            log.warning("sfu member cleanup at Janus incomplete (the session times out there)")
        if self.session is not None:
            with contextlib.suppress(JanusError, *UNREACHABLE):
                await self.session.destroy()
        self.session = None
        self.publisher = None
        self.sub = _Subscription()
