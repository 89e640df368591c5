"""Channel-layer group names, made by the server from opaque ids only.

A group name never holds anything a client sent as is: the session's UUID (as hex)
and a member id the server issued (checked here again). Names stay opaque in Redis
and in logs: nothing in them says which program, room or diagnosis a session is.

Per session:

- ``room``        the admitted members (roster, chat, moderation broadcasts)
- ``waiting``     the people in the waiting room (therapists' messages to the room)
- ``moderators``  the session's therapists (waiting list, hand queue, private threads)
- ``member``      one member's direct route: whichever connection holds their seat
"""

from __future__ import annotations

import re
import uuid

_MEMBER_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _prefix(session_id: uuid.UUID | str) -> str:
    return f"s.{uuid.UUID(str(session_id)).hex}"


def room(session_id: uuid.UUID | str) -> str:
    return f"{_prefix(session_id)}.room"


def waiting(session_id: uuid.UUID | str) -> str:
    return f"{_prefix(session_id)}.waiting"


def moderators(session_id: uuid.UUID | str) -> str:
    return f"{_prefix(session_id)}.mod"


def member(session_id: uuid.UUID | str, member_id: str) -> str:
    if not _MEMBER_ID.match(member_id):
        raise ValueError("not a member id")
    return f"{_prefix(session_id)}.m.{member_id}"
