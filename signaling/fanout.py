"""Deliver frames through the channel layer, with ONE internal event type.

Every layer message is ``{"type": "deliver", ...}`` carrying a frame the server
already built and encoded (once, however many receive it), plus:

- ``audience``     who may take it, checked again by each receiving connection
                   against its own state: ``room`` (admitted members), ``mod``
                   (admitted therapists), ``waiting`` (people waiting), ``any``
- ``close``        a close code to send after the frame (4403, 4409, 4410)
- ``below_epoch``  only connections older than this epoch act (duplicate tabs)
- ``control``      ``admitted``: the receiving connection moves into the room;
                   ``moderation``: it applies its seat's hard mute / camera block at
                   the SFU (media.broker) after passing the frame on;
                   ``sfu.moved``: the session's SFU room moved to another Janus node,
                   the connection drops its link to the old one
- ``exclude``      a channel name that skips it (the sender, answered directly)
- ``seq``          a chat message's number: lets a connection tell what it missed
- ``group``        the group it was sent to (``send`` adds it): each process's hub
                   (signaling.hub) hands it to its local members of that group

The only other messages on a group are the hubs' own ``hub.hello`` and ``hub.ack``
(signaling.hub: whether a group has listeners in other processes); no connection
ever gets them.

The layer is at-most-once: what must not be lost (chat, admissions) is in the
database first, and clients resynchronise by sequence number.
"""

from __future__ import annotations

import uuid

from rooms import live
from signaling import frames, groups, publisher
from signaling import protocol as p
from signaling.hub import current_hub

DELIVER = "deliver"
ANY = "any"
ROOM = "room"
MODERATORS = "mod"
WAITING = "waiting"
MODERATION = "moderation"
SFU_MOVED = "sfu.moved"


def event(
    audience: str,
    frame: dict | None = None,
    *,
    close: int | None = None,
    below_epoch: int | None = None,
    control: str | None = None,
    exclude: str | None = None,
    seq: int | None = None,
) -> dict:
    message: dict = {"type": DELIVER, "audience": audience}
    if frame is not None:
        message["frame"] = p.encode(frame)
    if close is not None:
        message["close"] = close
    if below_epoch is not None:
        message["below_epoch"] = below_epoch
    if control is not None:
        message["control"] = control
    if exclude is not None:
        message["exclude"] = exclude
    if seq is not None:
        message["seq"] = seq
    return message


async def send(layer, group: str, message: dict) -> None:
    """Send a layer message to ``group``, naming the group (the receiving process's hub routes by it).

    When no other process listens to the group, this process's hub hands it to its members without
    Redis (``signaling.hub``, "groups of one process"). Otherwise, on the Pub/Sub layer over plain
    Redis, the PUBLISH goes out without waiting for its reply (``signaling.publisher``); the channel
    and the bytes are the layer's own."""
    message = {**message, "group": group}
    hub = current_hub(layer)
    if hub is not None and await hub.delivers_alone(group, message):
        return
    await publisher.to_group(layer, group, message)


async def publish(
    layer, session_id: uuid.UUID, changes: live.Changes, *, sender: str | None, exclude: str | None = None
) -> None:
    """Tell everyone concerned what ``changes`` says. Sends are awaited in order: per receiver, frames
    arrive in the order they were published."""
    room, mods = groups.room(session_id), groups.moderators(session_id)

    async def to(group: str, message: dict) -> None:
        await send(layer, group, message)

    if changes.ended:
        ended = event(ANY, p.build(p.Ended, sender=sender), close=4410)
        await to(room, ended)
        await to(groups.waiting(session_id), ended)
        return
    for member_id in changes.admitted:
        await to(groups.member(session_id, member_id), event(WAITING, control="admitted"))
    for member_id, message in changes.denied:
        denied = p.build(p.Denied, sender=sender, message=message)
        await to(groups.member(session_id, member_id), event(ANY, denied, close=4403))
    for member_id in changes.removed:
        await to(groups.member(session_id, member_id), event(ANY, p.build(p.Removed, sender=sender), close=4403))
    for view in changes.joined:
        joined = p.build(p.MemberJoined, sender=sender, member=frames.member_info(view))
        await to(room, event(ROOM, joined, exclude=exclude))
    for view in changes.updated:
        updated = p.build(p.MemberUpdated, sender=sender, member=frames.member_info(view))
        await to(room, event(ROOM, updated, exclude=exclude))
    for member_id in changes.left:
        await to(room, event(ROOM, p.build(p.MemberLeft, sender=sender, member=member_id)))
    for item in changes.notices:
        notice = frames.notice(item, sender=sender)
        await to(groups.member(session_id, item.member_id), event(ROOM, notice, control=MODERATION))
    if changes.spotlight_changed:
        await to(room, event(ROOM, p.build(p.ModSpotlight, sender=sender, member=changes.spotlight)))
    if changes.locked is not None:
        await to(room, event(ROOM, p.build(p.ModLocked, sender=sender, locked=changes.locked)))
    if changes.hands is not None:
        await to(mods, event(MODERATORS, p.build(p.Hands, sender=sender, queue=list(changes.hands))))
    if changes.waiting_list is not None:
        await to(mods, event(MODERATORS, frames.waiting_list(changes.waiting_list, sender=sender)))
    if changes.waiting_room is not None:
        waiting = p.build(p.Waiting, sender=sender, waiting=frames.waiting_state(changes.waiting_room))
        await to(groups.waiting(session_id), event(WAITING, waiting))
    for member_id, info in changes.waiting_to:
        waiting = p.build(p.Waiting, sender=sender, waiting=frames.waiting_state(info))
        await to(groups.member(session_id, member_id), event(WAITING, waiting))
