"""Domain views (rooms.live) -> protocol frames (signaling.protocol), field by field.

Every frame the server sends is built here or in the handlers through
``protocol.build``, which validates it against its schema and stamps ``ts`` and
``from``. Nothing a client sent is forwarded as is: the handlers pass validated
fields only.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from media import modes, turn
from rooms import live
from signaling import protocol as p


def media_mode(view: live.RoomView) -> modes.MediaMode:
    """The session's media path (the same answer on every process: room and settings decide)."""
    return modes.decide(view.kind, view.media_preference, sfu_available=bool(settings.JANUS_URLS))


def media_info(view: live.RoomView) -> dict:
    mode = media_mode(view)
    return {
        "mode": mode.mode,
        "reason": mode.reason,
        "mesh_limit": None if mode.sfu else modes.MESH_COMFORT,
        "crowded": modes.mesh_crowded(mode, len(view.roster)),
    }


def member_info(view: live.MemberView) -> dict:
    return {
        "member": view.member_id,
        "name": view.name,
        "role": view.role,
        "presence": "connected" if view.connected else "reconnecting",
        "mic": view.mic,
        "camera": view.camera,
        "hard_muted": view.hard_muted,
        "camera_blocked": view.camera_blocked,
        "hand": p.timestamp(view.hand_raised_at) if view.hand_raised_at else None,
        "conn": view.conn,
    }


def waiting_entry(view: live.WaitingView) -> dict:
    return {
        "member": view.member_id,
        "name": view.name,
        "since": p.timestamp(view.since),
        "presence": "connected" if view.connected else "reconnecting",
    }


def waiting_state(info: live.WaitingInfo) -> dict:
    return {"opens_at": p.timestamp(info.opens_at) if info.opens_at else None, "message": info.message}


def ice_servers(view: live.RoomView, member_id: str | None) -> list[dict]:
    """STUN/TURN for this admitted member: the configured servers, plus a TURN credential of their own
    (media.turn: an opaque username, valid until the session's end plus a margin). Fresh with every
    room view: the welcome, admission, and the resume that comes with an ICE restart."""
    servers = list(settings.ICE_SERVERS)
    if member_id and view.ends_at is not None:
        servers += turn.ice_servers_for(member_id, valid_until=view.ends_at, now=timezone.now())
    return servers


def room_state(view: live.RoomView, member_id: str | None = None) -> dict:
    return {
        "roster": [member_info(m) for m in view.roster],
        "spotlight": view.spotlight,
        "locked": view.locked,
        "chat_seq": view.chat_seq,
        "hands": list(view.hands),
        "ice_servers": ice_servers(view, member_id),
        "media": media_info(view),
    }


def chat_entry(view: live.ChatView) -> dict:
    return {
        "seq": view.seq,
        "author": view.author,
        "text": view.text,
        "thread": view.thread,
        "at": p.timestamp(view.created_at),
        "deleted": view.deleted,
    }


def welcome(result: live.JoinResult) -> dict:
    return p.build(
        p.Welcome,
        member=result.member.member_id,
        role=result.capacity,
        state=result.state,
        resume_token=result.resume_token,
        limits=p.LIMITS,
        room=room_state(result.room, result.member.member_id) if result.room else None,
        waiting=waiting_state(result.waiting) if result.waiting else None,
    )


def waiting_list(entries: tuple[live.WaitingView, ...], *, sender: str | None = None) -> dict:
    return p.build(p.WaitingList, sender=sender, entries=[waiting_entry(e) for e in entries])


def admitted(room: live.RoomView, member_id: str, *, sender: str | None = None) -> dict:
    return p.build(p.Admitted, sender=sender, room=room_state(room, member_id))


def chat_message(view: live.ChatView, *, re: str | None = None) -> dict:
    """The frame ``p.build(p.ChatMessageFrame, ...)`` builds, written out: the hottest frame (one per
    chat message, ~20 us through the model). Every field is a stored value that was validated on its
    way in; tests/signaling/test_frames.py checks it stays what the model builds."""
    return {
        "v": p.PROTOCOL_VERSION,
        "type": "chat.message",
        "ts": p.timestamp(),
        "from": view.author,
        "re": re,
        "message": chat_entry(view),
    }


def chat_history(page: live.ChatPage, after_seq: int, *, re: str) -> dict:
    return p.build(
        p.ChatHistoryFrame,
        re=re,
        after_seq=after_seq,
        messages=[chat_entry(m) for m in page.messages],
        more=page.more,
    )


def resumed(result: live.Resumed, member_id: str, *, re: str) -> dict:
    return p.build(
        p.Resumed,
        re=re,
        room=room_state(result.room, member_id),
        chat=[chat_entry(m) for m in result.chat.messages],
        more=result.chat.more,
    )


NOTICES: dict[str, type[p.ServerFrame]] = {
    "muted": p.ModMuted,
    "mute_released": p.ModMuteReleased,
    "unmute_requested": p.ModUnmuteRequested,
    "camera_off": p.ModCameraOff,
    "camera_released": p.ModCameraReleased,
}


def notice(item: live.Notice, *, sender: str | None) -> dict:
    model = NOTICES[item.kind]
    fields = {"hard": item.hard} if "hard" in model.model_fields else {}
    return p.build(model, sender=sender, **fields)
