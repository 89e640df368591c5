"""The WebSocket handshake's user: Django's session login, resolved in one hop to the database thread.

Channels' ``AuthMiddleware`` looks the user up through ``database_sync_to_async``, whose
per-call ``close_old_connections()`` costs a health-check round trip (``SELECT 1``, with
``CONN_HEALTH_CHECKS``) on the one database thread every handshake queues for. Here the same
lookup, Django's own ``auth.get_user`` (session key, backend, user, session hash, with
``SECRET_KEY_FALLBACKS``), runs through ``signaling.db`` instead.
"""

from __future__ import annotations

from types import SimpleNamespace

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib import auth

from signaling import db


def _user_of(session):
    return auth.get_user(SimpleNamespace(session=session))


class HandshakeAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope):
        scope["user"]._wrapped = await db.run(_user_of, scope["session"])


def handshake_auth_stack(inner):
    """Cookies, then the Django session, then ``scope["user"]`` (as ``AuthMiddlewareStack``)."""
    return CookieMiddleware(SessionMiddleware(HandshakeAuthMiddleware(inner)))
