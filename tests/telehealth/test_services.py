"""The real services, when the environment names them: PostgreSQL from DATABASE_URL, Redis from REDIS_URL.

Without the variables these tests skip, unless TELEHEALTH_REQUIRE_SERVICES=1
(CI), where a missing service is a failure: a run meant to prove PostgreSQL and
Redis must never pass by skipping them.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import connection

from telehealth.env import POSTGRES_SCHEMES

pytestmark = pytest.mark.services


def service_url(name: str, *, schemes: tuple[str, ...] | None = None) -> str:
    value = os.environ.get(name, "")
    if value and (schemes is None or value.split(":", 1)[0] in schemes):
        return value
    reason = f"{name} is not set" if not value else f"{name} is not a {'/'.join(schemes)}:// URL"
    if os.environ.get("TELEHEALTH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and TELEHEALTH_REQUIRE_SERVICES=1")
    pytest.skip(reason)


@pytest.mark.django_db
def test_database_url_postgres_is_the_database():
    service_url("DATABASE_URL", schemes=POSTGRES_SCHEMES)

    with connection.cursor() as cursor:
        cursor.execute("SELECT version(), current_setting('TimeZone')")
        version, zone = cursor.fetchone()

    assert connection.vendor == "postgresql"
    assert version.startswith("PostgreSQL ")
    # Django talks UTC to the database whatever the server's default zone is.
    assert zone == "UTC"


async def test_redis_url_channel_layer_round_trip():
    service_url("REDIS_URL")
    layer = get_channel_layer()
    assert isinstance(layer, RedisChannelLayer | RedisPubSubChannelLayer)
    group = f"test-{uuid.uuid4().hex}"
    channel = await layer.new_channel()
    try:
        await layer.group_add(group, channel)
        receiving = asyncio.ensure_future(layer.receive(channel))
        # The Pub/Sub layer's SUBSCRIBE is not confirmed before group_add returns: send until it lands.
        for _ in range(50):
            await layer.group_send(group, {"type": "probe.message", "n": 1, "text": "hé"})
            if (await asyncio.wait({receiving}, timeout=0.1))[0]:
                break

        assert receiving.result() == {"type": "probe.message", "n": 1, "text": "hé"}
    finally:
        await layer.group_discard(group, channel)
        # The layer's connections belong to this test's event loop; close them with it.
        await (layer.close_pools() if isinstance(layer, RedisChannelLayer) else layer.flush())
