"""Fixtures for the session WebSocket tests (the helpers are in helpers.py).

Every socket a test opens is closed at teardown and its consumer awaited: an
exception inside the application (what daphne turns into a 1011) fails the test,
whatever the test asserted.
"""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.db import connection, connections
from django.utils import timezone

from signaling import consumers
from telehealth.proxy import Proxy
from tests.factories import make_live_clinic
from tests.media.conftest import free_port, require_binary
from tests.signaling.helpers import Sockets
from tests.signaling.processes import Daphne, PrivateRedis


@pytest.fixture
async def sockets():
    # A fresh layer for each test: a Redis layer keeps per-event-loop state (pools, a receive lock),
    # and each test runs in its own loop; one test's trouble must not leak into the next.
    channel_layers.backends.clear()
    manager = Sockets()
    yield manager
    try:
        await manager.close_all()
    finally:
        for task in list(consumers.BACKGROUND):
            task.cancel()
        await asyncio.gather(*consumers.BACKGROUND, return_exceptions=True)
        # The consumers' database work ran in asgiref's thread: close its connection so the test
        # database can be flushed and dropped (PostgreSQL refuses while a connection is open).
        await sync_to_async(connections.close_all)()
        layer = get_channel_layer()
        if hasattr(layer, "close_pools"):
            await layer.close_pools()  # Redis pools belong to this test's event loop
        channel_layers.backends.clear()


@pytest.fixture
def live(transactional_db):
    """A group session that started a minute ago (participants are admitted automatically)."""
    return make_live_clinic(timezone.now())


# --- real processes (tests/signaling/processes.py) ---------------------------------------------


@pytest.fixture
async def close_worker_connection():
    """The test's ORM calls run in sync_to_async's worker thread: close its connection at the end,
    or PostgreSQL refuses to drop the test database while it is open."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own (tests/signaling/processes.py)."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_server(require_postgres, private_redis):
    """The private Redis the daphne processes of ``servers`` use (they need PostgreSQL too)."""
    return private_redis


@pytest.fixture
def servers(tmp_path, redis_server, close_worker_connection):
    """Start daphne processes on the test database and the private Redis: ``servers(n)``."""
    started: list[Daphne] = []
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    database_url = f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"

    def start(count: int) -> list[Daphne]:
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "VIRTUAL_ENV") if name in os.environ}
        env.update(
            DJANGO_SETTINGS_MODULE="telehealth.settings",
            PYTHONDONTWRITEBYTECODE="1",
            DATABASE_URL=database_url,
            REDIS_URL=redis_server.url,
            # Short periodic checks so a lost group is noticed within the 10 s the contract allows.
            SESSION_RECHECK_SECONDS="2",
            SEAT_GRACE_SECONDS="30",
        )
        for index in range(count):
            started.append(Daphne(env, tmp_path / f"daphne-{len(started)}-{index}.log"))
        return started[-count:]

    yield start
    for server in started:
        server.stop()

    for server in started:
        text = server.log_path.read_text()
        assert not re.search(r"Exception inside application|Internal Server Error", text), text


@pytest.fixture
def proxy(tmp_path):
    """nginx with this project's configuration in front of daphne processes: ``proxy([a, b])``."""
    require_binary("nginx")
    started: list[Proxy] = []

    def start(upstreams: list[Daphne]) -> Proxy:
        directory = tmp_path / f"nginx-{len(started)}"
        started.append(Proxy([f"127.0.0.1:{server.port}" for server in upstreams], directory, free_port()))
        return started[-1]

    yield start
    for front in started:
        front.stop()
        assert "[emerg]" not in front.error_log() and "[crit]" not in front.error_log(), front.error_log()
