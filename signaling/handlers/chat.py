"""Chat: stored first (rooms.live.post_chat), then delivered with its sequence number."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms import live
from signaling import fanout, frames, groups
from signaling import protocol as p
from signaling.chat_writer import chat_writer

if TYPE_CHECKING:
    from signaling.consumers import SessionConsumer
    from signaling.protocol import ClientMessage


async def _deliver_to_audience(conn: SessionConsumer, message: live.ChatView, frame: dict) -> None:
    """The room, or a private thread: that participant and the session's therapists."""
    seq = message.seq
    if message.thread is None:
        await conn.deliver(groups.room(conn.session_id), fanout.ROOM, frame, exclude_self=True, seq=seq)
        return
    await conn.deliver(groups.member(conn.session_id, message.thread), fanout.ROOM, frame, exclude_self=True, seq=seq)
    await conn.deliver(groups.moderators(conn.session_id), fanout.MODERATORS, frame, exclude_self=True, seq=seq)


async def send(conn: SessionConsumer, msg: ClientMessage) -> None:
    posted = await chat_writer().submit(
        live.ChatRequest(
            conn.actor, msg.id, msg.data.text, to_therapists=msg.data.to_therapists, thread=msg.data.thread
        )
    )
    # The sender is answered directly (with its message id in "re"); a resend of a stored
    # message is answered the same way and delivered to nobody else a second time.
    frame = frames.chat_message(posted.message)  # built once: the answer differs only by "re"
    await conn.reply({**frame, "re": msg.id})
    conn.chat_seen(posted.message.seq)
    if posted.created:
        await _deliver_to_audience(conn, posted.message, frame)


async def history(conn: SessionConsumer, msg: ClientMessage) -> None:
    page = await conn.call(live.chat_history, msg.data.after_seq)
    await conn.reply(frames.chat_history(page, msg.data.after_seq, re=msg.id))


async def delete(conn: SessionConsumer, msg: ClientMessage) -> None:
    message = await conn.call(live.delete_chat, msg.data.seq)
    await conn.reply(p.build(p.Ack, re=msg.id))
    deleted = p.build(p.ChatDeleted, sender=conn.member_id, seq=message.seq)
    if message.thread is None:
        await conn.deliver(groups.room(conn.session_id), fanout.ROOM, deleted)
    else:
        await conn.deliver(groups.member(conn.session_id, message.thread), fanout.ROOM, deleted)
        await conn.deliver(groups.moderators(conn.session_id), fanout.MODERATORS, deleted, exclude_self=False)
