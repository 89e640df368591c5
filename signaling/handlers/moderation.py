"""Moderator commands: the session's therapists only (checked by the consumer, and again by rooms.live).

Each command is one rooms.live call; the moderator gets an ``ack`` and everyone
concerned gets the frames its ``Changes`` call for. Every command is audited there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rooms import live
from signaling import protocol as p
from signaling.handlers import sfu

if TYPE_CHECKING:
    from signaling.consumers import SessionConsumer
    from signaling.protocol import ClientMessage

# type -> (domain function, the validated payload -> its arguments)
COMMANDS: dict[str, tuple[Callable[..., live.Changes], Callable[[Any], dict]]] = {
    "mod.admit": (live.admit, lambda d: {"member_id": d.member}),
    "mod.admit_all": (live.admit_all, lambda d: {}),
    "mod.deny": (live.deny, lambda d: {"member_id": d.member, "message": d.message}),
    "mod.remove": (live.remove, lambda d: {"member_id": d.member}),
    "mod.end": (live.end, lambda d: {}),
    "mod.lock": (live.lock, lambda d: {}),
    "mod.unlock": (live.unlock, lambda d: {}),
    "mod.mute": (live.mute, lambda d: {"member_id": d.member, "hard": d.hard}),
    "mod.mute_all": (live.mute_all, lambda d: {}),
    "mod.release_mute": (live.release_mute, lambda d: {"member_id": d.member}),
    "mod.ask_unmute": (live.ask_unmute, lambda d: {"member_id": d.member}),
    "mod.camera_off": (live.camera_off, lambda d: {"member_id": d.member, "hard": d.hard}),
    "mod.release_camera": (live.release_camera, lambda d: {"member_id": d.member}),
    "mod.spotlight": (live.spotlight, lambda d: {"member_id": d.member}),
    "mod.lower_hand": (live.lower_hand_of, lambda d: {"member_id": d.member}),
    "mod.lower_all_hands": (live.lower_all_hands, lambda d: {}),
    "mod.waiting_message": (live.waiting_message, lambda d: {"text": d.text, "member_id": d.member}),
}


async def command(conn: SessionConsumer, msg: ClientMessage) -> None:
    function, arguments = COMMANDS[msg.type]
    changes = await conn.call(function, **arguments(msg.data))
    await conn.reply(p.build(p.Ack, re=msg.id))
    await conn.publish(changes)
    await sfu.after_command(conn, msg)  # removal and the end reach Janus too (SFU sessions)


HANDLERS = dict.fromkeys(COMMANDS, command)
