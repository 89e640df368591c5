"""One periodic check per process for all of its open session connections.

Every connection must notice, within a minute, that its login is gone (4401), its
seat was taken or removed (4409/4403), the session ended (4410), the start let it
in, or a chat delivery the channel layer lost. Asking that per socket (a locked
transaction every ``SESSION_RECHECK_SECONDS`` for each of 1,200 sockets) was the
largest single cost of the service (docs/performance.md). Here one task per event
loop asks ``rooms.live.survey`` about all of them in a constant number of read-only
queries, and only the connections it names run their full check (``live.tick``).

When Janus nodes are configured, a second task checks their health every
``JANUS_HEALTH_SECONDS`` (at once when a node's socket closes): signaling.handlers.sfu
marks a failing node down and moves its rooms.

With the core Redis layer, group memberships live in Redis and a Redis restart
empties them: the watcher also has the process's hub re-add its groups (the Pub/Sub
layer keeps memberships in the process, and redis-py re-subscribes on reconnect).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace
from typing import TYPE_CHECKING

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from media.broker import get_broker
from rooms import live
from signaling import db
from signaling.handlers import sfu
from signaling.hub import get_hub

if TYPE_CHECKING:
    from signaling.consumers import SessionConsumer

log = logging.getLogger(__name__)


class Watcher:
    def __init__(self) -> None:
        self.connections: set[SessionConsumer] = set()
        self.task: asyncio.Task | None = None
        self.nodes_task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.chat_seq: dict = {}  # session id -> its chat number at the previous round

    def add(self, conn: SessionConsumer) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            # A new event loop (a test's): connections of the old one are gone with it.
            self.connections, self.task, self.nodes_task, self.loop, self.chat_seq = set(), None, None, loop, {}
        self.connections.add(conn)
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run(), name="session-watcher")
        if settings.JANUS_URLS and (self.nodes_task is None or self.nodes_task.done()):
            self.nodes_task = loop.create_task(self._watch_nodes(), name="janus-node-watcher")

    def discard(self, conn: SessionConsumer) -> None:
        self.connections.discard(conn)

    async def _run(self) -> None:
        while self.connections:
            period = float(settings.SESSION_RECHECK_SECONDS)
            # Jitter: processes started together do not all query at the same instant.
            await asyncio.sleep(period * random.uniform(0.85, 1.0))
            try:
                await self.check_all()
                if settings.JANUS_URLS:
                    await sfu.sweep()  # one query: rooms of sessions that ended unseen
            except Exception:  # the watcher must outlive any one bad round
                log.exception("periodic session check failed")

    async def _watch_nodes(self) -> None:
        broker = get_broker()
        while self.connections:
            await broker.trouble(float(settings.JANUS_HEALTH_SECONDS))
            try:
                await sfu.check_nodes()
            except Exception:  # the watcher must outlive any one bad round
                log.exception("janus node check failed")

    async def check_all(self) -> None:
        probes = {conn: conn.probe() for conn in list(self.connections)}
        connections = [conn for conn, probe in probes.items() if probe is not None]
        if not connections:
            return
        asked = [
            (conn, replace(probes[conn], chat_due=self.chat_seq.get(probes[conn].actor.session_id)))
            for conn in connections
        ]
        chat_seq: dict = {}
        for chunk in survey_chunks(asked, SURVEY_CHUNK):
            try:
                result = await db.run(live.survey, [probe for _, probe in chunk])
            except DatabaseError:
                log.warning("periodic session check skipped: database unavailable")
                return
            chat_seq.update(result.chat_seq)
            for (conn, _), needs_check in zip(chunk, result.due, strict=True):
                if needs_check:
                    conn.request_check()
        self.chat_seq = chat_seq
        if settings.CHANNEL_LAYER_KIND == "core" and settings.REDIS_URL:
            try:
                await get_hub(get_channel_layer()).refresh()
            except (RedisError, OSError, TimeoutError):
                log.warning("could not refresh group memberships", exc_info=True)


# Connections surveyed per database call. One call for all 1,200 of a process held the database
# thread (and the GIL) for ~110 ms, and the chat stores queued behind it were the rooms100 latency
# spikes (measured, docs/performance.md); a call of this size takes about a tenth of that.
SURVEY_CHUNK = 100


def survey_chunks(asked: list[tuple], size: int) -> list[list[tuple]]:
    """``(connection, probe)`` pairs in chunks of about ``size``, each session's connections in one
    chunk (``live.survey`` lets one connection per session expire its stale seats)."""
    chunks: list[list[tuple]] = []
    current: list[tuple] = []
    previous = None
    for pair in sorted(asked, key=lambda pair: str(pair[1].actor.session_id)):
        session_id = pair[1].actor.session_id
        if len(current) >= size and session_id != previous:
            chunks.append(current)
            current = []
        current.append(pair)
        previous = session_id
    if current:
        chunks.append(current)
    return chunks


WATCHER = Watcher()
