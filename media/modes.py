"""Which media path a session uses: the Janus SFU or the peer-to-peer mesh. Pure, with stable codes.

The decision is made from the room (its kind and its media preference) and whether an SFU is
configured at all; it never depends on who happens to be in the room, so every member of a
session, on any server process, reaches the same answer without asking anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

from rooms.models import MediaPreference, RoomKind

SFU = "sfu"
P2P = "p2p"

# Stable reason codes (they go to clients in ``room.media.reason``).
GROUP = "media.group"  # 3+ people by the room's kind: the SFU
ONE_TO_ONE = "media.one_to_one"  # individual or medication management: peer to peer
FORCED_SFU = "media.forced_sfu"  # the room's preference says SFU
FORCED_P2P = "media.forced_p2p"  # the room's preference says peer to peer
NO_SFU = "media.no_sfu"  # the SFU would be used, but no Janus node is configured: mesh

# Kinds meant for two people; every other kind is a group of three or more.
ONE_TO_ONE_KINDS = frozenset({RoomKind.INDIVIDUAL, RoomKind.MEDICATION})

# Past this many people a mesh degrades (each one uploads a copy per peer; ../shared/MEDIA.md).
MESH_COMFORT = 4


@dataclass(frozen=True)
class MediaMode:
    mode: str  # SFU or P2P
    reason: str  # one of the codes above

    @property
    def sfu(self) -> bool:
        return self.mode == SFU


def decide(kind: str, preference: str, *, sfu_available: bool) -> MediaMode:
    """The media path of a session in a room of ``kind`` with media ``preference``.

    Checked in this order: a forced peer-to-peer preference; a forced SFU preference (mesh when
    no SFU is configured); one-to-one kinds peer to peer; every group kind through the SFU when
    one is configured, else the mesh.
    """
    if preference == MediaPreference.P2P:
        return MediaMode(P2P, FORCED_P2P)
    if preference == MediaPreference.SFU:
        return MediaMode(SFU, FORCED_SFU) if sfu_available else MediaMode(P2P, NO_SFU)
    if kind in ONE_TO_ONE_KINDS:
        return MediaMode(P2P, ONE_TO_ONE)
    return MediaMode(SFU, GROUP) if sfu_available else MediaMode(P2P, NO_SFU)


def mesh_crowded(mode: MediaMode, people: int) -> bool:
    """A mesh with more people than it carries well: the therapist's screen shows a notice."""
    return mode.mode == P2P and people > MESH_COMFORT
