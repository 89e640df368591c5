"""The WebSocket handshake's user: Django's session login, resolved in the database thread.

Channels' ``AuthMiddleware`` looks the user up through ``database_sync_to_async``, whose
per-call ``close_old_connections()`` costs a health-check round trip (``SELECT 1``, with
``CONN_HEALTH_CHECKS``) on the one database thread every handshake queues for. Here the same
lookup, Django's own ``auth.get_user`` (session key, backend, user, session hash, with
``SECRET_KEY_FALLBACKS``), runs through ``signaling.db`` instead, and not in the middleware at
all: ``scope["user"]`` stays unresolved until the session consumer resolves it in the same
database call as its join (``login``), one hop to the database thread per handshake instead of
two (a join storm queues for that thread).
"""

from __future__ import annotations

from types import SimpleNamespace

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib import auth
from django.utils.functional import empty

from signaling import db


def user_of(session):
    """The logged-in user of a Django session, or ``AnonymousUser`` (call in the database thread)."""
    return auth.get_user(SimpleNamespace(session=session))


def resolved_user(scope):
    """``scope["user"]`` if something already resolved it (a test's scope, another stack), else None."""
    user = scope.get("user")
    if user is None:
        return None
    wrapped = getattr(user, "_wrapped", user)
    return None if wrapped is empty else wrapped


def set_user(scope, user) -> None:
    scope["user"]._wrapped = user


async def login(scope):
    """Resolve ``scope["user"]`` on its own (when there is no join to resolve it with)."""
    user = resolved_user(scope)
    if user is None:
        user = await db.run(user_of, scope["session"])
        set_user(scope, user)
    return user


class HandshakeAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope):
        pass  # deferred: the consumer resolves it with its join (see the module docstring)


def handshake_auth_stack(inner):
    """Cookies, then the Django session, then ``scope["user"]`` (as ``AuthMiddlewareStack``)."""
    return CookieMiddleware(SessionMiddleware(HandshakeAuthMiddleware(inner)))
