"""Presence: keep-alive, resume after a reconnect, leaving, media state and raised hands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms import live
from signaling import frames
from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.consumers import SessionConsumer
    from signaling.protocol import ClientMessage


async def ping(conn: SessionConsumer, msg: ClientMessage) -> None:
    await conn.reply(p.build(p.Pong, re=msg.id))


async def resume(conn: SessionConsumer, msg: ClientMessage) -> None:
    """After a reconnect: the roster now and exactly the chat after the client's last sequence number."""
    result = await conn.call(live.resume, msg.data.resume_token, msg.data.last_seq)
    await conn.reply(frames.resumed(result, conn.member_id, re=msg.id))
    for message in result.chat.messages:
        conn.chat_seen(message.seq)


async def leave(conn: SessionConsumer, msg: ClientMessage) -> None:
    """Leaving on purpose: peers see member.left at once, without the reconnect grace period."""
    changes = await conn.call(live.leave)
    await conn.publish(changes)
    await conn.finish(1000)


async def media_state(conn: SessionConsumer, msg: ClientMessage) -> None:
    changes = await conn.call(live.set_media, msg.data.mic, msg.data.camera)
    await conn.publish(changes)


async def raise_hand(conn: SessionConsumer, msg: ClientMessage) -> None:
    await conn.publish(await conn.call(live.raise_hand))


async def lower_hand(conn: SessionConsumer, msg: ClientMessage) -> None:
    await conn.publish(await conn.call(live.lower_hand))
