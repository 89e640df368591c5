"""Fixtures for the session WebSocket tests (the helpers are in helpers.py).

Every socket a test opens is closed at teardown and its consumer awaited: an
exception inside the application (what daphne turns into a 1011) fails the test,
whatever the test asserted.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.db import connections
from django.utils import timezone

from signaling import consumers
from tests.factories import make_live_clinic
from tests.signaling.helpers import Sockets


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
