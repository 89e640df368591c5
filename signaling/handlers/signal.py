"""WebRTC signaling relay (P2P): offers, answers and ICE candidates between two admitted members.

The frame the peer receives is rebuilt from the validated fields, stamped with
the sender's member id, and carries the recipient's perfect-negotiation role.
Each description checks the route in the database; candidates reuse that check
for a few seconds (``SessionConsumer.signal_route``): no database call per candidate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms import live
from signaling import fanout, groups
from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.consumers import SessionConsumer
    from signaling.protocol import ClientMessage

TOO_MANY_CANDIDATES = "signal.too_many_candidates"


async def description(conn: SessionConsumer, msg: ClientMessage) -> None:
    route = await conn.signal_route(msg.to, fresh=True)
    conn.candidates[route.target] = 0  # a new negotiation (or ICE restart) starts a new candidate budget
    frame = p.build(
        p.SignalDescriptionFrame, sender=conn.member_id, kind=msg.data.kind, sdp=msg.data.sdp, polite=route.polite
    )
    await conn.deliver(groups.member(conn.session_id, route.target), fanout.ROOM, frame)


async def candidate(conn: SessionConsumer, msg: ClientMessage) -> None:
    if conn.candidates.get(msg.to, 0) >= p.MAX_CANDIDATES_PER_PEER:
        raise live.LiveError(TOO_MANY_CANDIDATES)
    route = await conn.signal_route(msg.to)
    conn.candidates[route.target] = conn.candidates.get(route.target, 0) + 1
    frame = p.build(
        p.SignalCandidateFrame,
        sender=conn.member_id,
        candidate=msg.data.candidate,
        sdp_mid=msg.data.sdp_mid,
        sdp_mline_index=msg.data.sdp_mline_index,
        polite=route.polite,
    )
    await conn.deliver(groups.member(conn.session_id, route.target), fanout.ROOM, frame)
