"""ASGI entry point: HTTP through Django, WebSockets through Channels (daphne serves both).

Every WebSocket passes the same stack before a consumer sees it: the Origin
must match ALLOWED_HOSTS (a foreign or missing Origin is refused), then the
Django session cookie gives ``scope["user"]``, then the signaling router picks
a consumer. A path no route matches is refused before accept (HTTP 403), like
a bad origin, rather than raising inside the router: an unhandled exception is
a server error and must never be the way a handshake is refused.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "telehealth.settings")
# Build the Django app first: it sets up the app registry the imports below need.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from signaling.auth import handshake_auth_stack  # noqa: E402
from signaling.routing import websocket_urlpatterns  # noqa: E402
from signaling.wire import SCOPE_KEY, Socket, read_text_frames_directly  # noqa: E402
from telehealth.autobahn_tuning import defer_connection_config_dump  # noqa: E402
from telehealth.collector import full_collections_every  # noqa: E402

defer_connection_config_dump()
read_text_frames_directly()


def websocket_stack(inner):
    """Wrap a WebSocket app in the checks every handshake passes: origin, then session user."""
    return with_socket(AllowedHostsOriginValidator(handshake_auth_stack(inner)))


def with_socket(inner):
    """Hand the consumer daphne's socket (signaling.wire) next to the ASGI ``send`` the middleware
    wraps: room traffic is written there directly, everything else still goes through ``send``."""

    async def app(scope, receive, send):
        return await inner({**scope, SCOPE_KEY: Socket.of(send)}, receive, send)

    return app


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_stack(
            URLRouter([*websocket_urlpatterns, re_path(r"", WebsocketDenier.as_asgi(), name="ws-unknown")])
        ),
    }
)

# Everything loaded by now (Django, the apps, their modules and settings) lives as long as the
# process: moved out of the cyclic collector's sight, so a full collection only walks what the
# connections created. Measured with 1,200 connections: full collections paused the event loop
# for 200-500 ms and were the rooms100 p99 (docs/performance.md); this takes ~120k objects off
# every one of them. Immortal objects cannot leak by being frozen.
gc.freeze()
# And the full collections that remain run on a timer, not whenever a burst promotes survivors.
full_collections_every(settings.GC_FULL_COLLECTION_SECONDS)
