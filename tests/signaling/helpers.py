"""Helpers for the session WebSocket tests: a client socket, and expected frames written out in full.

``Sockets.open(user, session)`` logs the person in (a real Django session cookie)
and connects to ``telehealth.asgi.application``: the origin check, the session
middleware and the router run as in production.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone
from redis.exceptions import RedisError

from rooms.models import AuditEvent, Seat
from signaling.protocol import ERROR_CODES, LIMITS, SUBPROTOCOL, timestamp
from telehealth.asgi import application

SAME_ORIGIN = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
TIMEOUT = 3  # seconds to wait for a frame that must come (Redis adds a few milliseconds)
QUIET = 0.15  # seconds of silence that show nothing else was sent
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Socket:
    """One client connection: send envelopes, receive whole frames (``ts`` checked and dropped)."""

    def __init__(self, communicator: WebsocketCommunicator, session_key: str | None) -> None:
        self.communicator = communicator
        self.session_key = session_key
        self.close_code: int | None = None
        self.member_id: str | None = None
        self.resume_token: str | None = None
        self._ids = 0

    async def send(self, type_: str, data: dict | None = None, *, to: str | None = None, id: str | None = None) -> str:
        self._ids += 1
        message_id = id or f"c-{self._ids}"
        envelope = {"v": 1, "type": type_, "id": message_id, "data": data or {}}
        if to is not None:
            envelope["to"] = to
        await self.communicator.send_to(text_data=json.dumps(envelope))
        return message_id

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_to(bytes_data=data)

    async def recv(self, timeout: float = TIMEOUT) -> dict:
        output = await self.communicator.receive_output(timeout)
        assert output["type"] == "websocket.send", f"expected a frame, got {output}"
        frame = json.loads(output["text"])
        ts = frame.pop("ts")
        assert TS.match(ts), ts
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        assert abs(moment - timezone.now()) < timedelta(seconds=30), ts
        return frame

    async def recv_type(self, type_: str) -> dict:
        frame = await self.recv()
        assert frame["type"] == type_, frame
        return frame

    async def closed(self, timeout: float = TIMEOUT) -> int:
        output = await self.communicator.receive_output(timeout)
        assert output["type"] == "websocket.close", f"expected a close, got {output}"
        self.close_code = output.get("code", 1000)
        return self.close_code

    async def quiet(self, timeout: float = QUIET) -> None:
        """Nothing more arrives (and the application has not crashed)."""
        assert await self.communicator.receive_nothing(timeout), await self.communicator.receive_output(0.1)

    async def quiet_but_own_join(self, timeout: float = QUIET) -> None:
        """Nothing more arrives, except perhaps a member.joined about this member itself.

        Someone just admitted enters the room's group while the room's member.joined
        about them is still on its way through the Pub/Sub layer; it may reach them
        too. Roster frames are updates, so a client shows nothing new.
        """
        while not await self.communicator.receive_nothing(timeout):
            extra = await self.recv()
            assert extra["type"] == "member.joined" and extra["member"]["member"] == self.member_id, extra

    async def drop(self, code: int = 1001) -> None:
        """The client's network goes away (or the browser closes the socket)."""
        await self.communicator.disconnect(code, timeout=TIMEOUT)
        self.close_code = self.close_code or code


class Sockets:
    def __init__(self) -> None:
        self.opened: list[Socket] = []
        self._cookies: dict = {}

    async def login(self, user) -> str:
        client = Client()
        await sync_to_async(client.force_login)(user)
        return client.cookies["sessionid"].value

    async def connect(
        self,
        user=None,
        session=None,
        *,
        subprotocols: tuple[str, ...] = (SUBPROTOCOL,),
        session_key: str | None = None,
        path: str | None = None,
    ) -> tuple[bool, Socket, object]:
        """Returns (accepted, socket, subprotocol or close code)."""
        await layer_settled()
        headers = list(SAME_ORIGIN)
        if user is not None:
            session_key = session_key or await self.login(user)
            headers.append((b"cookie", f"sessionid={session_key}".encode()))
        communicator = WebsocketCommunicator(
            application, path or f"/ws/sessions/{session.pk}/", headers=headers, subprotocols=list(subprotocols)
        )
        socket = Socket(communicator, session_key)
        self.opened.append(socket)
        accepted, detail = await communicator.connect(timeout=TIMEOUT)
        if not accepted:
            socket.close_code = detail
        return accepted, socket, detail

    async def open(self, user, session, **kwargs) -> Socket:
        """Connect and return the socket; the welcome is left for the test to read."""
        accepted, socket, detail = await self.connect(user, session, **kwargs)
        assert accepted, f"handshake refused ({detail})"
        assert detail == SUBPROTOCOL
        return socket

    async def enter(self, user, session, **kwargs) -> tuple[Socket, dict]:
        """Open, read the welcome (and a therapist's first waiting list); peers' member.joined is left."""
        socket = await self.open(user, session, **kwargs)
        hello = await socket.recv_type("welcome")
        socket.member_id = hello["member"]
        socket.resume_token = hello["resume_token"]
        if hello["role"] == "moderator" and hello["state"] == "admitted":
            await socket.recv_type("waiting.list")
        return socket, hello

    async def close_all(self) -> None:
        for socket in self.opened:
            future = socket.communicator._future
            if future is None:
                continue
            if not future.done():
                await socket.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
            # Raises whatever the consumer raised: an unhandled exception is a 1011 and a bug.
            await socket.communicator.wait(TIMEOUT)


async def layer_settled() -> None:
    """Wait until everything published so far has reached this process's connections.

    With the Pub/Sub layer a message published just before a connection joins a group
    may still be on its way from Redis and reach the newcomer after its welcome (a
    member.joined for someone already in its roster: harmless, clients treat roster
    frames as updates). Tests that expect exact frames connect only once the layer is
    settled: a marker published now arrives after everything published before it.
    """
    layer = get_channel_layer()
    try:
        channel = await layer.new_channel()
        group = f"test.barrier.{channel.rsplit('.', 1)[-1][-12:]}"
        await layer.group_add(group, channel)
    except (OSError, RedisError):  # a test that takes the layer down on purpose: nothing is in flight
        return
    # Redis may take the marker before it has taken our SUBSCRIBE (redis-py sends it without
    # waiting for the reply): publish again until one comes back. One receive throughout:
    # cancelling a Pub/Sub receive unsubscribes its channel.
    receiving = asyncio.ensure_future(layer.receive(channel))
    try:
        for _ in range(int(TIMEOUT / 0.05)):
            await layer.group_send(group, {"type": "barrier"})
            done, _ = await asyncio.wait({receiving}, timeout=0.05)
            if done:
                return
        raise AssertionError("the channel layer did not deliver a marker")
    finally:
        if not receiving.done():
            receiving.cancel()
        await layer.group_discard(group, channel)


async def all_quiet(*sockets: Socket) -> None:
    """None of these sockets receives anything more (checked side by side: one quiet period in all)."""
    await asyncio.gather(*(socket.quiet() for socket in sockets))


# --- expected frames ---------------------------------------------------------------------------------


def member(
    member_id: str,
    name: str,
    role: str = "participant",
    *,
    presence: str = "connected",
    mic: bool = False,
    camera: bool = False,
    hard_muted: bool = False,
    camera_blocked: bool = False,
    hand: str | None = None,
    conn: int = 1,
) -> dict:
    return {
        "member": member_id,
        "name": name,
        "role": role,
        "presence": presence,
        "mic": mic,
        "camera": camera,
        "hard_muted": hard_muted,
        "camera_blocked": camera_blocked,
        "hand": hand,
        "conn": conn,
    }


def frame(type_: str, *, sender: str | None = None, re: str | None = None, **fields) -> dict:
    """A server frame as the client receives it (``ts`` checked and dropped by ``Socket.recv``)."""
    return {"v": 1, "type": type_, "from": sender, "re": re, **fields}


def error(code: str, re: str | None, *, detail: str | None = None, retry_after_ms: int | None = None) -> dict:
    detail = ERROR_CODES[code] if detail is None else detail
    return frame("error", re=re, code=code, detail=detail, retry_after_ms=retry_after_ms)


def room(roster: list[dict], *, spotlight=None, locked=False, chat_seq=0, hands=(), media=None) -> dict:
    return {
        "roster": roster,
        "spotlight": spotlight,
        "locked": locked,
        "chat_seq": chat_seq,
        "hands": list(hands),
        "ice_servers": [],
        "media": media or mesh(len(roster)),
    }


def mesh(people: int, reason: str = "media.no_sfu") -> dict:
    """The media of a group room without a Janus node: a mesh, crowded past 4 people."""
    return {"mode": "p2p", "reason": reason, "mesh_limit": 4, "crowded": people > 4}


def welcome(welcome_frame: dict, *, role: str, state: str = "admitted", room=None, waiting=None) -> dict:
    """The expected welcome; the member id and resume token are the server's (checked for shape)."""
    assert re.match(r"^[A-Za-z0-9_-]{16,32}$", welcome_frame["member"])
    assert len(welcome_frame["resume_token"]) >= 32
    return frame(
        "welcome",
        member=welcome_frame["member"],
        role=role,
        state=state,
        resume_token=welcome_frame["resume_token"],
        limits=LIMITS.model_dump(),
        room=room,
        waiting=waiting,
    )


def chat(seq: int, author: str, text: str, at: str, *, thread: str | None = None, deleted: bool = False) -> dict:
    return {"seq": seq, "author": author, "text": text, "thread": thread, "at": at, "deleted": deleted}


@sync_to_async
def seat(session, user) -> Seat:
    return Seat.objects.get(session=session, user=user)


@sync_to_async
def since(session, user) -> str:
    return timestamp(Seat.objects.get(session=session, user=user).waiting_since)


@sync_to_async
def audit(action: str, **filters) -> list[tuple]:
    rows = AuditEvent.objects.filter(action=action, **filters).order_by("at")
    return [(row.session_id, row.actor_id, row.subject_id, row.code) for row in rows]
