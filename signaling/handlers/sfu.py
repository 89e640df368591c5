"""Media through the SFU (group rooms): the consumer's side of media.broker.

The client speaks ``sfu.*`` (signaling.protocol); each handler checks the session's media
path, calls the member's ``MemberLink`` with validated fields only (the broker builds every
Janus request itself) and answers with frames rebuilt field by field. Janus events come back
through the connection's own loop (``on_janus``) and become ``sfu.offer`` / ``sfu.talking`` /
``sfu.link`` frames for this member's client only: every member's link hears the room's
events itself, so nothing is fanned out twice.

Also here: what the session's lifecycle means at Janus (``admitted``, ``closed``,
``after_command``), the moderation enforced there (``enforce``), and the health of the Janus
nodes (``check_nodes``, run by signaling.watch): when a node is marked down its rooms move to
another node and every member there is told ``sfu.link`` ``moved`` (``moved`` drops the old link;
the client publishes and subscribes again, which claims the room where it is now).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from media import broker as b
from media import sfu as sfu_rooms
from media.janus import JanusError, JanusEvent
from rooms import live
from signaling import db, fanout, frames, groups
from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.consumers import SessionConsumer
    from signaling.protocol import ClientMessage

log = logging.getLogger(__name__)

NOT_SFU = "sfu.not_sfu"
# Moderator commands whose effect must also reach Janus.
_MODERATED = frozenset({"mod.remove", "mod.end"})


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# --- lifecycle ----------------------------------------------------------------------------------


async def admitted(conn: SessionConsumer, room: live.RoomView) -> None:
    """The member is in the room: note the media path; in an SFU session make sure the room exists
    at Janus (the first admitted member creates it; any process may, the database row decides)."""
    conn.media = frames.media_mode(room)
    if not conn.media.sfu or conn.sfu_room is not None:
        return
    try:
        conn.sfu_room = await db.run(sfu_rooms.claim_room, conn.session_id, list(settings.JANUS_URLS))
        created = await b.get_broker().ensure_room(conn.sfu_room)
        if created:
            await db.run(sfu_rooms.mark_opened, conn.session_id)
    except sfu_rooms.SfuRoomError:
        conn.sfu_room = None
    except (DatabaseError, JanusError, *b.UNREACHABLE) as exc:
        # The member still gets in; sfu.* answers sfu.unavailable until Janus answers.
        log.warning("sfu room not ready: %s", type(exc).__name__)


async def closed(conn: SessionConsumer, code: int) -> None:
    """The connection ends: leave Janus (4403: kicked too). 4410: the session ended, so its room
    is destroyed (once, by whichever connection gets there first)."""
    link, conn.link = conn.link, None
    if link is not None:
        await link.close(removed=code == 4403)
    if code == 4410 and conn.sfu_room is not None:
        await release(conn.session_id)


async def release(session_id) -> None:
    try:
        info = await db.run(sfu_rooms.release_room, session_id)
        if info is not None:
            await b.get_broker().destroy_room(info)
    except (DatabaseError, JanusError, *b.UNREACHABLE) as exc:
        log.warning("sfu room not destroyed at Janus: %s (non-permanent: a Janus restart drops it)", type(exc).__name__)


async def after_command(conn: SessionConsumer, msg: ClientMessage) -> None:
    """A moderator command that Janus must carry out too: removal kicks at once (even if the
    removed member's connection lives on another process), the end destroys the room."""
    if msg.type not in _MODERATED or conn.sfu_room is None:
        return
    if msg.type == "mod.end":
        await release(conn.session_id)
        return
    try:
        await b.get_broker().kick(conn.sfu_room, msg.data.member)
    except (JanusError, *b.UNREACHABLE) as exc:
        log.warning("sfu kick failed: %s", type(exc).__name__)


async def enforce(conn: SessionConsumer) -> None:
    """Apply this member's hard mute and camera block at Janus (read from the seat, the record)."""
    link = conn.link
    if link is None or link.publisher is None:
        return
    try:
        view = await conn.call(live.room_snapshot)
        me = next((m for m in view.roster if m.member_id == conn.member_id), None)
        if me is not None:
            await link.enforce(me.hard_muted, me.camera_blocked)
    except (live.LiveError, DatabaseError, JanusError, *b.UNREACHABLE) as exc:
        log.warning("sfu moderation not applied: %s", type(exc).__name__)


# --- client messages ----------------------------------------------------------------------------


async def _link(conn: SessionConsumer) -> b.MemberLink:
    if conn.media is None or not conn.media.sfu:
        raise _Refused(NOT_SFU)
    if conn.sfu_room is None:
        await admitted(conn, await conn.call(live.room_snapshot))
        if conn.sfu_room is None:
            raise _Refused(b.UNAVAILABLE)
    if conn.link is None:
        conn.link = b.MemberLink(b.get_broker(), conn.sfu_room, conn.member_id, conn.queue_janus_event)
    return conn.link


async def _guarded(conn: SessionConsumer, msg: ClientMessage, action) -> None:
    try:
        await action(await _link(conn))
    except (_Refused, b.BrokerError) as exc:
        if exc.code == b.UNAVAILABLE:
            # Its node does not answer: check the nodes now, and re-read where the room is on the
            # client's next try (it may have moved while the news of it was lost).
            b.get_broker().suspect()
            _forget_link(conn)
        await conn.reply(p.error(exc.code, re=msg.id))


def offer_frame(offer: b.Offer, *, re: str | None = None) -> dict:
    return p.build(
        p.SfuOffer,
        re=re,
        sdp=offer.sdp,
        feeds=offer.feeds,
        streams=[{"mid": s.mid, "member": s.member, "kind": s.kind} for s in offer.streams],
    )


async def publish(conn: SessionConsumer, msg: ClientMessage) -> None:
    async def act(link: b.MemberLink) -> None:
        answer = await link.publish(msg.data.sdp)
        await conn.reply(p.build(p.SfuAnswer, re=msg.id, sdp=answer))
        await enforce(conn)  # a hard-muted member who republishes stays muted at Janus

    await _guarded(conn, msg, act)


async def subscribe(conn: SessionConsumer, msg: ClientMessage) -> None:
    async def act(link: b.MemberLink) -> None:
        offer = await link.subscribe(None if msg.data.feeds is None else list(msg.data.feeds))
        await conn.reply(offer_frame(offer, re=msg.id) if offer else p.build(p.Ack, re=msg.id))

    await _guarded(conn, msg, act)


async def start(conn: SessionConsumer, msg: ClientMessage) -> None:
    async def act(link: b.MemberLink) -> None:
        more = await link.start(msg.data.sdp)
        await conn.reply(p.build(p.Ack, re=msg.id))
        await _send_outputs(conn, more)

    await _guarded(conn, msg, act)


async def trickle(conn: SessionConsumer, msg: ClientMessage) -> None:
    async def act(link: b.MemberLink) -> None:
        data = msg.data
        await link.trickle(data.handle, data.candidate, data.sdp_mid, data.sdp_mline_index)

    await _guarded(conn, msg, act)


async def layers(conn: SessionConsumer, msg: ClientMessage) -> None:
    async def act(link: b.MemberLink) -> None:
        await link.choose_layers(dict(msg.data.layers), msg.data.downlink_kbps)
        await conn.reply(p.build(p.Ack, re=msg.id))

    await _guarded(conn, msg, act)


# --- Janus events -------------------------------------------------------------------------------


async def on_janus(conn: SessionConsumer, handle: str, event: JanusEvent) -> None:
    link = conn.link
    if link is None or conn.closing:
        return
    try:
        outputs = await link.on_event(handle, event)
    except (b.BrokerError, JanusError, *b.UNREACHABLE) as exc:
        log.warning("sfu event %s not handled: %s", event.kind, type(exc).__name__)
        return
    await _send_outputs(conn, outputs)
    if any(isinstance(o, b.LinkState) and o.state == "down" for o in outputs) and conn.link is link:
        # Janus dropped this member (its session timed out, the node restarted or died, a newer tab
        # took the feed id): start afresh on the next sfu.* message, at wherever the room is then.
        conn.link = None
        conn.sfu_room = None
        await link.close()


async def sweep() -> None:
    """Destroy the Janus rooms of sessions that ended while nobody was connected to see it."""
    try:
        ended = await db.run(sfu_rooms.ended_rooms)
    except DatabaseError:
        return
    for session_id in ended:
        await release(session_id)


# --- Janus nodes ---------------------------------------------------------------------------------

_cleanups: set[asyncio.Task] = set()


async def check_nodes() -> None:
    """Check every configured node once (this process's view). A node this check marks down gets no
    new sessions and its live rooms move; a node that answers again is marked up."""
    broker = b.get_broker()
    nodes = list(settings.JANUS_URLS)
    for url in nodes:
        verdict = await broker.check(url, settings.JANUS_HEALTH_TIMEOUT, settings.JANUS_HEALTH_FAILURES)
        if verdict is None:
            continue
        try:
            change = await db.run(sfu_rooms.note_health, url, verdict)
            if change != sfu_rooms.DOWN:
                if change == sfu_rooms.UP:
                    log.warning("janus node %s answers again: it takes new sessions", url)
                continue
            moved = await db.run(sfu_rooms.move_rooms_off, url, nodes)
        except DatabaseError:
            log.warning("janus node health not recorded: database unavailable")
            continue
        log.warning("janus node %s is down: %d live rooms moved to other nodes", url, len(moved))
        await _tell_moved(moved)


async def _tell_moved(session_ids: list) -> None:
    layer = get_channel_layer()
    frame = p.build(p.SfuLink, handle="publisher", state="moved")
    for session_id in session_ids:
        try:
            await fanout.send(
                layer, groups.room(session_id), fanout.event(fanout.ROOM, frame, control=fanout.SFU_MOVED)
            )
        except (RedisError, OSError, TimeoutError):  # the layer is down: members see the dead link themselves
            log.warning("members of a moved room not told: channel layer unavailable")


async def moved(conn: SessionConsumer) -> None:
    """This session's room is on another node now: forget the old room and link (the client, told
    ``moved``, publishes again; that claims the room at its new node). The old link is closed in the
    background: its node may take a request timeout per call to refuse."""
    _forget_link(conn)


def _forget_link(conn: SessionConsumer) -> None:
    link, conn.link = conn.link, None
    conn.sfu_room = None
    if link is not None:
        task = asyncio.create_task(link.close())
        _cleanups.add(task)
        task.add_done_callback(_cleanups.discard)


async def _send_outputs(conn: SessionConsumer, outputs: list[b.Output]) -> None:
    for output in outputs:
        if isinstance(output, b.Offer):
            await conn.reply(offer_frame(output))
        elif isinstance(output, b.Talking):
            await conn.reply(p.build(p.SfuTalking, sender=output.member, member=output.member, talking=output.talking))
        elif isinstance(output, b.LinkState):
            await conn.reply(p.build(p.SfuLink, handle=output.handle, state=output.state, uplink=output.uplink))


HANDLERS = {
    "sfu.publish": publish,
    "sfu.subscribe": subscribe,
    "sfu.start": start,
    "sfu.trickle": trickle,
    "sfu.layers": layers,
}
