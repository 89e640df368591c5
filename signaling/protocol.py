"""The session WebSocket protocol, version 1: every client and server message, in one place.

Clients speak JSON text frames with an envelope::

    {"v": 1, "type": "chat.send", "id": "c-42", "to": null, "data": {"text": "hi"}}

- ``v``     protocol version (the WebSocket subprotocol ``telehealth.v1`` names it too)
- ``type``  one of ``CLIENT_TYPES``; anything else is refused with ``protocol.unknown_type``
- ``id``    the client's message id: echoed as ``re`` in replies and errors, and the
            idempotency key of chat sends
- ``to``    a member id (opaque) for messages addressed to one peer
- ``data``  the type's payload, validated by the model below (unknown fields refused)

The server answers with frames it builds itself, field by field, from validated
values (``SERVER_MESSAGES``)::

    {"v": 1, "type": "chat.message", "ts": "2026-03-02T23:05:00.123Z", "from": "m-id", "re": null,
     "message": {...}}

- ``ts``    the server's clock (UTC, milliseconds): clients never decide time
- ``from``  the member id of whoever caused the frame, null for the server itself
- ``re``    the client message id this frame answers, null for pushed frames

A client's ``type`` is only ever a key into ``CLIENT_MESSAGES``; it never
becomes a method name or a channel-layer event type.

docs/protocol.md and docs/protocol.schema.json are generated from this module
(``python -m signaling.protocol``) and a test fails when they drift.

Connecting
----------
Open ``wss://<host>/ws/sessions/<session uuid>/`` with the subprotocol
``telehealth.v1``, from a page of the same origin, logged in (the Django session
cookie). A handshake is refused before it is accepted (HTTP 403, and an audit
row) when the subprotocol is missing, the person is not logged in, not on the
session's roster, removed or denied, the session is over, the waiting room is not
open yet (the join page says when it opens) or the room is locked. The first frame
is always ``welcome``.

The waiting room
----------------
A participant usually lands in the waiting room (``welcome.state`` = ``waiting``):
they get their own waiting state (``waiting``: when the room opens by itself, and
the therapist's latest message) and nothing of the room: no roster, chat or media.
Under the "auto then knock" policy the room lets participants in by itself from
the session's start until the late-join limit; otherwise a therapist admits
(``admitted`` arrives with the room) or denies (``denied``, then close 4403).
Therapists and clinic admins (observers) enter the room directly; therapists see
the waiting list live (``waiting.list``).

In the room
-----------
``welcome.room`` (or ``admitted.room``) carries the roster (display names and
opaque member ids only), the spotlight, the lock, the raised hands, the ICE servers
(STUN, plus with TURN configured a TURN credential minted for you alone, valid until the
session's end plus a margin; every room view brings a fresh one, so use the latest for
an ICE restart) and ``chat_seq``, the latest chat sequence number: ask ``chat.history`` with
``after_seq`` 0 for the chat so far. Roster changes arrive as ``member.joined``,
``member.updated`` and ``member.left``; apply them by member id (a frame may repeat
what a snapshot already showed).

Chat
----
``chat.send`` is stored before anyone receives it and numbered per session
(``seq``). The sender's own copy answers its ``id`` (``re``); sending the same
``id`` again returns the stored message and delivers nothing twice, so a client
may resend after any failure. A participant may write privately to the session's
therapists (``to_therapists``); a therapist answers into that participant's thread
(``thread``). Text is plain text: render it as text, never as markup. Deleted
messages keep their number with empty text.

Reconnecting
------------
The channel layer is at-most-once; the database is the record. A dropped socket
keeps its seat for a grace period (``SEAT_GRACE_SECONDS``, 30 s by default): peers
see ``member.updated`` with ``presence`` = ``reconnecting``, then ``connected``
again, never a leave and a join. The client reconnects (with jittered backoff),
gets a new ``welcome``, then sends ``resume`` with the previous ``resume_token`` and
the last chat ``seq`` it saw, and receives ``resumed``: the roster now and exactly
the chat it missed. A second tab or device takes the seat over: the older
connection is closed with 4409 and must not reconnect by itself.

Media signaling (peer to peer)
------------------------------
``signal.description`` and ``signal.candidate`` go to one member (``to``), both of
you admitted to the same session. The recipient gets the fields rebuilt by the
server, ``from`` the sender, and ``polite``: its "perfect negotiation" role towards
that sender (the two sides of a pair always get opposite roles). A new description
to a peer (ICE restart) opens a new budget of candidates for it. ``conn`` in a
roster entry changes when that member's connection is new: renegotiate with it.

Media through the SFU (group rooms)
-----------------------------------
``room.media`` says how this session's media flows. ``mode`` = ``p2p``: the
``signal.*`` messages above, one connection per peer; ``mesh_limit`` is the size a
mesh carries well and ``crowded`` is true when the room is past it (a notice for
the therapist; apply ``member.joined``/``member.left`` to keep it current).
``mode`` = ``sfu``: every member sends and receives through the server's SFU
(Janus), whose API only the server talks to; the client never sees its ids,
secrets or tokens:

1. ``sfu.publish`` with an offer for what you send; the answer comes back as
   ``sfu.answer`` (``re`` = your message id). Send a new offer to republish
   (ICE restart, a track added).
2. ``sfu.subscribe`` (``feeds``: member ids, or null for everyone who publishes):
   ``sfu.offer`` comes back with the streams, one ``mid`` per member and kind, over
   one connection; answer it with ``sfu.start``. When nobody publishes yet the
   answer is ``ack`` and the offer follows when someone does.
3. When members start or stop publishing, the server pushes a new ``sfu.offer``
   (``re`` null) for the same connection: answer each with ``sfu.start``.
4. ``sfu.trickle`` sends one of your ICE candidates for the ``publisher`` or the
   ``subscriber`` connection (an empty ``candidate``: end of candidates). The
   server's candidates are in its SDP.
5. Publish video with simulcast (three encodings, low to high) and say with
   ``sfu.layers`` which picture you want of each member: ``low`` for thumbnails,
   ``high`` for the spotlight or the active speaker. Members not named keep
   their last choice (the highest at first); unknown members are ignored.

``sfu.talking`` says who is speaking (the active-speaker highlight); ``sfu.link``
reports trouble on one of your connections (``slowlink``: packets lost;
``hangup``: the SFU closed it, publish or subscribe again; ``down``: the SFU
dropped you, reconnect). A hard mute or camera block is enforced at the SFU too:
your audio or video is not forwarded to anyone until a therapist releases it.
``sfu.*`` in a peer-to-peer session is refused with ``sfu.not_sfu``.

Moderation
----------
``mod.*`` commands and ``chat.delete`` are for the session's therapists; anyone else
gets ``perm.denied`` and the attempt is audited. Each command answers ``ack`` and its
effects arrive as their own frames (``mod.muted`` to the person muted,
``member.updated`` to everyone, ...). A hard mute or camera block makes the server
refuse ``media.state`` turning them on until a therapist releases it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_serializer

PROTOCOL_VERSION = 1
SUBPROTOCOL = f"telehealth.v{PROTOCOL_VERSION}"

# Caps far below the server's 1 MiB frame limit: a signaling frame carries one SDP at most.
MAX_FRAME_BYTES = 64 * 1024
MAX_SDP_BYTES = 32 * 1024
MAX_CANDIDATE_BYTES = 1024
MAX_CHAT_CHARS = 2000
MAX_WAITING_MESSAGE_CHARS = 500
MAX_DEPTH = 6  # nesting of objects and arrays in a client frame (the envelope and its data are 2)
# Trickled candidates one member may send another per negotiation (a new description resets it).
MAX_CANDIDATES_PER_PEER = 64
# Members one SFU subscription may name (a room's publishers are far fewer).
MAX_SFU_FEEDS = 64

ClientId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MemberId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Empty(_Payload):
    """No payload."""


class Resume(_Payload):
    """Sent first after a reconnect: the token from ``welcome`` and the last chat sequence seen."""

    resume_token: Annotated[str, StringConstraints(min_length=16, max_length=128)]
    last_seq: int = Field(ge=0, le=2**31)


class ChatSend(_Payload):
    """A chat message to the room, or privately to the session's therapists.

    A participant sets ``to_therapists`` for a private message; a therapist answers
    into that participant's private thread with ``thread`` (their member id).
    Text is plain text: clients render it as text, never as markup.
    """

    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHAT_CHARS)]
    to_therapists: bool = False
    thread: MemberId | None = None


class ChatDelete(_Payload):
    """A therapist deletes a message for everyone (by its sequence number)."""

    seq: int = Field(ge=1, le=2**31)


class ChatHistory(_Payload):
    """Ask for the messages after ``after_seq`` (the client's gap after a reconnect)."""

    after_seq: int = Field(ge=0, le=2**31)


class SessionDescription(_Payload):
    """A WebRTC offer or answer for the member named in ``to``."""

    kind: Literal["offer", "answer"]
    sdp: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_BYTES)]


class IceCandidate(_Payload):
    """One trickled ICE candidate; an empty ``candidate`` marks the end of gathering."""

    candidate: Annotated[str, StringConstraints(max_length=MAX_CANDIDATE_BYTES)]
    sdp_mid: Annotated[str, StringConstraints(max_length=32)] | None = None
    sdp_mline_index: int | None = Field(default=None, ge=0, le=64)


class SfuPublish(_Payload):
    """Publish (or republish) through the SFU: the offer for what you send."""

    sdp: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_BYTES)]


class SfuSubscribe(_Payload):
    """Receive these members' media through the SFU (null: everyone who publishes, now and later)."""

    feeds: list[MemberId] | None = Field(default=None, max_length=MAX_SFU_FEEDS)


class SfuStart(_Payload):
    """Your answer to the latest ``sfu.offer``."""

    sdp: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_BYTES)]


class SfuLayers(_Payload):
    """Simulcast: which picture to receive of each member, from your layout, most important first
    (``high`` for the spotlight or the active speaker, ``low`` for a thumbnail, ``off`` for none:
    audio-only mode or a tile off screen), and what your downlink carries when you can tell
    (``downlink_kbps``). The server lowers the layout's wishes to fit that, and on its own when
    the SFU loses packets on the way to you."""

    layers: dict[MemberId, Literal["off", "low", "high"]] = Field(max_length=MAX_SFU_FEEDS)
    downlink_kbps: int | None = Field(default=None, ge=0, le=1_000_000)


class SfuTrickle(_Payload):
    """One ICE candidate of your ``publisher`` or ``subscriber`` connection; empty: end of candidates."""

    handle: Literal["publisher", "subscriber"]
    candidate: Annotated[str, StringConstraints(max_length=MAX_CANDIDATE_BYTES)]
    sdp_mid: Annotated[str, StringConstraints(max_length=32)] | None = None
    sdp_mline_index: int | None = Field(default=None, ge=0, le=64)


class MediaState(_Payload):
    """The sender's own microphone and camera state, as its UI shows it."""

    mic: bool
    camera: bool


class Target(_Payload):
    """A moderator command aimed at one member (or one person in the waiting room)."""

    member: MemberId


class Deny(_Payload):
    """Turn someone in the waiting room away, with an optional message shown to them."""

    member: MemberId
    message: Annotated[str, StringConstraints(max_length=MAX_WAITING_MESSAGE_CHARS)] = ""


class Mute(_Payload):
    """Mute one participant; ``hard``: they cannot unmute until released."""

    member: MemberId
    hard: bool = False


class CameraOff(_Payload):
    """Turn one participant's camera off; ``hard``: they cannot turn it on until released."""

    member: MemberId
    hard: bool = False


class Spotlight(_Payload):
    """``member`` null clears the spotlight."""

    member: MemberId | None


class WaitingRoomMessage(_Payload):
    """A therapist's message to everyone in the waiting room, or to one person there (``member``)."""

    text: Annotated[str, StringConstraints(max_length=MAX_WAITING_MESSAGE_CHARS)]
    member: MemberId | None = None


# type -> (payload model, needs a ``to`` target, moderator only)
CLIENT_MESSAGES: dict[str, tuple[type[_Payload], bool, bool]] = {
    "ping": (Empty, False, False),
    "resume": (Resume, False, False),
    "chat.send": (ChatSend, False, False),
    "chat.history": (ChatHistory, False, False),
    "chat.delete": (ChatDelete, False, True),
    "signal.description": (SessionDescription, True, False),
    "signal.candidate": (IceCandidate, True, False),
    "sfu.publish": (SfuPublish, False, False),
    "sfu.subscribe": (SfuSubscribe, False, False),
    "sfu.start": (SfuStart, False, False),
    "sfu.trickle": (SfuTrickle, False, False),
    "sfu.layers": (SfuLayers, False, False),
    "media.state": (MediaState, False, False),
    "hand.raise": (Empty, False, False),
    "hand.lower": (Empty, False, False),
    "session.leave": (Empty, False, False),
    "mod.admit": (Target, False, True),
    "mod.admit_all": (Empty, False, True),
    "mod.deny": (Deny, False, True),
    "mod.mute": (Mute, False, True),
    "mod.mute_all": (Empty, False, True),
    "mod.release_mute": (Target, False, True),
    "mod.ask_unmute": (Target, False, True),
    "mod.camera_off": (CameraOff, False, True),
    "mod.release_camera": (Target, False, True),
    "mod.remove": (Target, False, True),
    "mod.lock": (Empty, False, True),
    "mod.unlock": (Empty, False, True),
    "mod.end": (Empty, False, True),
    "mod.spotlight": (Spotlight, False, True),
    "mod.lower_hand": (Target, False, True),
    "mod.lower_all_hands": (Empty, False, True),
    "mod.waiting_message": (WaitingRoomMessage, False, True),
}
CLIENT_TYPES = frozenset(CLIENT_MESSAGES)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]
    type: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    id: ClientId
    to: MemberId | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class ProtocolError(Exception):
    """A client frame we refuse. ``code`` is stable (docs/protocol.md lists them)."""

    def __init__(self, code: str, detail: str = "", re: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.re = re


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A parsed, validated client message (its fields come from the models above; a plain dataclass,
    since validating them again as a model cost a few microseconds on every frame)."""

    type: str
    id: str
    to: str | None
    data: _Payload
    moderator_only: bool


def _max_depth(value: Any, depth: int = 0) -> int:
    if depth > 16:
        return depth
    if isinstance(value, dict):
        return max([_max_depth(v, depth + 1) for v in value.values()] or [depth + 1])
    if isinstance(value, list):
        return max([_max_depth(v, depth + 1) for v in value] or [depth + 1])
    return depth


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def parse_client_frame(text: str) -> ClientMessage:
    """Text frame -> validated message, or ProtocolError with a stable code.

    Codes: ``protocol.bad_json``, ``protocol.too_deep``, ``protocol.bad_envelope``,
    ``protocol.bad_version``, ``protocol.unknown_type``, ``protocol.bad_payload``,
    ``protocol.too_large`` (a text over its own cap), ``protocol.target_required``,
    ``protocol.target_unexpected``.
    """
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("protocol.bad_json", "The frame is not valid JSON.") from None
    if not isinstance(raw, dict):
        raise ProtocolError("protocol.bad_envelope", "The frame must be a JSON object.")
    client_id = raw.get("id") if isinstance(raw.get("id"), str) and len(raw.get("id")) <= 64 else None
    # A frame with at most MAX_DEPTH brackets cannot be nested deeper (most frames): no walk needed.
    if text.count("{") + text.count("[") > MAX_DEPTH and _max_depth(raw) > MAX_DEPTH:
        raise ProtocolError("protocol.too_deep", "The frame is nested too deeply.", client_id)
    # PostgreSQL's text cannot hold U+0000: refused here, as bad input of this frame alone, instead
    # of failing the database call that stores it with other people's messages (a chat batch).
    if "\\u0000" in text and _has_nul(raw):
        raise ProtocolError("protocol.bad_payload", "Text may not contain the NUL character (U+0000).", client_id)
    if raw.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("protocol.bad_version", f"This server speaks version {PROTOCOL_VERSION}.", client_id)
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError("protocol.bad_envelope", _first_error(exc), client_id) from None
    spec = CLIENT_MESSAGES.get(envelope.type)
    if spec is None:
        raise ProtocolError("protocol.unknown_type", "Unknown message type.", envelope.id)
    model, needs_target, moderator_only = spec
    if needs_target and envelope.to is None:
        raise ProtocolError("protocol.target_required", "This message needs a 'to' member id.", envelope.id)
    if not needs_target and envelope.to is not None:
        raise ProtocolError("protocol.target_unexpected", "This message takes no 'to'.", envelope.id)
    try:
        payload = model.model_validate(envelope.data)
    except ValidationError as exc:
        if any(error["type"] == "string_too_long" for error in exc.errors(include_url=False, include_input=False)):
            # Chat, SDP and candidates have their own caps: over one, the contract says 1009.
            raise ProtocolError("protocol.too_large", _first_error(exc), envelope.id) from None
        raise ProtocolError("protocol.bad_payload", _first_error(exc), envelope.id) from None
    return ClientMessage(
        type=envelope.type, id=envelope.id, to=envelope.to, data=payload, moderator_only=moderator_only
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "frame"
    return f"{where}: {error.get('msg', 'invalid')}"


# --- server messages ---------------------------------------------------------------------------

Role = Literal["participant", "moderator", "observer"]
Presence = Literal["connected", "reconnecting"]
Timestamp = Annotated[str, Field(description="ISO 8601, UTC, milliseconds (the server's clock).")]


def timestamp(moment: datetime | None = None) -> str:
    """The wire form of an instant: ISO 8601 in UTC with milliseconds and a ``Z``."""
    if moment is None:
        moment = datetime.now(UTC)
    elif moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat() gives "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00"; sliced, it is the cheapest way to
    # milliseconds (several of these go into every chat message).
    text = moment.isoformat()
    return text[:23] + "Z" if moment.microsecond else text[:19] + ".000Z"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberInfo(_Out):
    """One admitted member as everyone in the room sees them: an opaque id and a display name only."""

    member: MemberId
    name: Annotated[str, StringConstraints(max_length=150)]
    role: Role
    presence: Presence = Field(description="reconnecting: the connection dropped, the seat is kept for a while.")
    mic: bool
    camera: bool
    hard_muted: bool
    camera_blocked: bool
    hand: Timestamp | None = Field(description="When the hand went up; null when it is down.")
    conn: int = Field(ge=0, description="Connection counter: a new value means new media negotiation.")


class WaitingEntry(_Out):
    """One person in the waiting room (therapists only)."""

    member: MemberId
    name: Annotated[str, StringConstraints(max_length=150)]
    since: Timestamp
    presence: Presence


class ChatEntry(_Out):
    """A stored chat message. ``thread`` is the participant's member id for a private thread."""

    seq: int = Field(ge=1)
    author: MemberId
    text: Annotated[str, StringConstraints(max_length=MAX_CHAT_CHARS)] = Field(
        description="Plain text (never markup); empty once deleted."
    )
    thread: MemberId | None
    at: Timestamp
    deleted: bool


class IceServer(_Out):
    """An RTCIceServer for the browser (username and credential only when set)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler):
        return {key: value for key, value in handler(self).items() if value is not None}


class MediaInfo(_Out):
    """How this session's media flows (see "Media through the SFU")."""

    mode: Literal["sfu", "p2p"]
    reason: str = Field(
        description="Why: media.group, media.one_to_one, media.forced_sfu, media.forced_p2p or media.no_sfu."
    )
    mesh_limit: int | None = Field(description="p2p: the people a mesh carries well; null for the SFU.")
    crowded: bool = Field(description="A mesh past mesh_limit when this was sent (a notice for therapists).")


class RoomState(_Out):
    """The room as an admitted member sees it."""

    roster: list[MemberInfo]
    spotlight: MemberId | None
    locked: bool
    chat_seq: int = Field(ge=0, description="The latest chat sequence number: ask chat.history for what you lack.")
    hands: list[MemberId] = Field(description="Raised hands, earliest first.")
    ice_servers: list[IceServer]
    media: MediaInfo


class WaitingState(_Out):
    """What a person in the waiting room is told, and nothing about the room."""

    opens_at: Timestamp | None = Field(description="When the room lets you in by itself; null: a therapist admits you.")
    message: Annotated[str, StringConstraints(max_length=MAX_WAITING_MESSAGE_CHARS)] = Field(
        description="The therapist's latest message to you (plain text)."
    )


class Limits(_Out):
    max_frame_bytes: int
    max_chat_chars: int
    max_sdp_bytes: int
    max_candidate_bytes: int
    max_candidates_per_peer: int


LIMITS = Limits(
    max_frame_bytes=MAX_FRAME_BYTES,
    max_chat_chars=MAX_CHAT_CHARS,
    max_sdp_bytes=MAX_SDP_BYTES,
    max_candidate_bytes=MAX_CANDIDATE_BYTES,
    max_candidates_per_peer=MAX_CANDIDATES_PER_PEER,
)


class ServerFrame(_Out):
    """The envelope of every server frame."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    v: Literal[1] = PROTOCOL_VERSION
    type: str
    ts: Timestamp
    from_: MemberId | None = Field(
        default=None, alias="from", description="Who caused this frame (member id); null: the server."
    )
    re: ClientId | None = Field(default=None, description="The client message id this frame answers.")


class Welcome(ServerFrame):
    """First frame on every connection. Admitted: ``room`` is set; waiting: ``waiting`` is, and nothing else.

    ``resume_token``: send it back in ``resume`` after a reconnect to get what you missed.
    """

    type: Literal["welcome"] = "welcome"
    member: MemberId
    role: Role
    state: Literal["admitted", "waiting"]
    resume_token: str
    limits: Limits
    room: RoomState | None
    waiting: WaitingState | None


class Waiting(ServerFrame):
    """Your waiting-room state changed (a therapist's message, the room locked or unlocked)."""

    type: Literal["waiting"] = "waiting"
    waiting: WaitingState


class WaitingList(ServerFrame):
    """Who is waiting, since when (therapists only; the whole list each time)."""

    type: Literal["waiting.list"] = "waiting.list"
    entries: list[WaitingEntry]


class Knock(ServerFrame):
    """Someone tried to enter while the room is locked (therapists only)."""

    type: Literal["knock"] = "knock"
    name: Annotated[str, StringConstraints(max_length=150)]


class Admitted(ServerFrame):
    """You were let in from the waiting room: the room as it is now."""

    type: Literal["admitted"] = "admitted"
    room: RoomState


class Denied(ServerFrame):
    """A therapist turned you away (the connection then closes with 4403)."""

    type: Literal["denied"] = "denied"
    message: Annotated[str, StringConstraints(max_length=MAX_WAITING_MESSAGE_CHARS)]


class Removed(ServerFrame):
    """A therapist removed you (the connection then closes with 4403; do not reconnect)."""

    type: Literal["removed"] = "removed"


class Ended(ServerFrame):
    """The session ended (the connection then closes with 4410)."""

    type: Literal["ended"] = "ended"


class MemberJoined(ServerFrame):
    """Someone entered the room (admitted, or back after the grace period ran out)."""

    type: Literal["member.joined"] = "member.joined"
    member: MemberInfo


class MemberUpdated(ServerFrame):
    """A member's state changed: presence (reconnecting/connected), media, hand, or a new connection."""

    type: Literal["member.updated"] = "member.updated"
    member: MemberInfo


class MemberLeft(ServerFrame):
    """Someone left the room: on purpose, removed, or their grace period ran out."""

    type: Literal["member.left"] = "member.left"
    member: MemberId


class Hands(ServerFrame):
    """The raised-hand queue, earliest first (therapists only)."""

    type: Literal["hands"] = "hands"
    queue: list[MemberId]


class ChatMessageFrame(ServerFrame):
    """A chat message, stored before it was sent. ``from`` is its author."""

    type: Literal["chat.message"] = "chat.message"
    message: ChatEntry


class ChatDeleted(ServerFrame):
    """A therapist deleted this message: show it as deleted."""

    type: Literal["chat.deleted"] = "chat.deleted"
    seq: int = Field(ge=1)


class ChatHistoryFrame(ServerFrame):
    """The messages after ``after_seq`` you may read; ``more``: ask again from the last one."""

    type: Literal["chat.history"] = "chat.history"
    after_seq: int = Field(ge=0)
    messages: list[ChatEntry]
    more: bool


class Resumed(ServerFrame):
    """Answer to ``resume``: the room now and exactly the chat after your ``last_seq``."""

    type: Literal["resumed"] = "resumed"
    room: RoomState
    chat: list[ChatEntry]
    more: bool


class SignalDescriptionFrame(ServerFrame):
    """A relayed offer or answer. ``polite``: your perfect-negotiation role towards ``from``."""

    type: Literal["signal.description"] = "signal.description"
    kind: Literal["offer", "answer"]
    sdp: Annotated[str, StringConstraints(max_length=MAX_SDP_BYTES)]
    polite: bool


class SignalCandidateFrame(ServerFrame):
    """A relayed ICE candidate (empty: end of candidates)."""

    type: Literal["signal.candidate"] = "signal.candidate"
    candidate: Annotated[str, StringConstraints(max_length=MAX_CANDIDATE_BYTES)]
    sdp_mid: Annotated[str, StringConstraints(max_length=32)] | None
    sdp_mline_index: int | None
    polite: bool


class SfuAnswer(ServerFrame):
    """The SFU's answer to your ``sfu.publish`` offer."""

    type: Literal["sfu.answer"] = "sfu.answer"
    sdp: Annotated[str, StringConstraints(max_length=4 * MAX_SDP_BYTES)]


class SfuStream(_Out):
    """One stream of a subscription: its ``mid`` in the offer, whose it is, audio or video."""

    mid: Annotated[str, StringConstraints(max_length=32)]
    member: MemberId
    kind: Literal["audio", "video"]


class SfuOffer(ServerFrame):
    """The SFU's offer for your subscription (answer it with ``sfu.start``); ``re`` null when pushed."""

    type: Literal["sfu.offer"] = "sfu.offer"
    sdp: Annotated[str, StringConstraints(max_length=4 * MAX_SDP_BYTES)]
    feeds: list[MemberId] = Field(description="The members whose media the offer carries.")
    streams: list[SfuStream]


class SfuTalking(ServerFrame):
    """``member`` started (or stopped) talking, by the audio level the SFU measures."""

    type: Literal["sfu.talking"] = "sfu.talking"
    member: MemberId
    talking: bool


class SfuLink(ServerFrame):
    """Trouble on one of your SFU connections: ``slowlink`` (``uplink``: the SFU receiving from you),
    ``hangup`` (publish or subscribe again), ``down`` (the SFU dropped you: publish and subscribe
    again) or ``moved`` (the session moved to another SFU node: publish and subscribe again)."""

    type: Literal["sfu.link"] = "sfu.link"
    handle: Literal["publisher", "subscriber"]
    state: Literal["slowlink", "hangup", "down", "moved"]
    uplink: bool | None = None


class ModMuted(ServerFrame):
    """A therapist muted you: turn the microphone off. ``hard``: you cannot unmute until released."""

    type: Literal["mod.muted"] = "mod.muted"
    hard: bool


class ModMuteReleased(ServerFrame):
    """Your hard mute was released: you may unmute again."""

    type: Literal["mod.mute_released"] = "mod.mute_released"


class ModUnmuteRequested(ServerFrame):
    """A therapist asks you to unmute (only you can)."""

    type: Literal["mod.unmute_requested"] = "mod.unmute_requested"


class ModCameraOff(ServerFrame):
    """A therapist turned your camera off. ``hard``: you cannot turn it on until released."""

    type: Literal["mod.camera_off"] = "mod.camera_off"
    hard: bool


class ModCameraReleased(ServerFrame):
    """Your camera block was released: you may turn the camera on again."""

    type: Literal["mod.camera_released"] = "mod.camera_released"


class ModSpotlight(ServerFrame):
    """The spotlighted member changed (null: none)."""

    type: Literal["mod.spotlight"] = "mod.spotlight"
    member: MemberId | None


class ModLocked(ServerFrame):
    """The room was locked or unlocked."""

    type: Literal["mod.locked"] = "mod.locked"
    locked: bool


class Pong(ServerFrame):
    """Answer to ``ping``."""

    type: Literal["pong"] = "pong"


class Ack(ServerFrame):
    """A moderator command was carried out (its effects arrive as their own frames)."""

    type: Literal["ack"] = "ack"


class Error(ServerFrame):
    """A refused frame. The connection stays open unless a close code follows."""

    type: Literal["error"] = "error"
    code: str
    detail: str = ""
    retry_after_ms: int | None = Field(default=None, description="rate.limited only: when to try again.")


SERVER_MESSAGES: dict[str, type[ServerFrame]] = {
    model.model_fields["type"].default: model
    for model in [
        Welcome,
        Waiting,
        WaitingList,
        Knock,
        Admitted,
        Denied,
        Removed,
        Ended,
        MemberJoined,
        MemberUpdated,
        MemberLeft,
        Hands,
        ChatMessageFrame,
        ChatDeleted,
        ChatHistoryFrame,
        Resumed,
        SignalDescriptionFrame,
        SignalCandidateFrame,
        SfuAnswer,
        SfuOffer,
        SfuTalking,
        SfuLink,
        ModMuted,
        ModMuteReleased,
        ModUnmuteRequested,
        ModCameraOff,
        ModCameraReleased,
        ModSpotlight,
        ModLocked,
        Pong,
        Ack,
        Error,
    ]
}


def build(model: type[ServerFrame], *, sender: str | None = None, re: str | None = None, **fields: Any) -> dict:
    """Build a server frame from validated fields, stamped with the server's time and its sender."""
    frame = model(ts=timestamp(), from_=sender, re=re, **fields)
    return frame.model_dump(mode="json", by_alias=True)


# One encoder for every frame: json.dumps with options builds a new JSONEncoder on each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(frame: dict) -> str:
    return _ENCODER.encode(frame)


def error(code: str, *, re: str | None = None, detail: str = "", retry_after_ms: int | None = None) -> dict:
    return build(Error, re=re, code=code, detail=detail or ERROR_CODES.get(code, ""), retry_after_ms=retry_after_ms)


# --- stable codes -------------------------------------------------------------------------------

ERROR_CODES: dict[str, str] = {
    "protocol.bad_json": "The frame is not valid JSON.",
    "protocol.too_deep": "The frame is nested too deeply.",
    "protocol.bad_envelope": "The envelope (v, type, id, to, data) is malformed.",
    "protocol.bad_version": "Unsupported protocol version.",
    "protocol.unknown_type": "Unknown message type.",
    "protocol.bad_payload": "The data does not match the message type (or a text holds U+0000, which no text may).",
    "protocol.target_required": "This message needs a 'to' member id.",
    "protocol.target_unexpected": "This message takes no 'to'.",
    "rate.limited": "Too many frames: wait retry_after_ms and send again.",
    "signal.too_many_candidates": "Too many ICE candidates for this peer in one negotiation.",
    "server.retry": "A temporary server problem: send the same message again (chat is idempotent).",
    "server.unavailable": "A backing service is down: reconnect later (the connection closes with 1013).",
    "perm.denied": "Only the session's therapists may do this, or the target is not yours to act on.",
    "perm.waiting": "Not available in the waiting room.",
    "target.not_found": "No such member (or message) in this session.",
    "target.not_waiting": "That person is not in the waiting room.",
    "target.not_admitted": "That person is not in the room.",
    "session.not_found": "No such session.",
    "session.ended": "The session has ended.",
    "session.removed": "You were removed from this session.",
    "seat.left": "You left this session.",
    "conn.replaced": "A newer connection (another tab or device) took over this seat.",
    "chat.not_allowed": "You cannot send this chat message.",
    "chat.empty": "The message is empty.",
    "mute.hard": "A therapist muted you; they have to release the mute first.",
    "camera.blocked": "A therapist turned your camera off; they have to release it first.",
    "resume.invalid": "The resume token is not valid for this seat; resynchronise from scratch.",
    "sfu.not_sfu": "This session's media is peer to peer (room.media.mode): use signal.* instead.",
    "sfu.unavailable": "The media server is unreachable: try again shortly.",
    "sfu.rejected": "The media server refused this description or candidate.",
    "sfu.not_negotiating": "Nothing to apply this to: publish or subscribe first, or answer the latest offer only.",
    "sfu.feed_not_found": "A member in feeds does not publish in this session.",
    "sfu.too_many_candidates": "Too many ICE candidates for this connection in one negotiation.",
    "sfu.session_ended": "The session has ended: its media room is closed.",
}

CLOSE_CODES: dict[int, str] = {
    1000: "Normal closure (you left).",
    1003: "A binary frame: this endpoint speaks JSON text only.",
    1008: "Repeated bad frames or sustained flooding.",
    1009: "A frame over the size cap (the frame, or chat, SDP or a candidate over its own cap).",
    1013: "A backing service (database, channel layer) is down: reconnect later, with backoff.",
    4401: "Logged out, login expired or account disabled: log in again.",
    4403: "Removed or denied by a therapist: do not reconnect.",
    4409: "Replaced by a newer tab or device of the same person: do not reconnect from this one.",
    4410: "The session ended.",
}


if __name__ == "__main__":
    from signaling.protocol_docs import main

    main()
