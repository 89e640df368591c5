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
values: it stamps ``from`` (a member id) and ``ts`` on everything it relays.
A client's ``type`` is only ever a key into ``CLIENT_MESSAGES``; it never
becomes a method name or a channel-layer event type.

docs/protocol.md and docs/protocol.schema.json are generated from this module
(``python -m signaling.protocol``) and a test fails when they drift.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

PROTOCOL_VERSION = 1
SUBPROTOCOL = f"telehealth.v{PROTOCOL_VERSION}"

# Caps far below the server's 1 MiB frame limit: a signaling frame carries one SDP at most.
MAX_FRAME_BYTES = 64 * 1024
MAX_SDP_BYTES = 32 * 1024
MAX_CANDIDATE_BYTES = 1024
MAX_CHAT_CHARS = 2000
MAX_WAITING_MESSAGE_CHARS = 500

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
    """A chat message to the room, or privately to the session's therapists."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHAT_CHARS)]
    to_therapists: bool = False


class ChatDelete(_Payload):
    seq: int = Field(ge=1, le=2**31)


class ChatHistory(_Payload):
    """Ask for the messages after ``after_seq`` (the client's gap after a reconnect)."""

    after_seq: int = Field(ge=0, le=2**31)


class SessionDescription(_Payload):
    kind: Literal["offer", "answer"]
    sdp: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP_BYTES)]


class IceCandidate(_Payload):
    """One trickled ICE candidate; an empty ``candidate`` marks the end of gathering."""

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
    member: MemberId
    message: Annotated[str, StringConstraints(max_length=MAX_WAITING_MESSAGE_CHARS)] = ""


class Mute(_Payload):
    member: MemberId
    hard: bool = False


class Spotlight(_Payload):
    """``member`` null clears the spotlight."""

    member: MemberId | None


class WaitingRoomMessage(_Payload):
    text: Annotated[str, StringConstraints(max_length=MAX_WAITING_MESSAGE_CHARS)]


# type -> (payload model, needs a ``to`` target, moderator only)
CLIENT_MESSAGES: dict[str, tuple[type[_Payload], bool, bool]] = {
    "ping": (Empty, False, False),
    "resume": (Resume, False, False),
    "chat.send": (ChatSend, False, False),
    "chat.history": (ChatHistory, False, False),
    "chat.delete": (ChatDelete, False, True),
    "signal.description": (SessionDescription, True, False),
    "signal.candidate": (IceCandidate, True, False),
    "media.state": (MediaState, False, False),
    "hand.raise": (Empty, False, False),
    "hand.lower": (Empty, False, False),
    "mod.admit": (Target, False, True),
    "mod.admit_all": (Empty, False, True),
    "mod.deny": (Deny, False, True),
    "mod.mute": (Mute, False, True),
    "mod.mute_all": (Empty, False, True),
    "mod.release_mute": (Target, False, True),
    "mod.ask_unmute": (Target, False, True),
    "mod.camera_off": (Target, False, True),
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


class ClientMessage(BaseModel):
    """A parsed, validated client message."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

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


def parse_client_frame(text: str) -> ClientMessage:
    """Text frame -> validated message, or ProtocolError with a stable code.

    Codes: ``protocol.bad_json``, ``protocol.too_deep``, ``protocol.bad_envelope``,
    ``protocol.bad_version``, ``protocol.unknown_type``, ``protocol.bad_payload``,
    ``protocol.target_required``, ``protocol.target_unexpected``.
    """
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("protocol.bad_json", "The frame is not valid JSON.") from None
    if not isinstance(raw, dict):
        raise ProtocolError("protocol.bad_envelope", "The frame must be a JSON object.")
    client_id = raw.get("id") if isinstance(raw.get("id"), str) and len(raw.get("id")) <= 64 else None
    if _max_depth(raw) > 6:
        raise ProtocolError("protocol.too_deep", "The frame is nested too deeply.", client_id)
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
        raise ProtocolError("protocol.bad_payload", _first_error(exc), envelope.id) from None
    return ClientMessage(
        type=envelope.type, id=envelope.id, to=envelope.to, data=payload, moderator_only=moderator_only
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "frame"
    return f"{where}: {error.get('msg', 'invalid')}"
