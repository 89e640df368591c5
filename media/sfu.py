"""The SFU room lifecycle in the database: plain synchronous functions with an injectable ``now``.

``claim_room`` runs under the session's row lock (the lock rooms.live takes for every state
change), so concurrent admissions on several server processes get the same row: one Janus room
per session, whoever asks first. ``release_room`` marks it destroyed exactly once, so exactly one
caller destroys it at Janus. The async side (media.broker) does the Janus requests.

Several nodes: a session is pinned to the node with the fewest live rooms among those not marked
down. ``note_health`` records the processes' health verdicts (JanusNode); when a node goes down,
``move_rooms_off`` re-pins its live rooms elsewhere (a fresh room id: the new node has none), and
the members' clients publish and subscribe again there (signaling.handlers.sfu).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from media.models import JanusNode, SfuRoom
from rooms.models import Session, SessionStatus

# Publishers beyond the room's participant capacity: therapists and an observer.
STAFF_PUBLISHERS = 4
MAX_PUBLISHERS = 64

ROOM_ENDED = "sfu.session_ended"


class SfuRoomError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class RoomInfo:
    """What the broker needs to act on a session's Janus room (server-side only: holds the secret)."""

    session_id: object
    node: str
    room: str
    secret: str
    publishers: int

    def __repr__(self) -> str:  # never print the secret
        return f"RoomInfo(session_id={self.session_id!r}, node={self.node!r}, room=..., publishers={self.publishers})"


def _info(row: SfuRoom) -> RoomInfo:
    return RoomInfo(row.session_id, row.node, row.janus_room, row.secret, row.publishers)


def _down(nodes: list[str]) -> set[str]:
    return set(JanusNode.objects.filter(url__in=nodes, down_since__isnull=False).values_list("url", flat=True))


def usable_nodes(nodes: list[str]) -> list[str]:
    """The configured nodes not marked down, in order; all of them when every one is marked down
    (a verdict may be stale: trying a node beats refusing media outright)."""
    down = _down(nodes)
    return [url for url in nodes if url not in down] or list(nodes)


def _least_loaded(nodes: list[str]) -> str:
    live = dict(
        SfuRoom.objects.filter(node__in=nodes, destroyed_at__isnull=True)
        .values_list("node")
        .annotate(n=Count("id"))
        .values_list("node", "n")
    )
    return min(nodes, key=lambda url: (live.get(url, 0), nodes.index(url)))


def claim_room(session_id, nodes: list[str], *, now: datetime | None = None) -> RoomInfo:
    """The session's Janus room, made (in the database) on the first call.

    The node is the configured one with the fewest live rooms. Raises SfuRoomError
    ``sfu.session_ended`` when the session is over or its room was already destroyed.
    """
    now = now or timezone.now()
    if not nodes:
        raise ValueError("no Janus node configured")
    with transaction.atomic():
        session = Session.objects.select_for_update(of=("self",)).select_related("room").get(pk=session_id)
        if session.status in {SessionStatus.ENDED, SessionStatus.CANCELLED} or now >= session.ends_at:
            raise SfuRoomError(ROOM_ENDED)
        row = SfuRoom.objects.filter(session=session).first()
        if row is None:
            row = SfuRoom.objects.create(
                session=session,
                node=_least_loaded(usable_nodes(nodes)),
                janus_room=secrets.token_hex(12),
                secret=secrets.token_urlsafe(32),
                publishers=min(MAX_PUBLISHERS, session.room.capacity + STAFF_PUBLISHERS),
                created_at=now,
            )
        elif row.destroyed_at is not None:
            raise SfuRoomError(ROOM_ENDED)
        return _info(row)


def mark_opened(session_id, *, now: datetime | None = None) -> None:
    """Janus confirmed the room (the first time only)."""
    SfuRoom.objects.filter(session_id=session_id, opened_at__isnull=True).update(opened_at=now or timezone.now())


def release_room(session_id, *, now: datetime | None = None) -> RoomInfo | None:
    """Mark the session's room destroyed. Returns it to the one caller that must destroy it at Janus."""
    now = now or timezone.now()
    with transaction.atomic():
        row = SfuRoom.objects.select_for_update().filter(session_id=session_id, destroyed_at__isnull=True).first()
        if row is None:
            return None
        row.destroyed_at = now
        row.save(update_fields=["destroyed_at"])
        return _info(row)


def ended_rooms(*, now: datetime | None = None) -> list:
    """Session ids whose room is still live although the session is over (a sweep destroys them)."""
    now = now or timezone.now()
    return list(
        SfuRoom.objects.filter(destroyed_at__isnull=True)
        .filter(Q(session__status__in=[SessionStatus.ENDED, SessionStatus.CANCELLED]) | Q(session__ends_at__lte=now))
        .values_list("session_id", flat=True)
    )


# --- node health ---------------------------------------------------------------------------------

DOWN = "down"
UP = "up"


def note_health(url: str, healthy: bool, *, now: datetime | None = None) -> str | None:
    """Record a process's verdict on a node. Returns ``DOWN`` or ``UP`` to the one caller whose
    verdict changed the node's state (that caller moves the rooms), None when nothing changed."""
    now = now or timezone.now()
    current = JanusNode.objects.filter(url=url).values("down_since").first()
    if (current is None or current["down_since"] is None) == healthy:
        return None  # the common case: one read, no write (no row means never marked down)
    with transaction.atomic():
        row, _ = JanusNode.objects.select_for_update().get_or_create(url=url, defaults={"checked_at": now})
        if (row.down_since is None) == healthy:
            return None  # another process got there first
        row.down_since = None if healthy else now
        row.checked_at = now
        row.save(update_fields=["down_since", "checked_at"])
        return UP if healthy else DOWN


def move_rooms_off(url: str, nodes: list[str], *, now: datetime | None = None) -> list:
    """Re-pin every live room of node ``url`` to the least-loaded other node that is not down.

    Each room moves under its session's row lock (the lock claim_room takes), with a new Janus room
    id, so a member who claims at the same moment sees either the old or the new pin, never a mix.
    Returns the ids of the sessions moved (their members must publish again); none when no other
    node is up.
    """
    down = _down(nodes)
    targets = [other for other in nodes if other != url and other not in down]
    if not targets:
        return []
    moved = []
    pinned = SfuRoom.objects.filter(node=url, destroyed_at__isnull=True).values_list("session_id", flat=True)
    for session_id in list(pinned):
        with transaction.atomic():
            Session.objects.select_for_update(of=("self",)).filter(pk=session_id).first()
            row = SfuRoom.objects.select_for_update().filter(session_id=session_id, node=url, destroyed_at=None).first()
            if row is None:
                continue  # destroyed or moved meanwhile
            row.node = _least_loaded(targets)
            row.janus_room = secrets.token_hex(12)
            row.opened_at = None
            row.save(update_fields=["node", "janus_room", "opened_at"])
            moved.append(session_id)
    if moved:
        JanusNode.objects.filter(url=url).update(moved_rooms=F("moved_rooms") + len(moved))
    return moved
