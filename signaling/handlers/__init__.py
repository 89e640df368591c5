"""The handler table: client message type -> handler. The only way a client's ``type`` is used.

A handler gets the connection (signaling.consumers.SessionConsumer) and the
parsed, validated message. It calls rooms.live once (``conn.call``), answers the
sender (``conn.reply``) and tells the others (``conn.publish`` / ``conn.deliver``).
The consumer has already checked that the sender may send this type: moderator
commands only from the session's therapists, and only ``WAITING_ROOM_TYPES`` from
someone in the waiting room. Domain refusals (``LiveError``) become error frames
in the consumer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from signaling.handlers import chat, moderation, presence, sfu, signal

if TYPE_CHECKING:
    from signaling.consumers import SessionConsumer
    from signaling.protocol import ClientMessage

Handler = Callable[["SessionConsumer", "ClientMessage"], Awaitable[Any]]

HANDLERS: dict[str, Handler] = {
    "ping": presence.ping,
    "resume": presence.resume,
    "session.leave": presence.leave,
    "media.state": presence.media_state,
    "hand.raise": presence.raise_hand,
    "hand.lower": presence.lower_hand,
    "chat.send": chat.send,
    "chat.history": chat.history,
    "chat.delete": chat.delete,
    "signal.description": signal.description,
    "signal.candidate": signal.candidate,
    **sfu.HANDLERS,
    **moderation.HANDLERS,
}

# Someone in the waiting room sees nothing of the room and may only do this.
WAITING_ROOM_TYPES = frozenset({"ping", "session.leave"})
