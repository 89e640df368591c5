"""The WebSocket handshake's user: Django's session login, resolved in one hop to the database thread.

Channels' ``AuthMiddleware`` looks the user up through ``database_sync_to_async``, whose
per-call ``close_old_connections()`` costs a health-check round trip (``SELECT 1``, with
``CONN_HEALTH_CHECKS``) on the one database thread every handshake queues for. Here the same
lookup, Django's own ``auth.get_user`` (session key, backend, user, session hash, with
``SECRET_KEY_FALLBACKS``), runs through ``signaling.db`` instead.

On PostgreSQL with the database session engine, the common case (a current session of an active
user, logged in through ``ModelBackend``, whose auth hash matches under the current secret) is read
with two prepared statements instead of two ORM queries compiled on every handshake: in a join
storm those were a seventh of the server's CPU (py-spy, docs/performance.md). Everything else (no
such session, another backend, a hash that needs the fallback secrets or a flush) goes to
``auth.get_user``, which answers it exactly as before.
"""

from __future__ import annotations

from types import SimpleNamespace

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.models import Session as StoredSession
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from accounts import sessions
from accounts.models import User
from rooms import pg
from signaling import db

DB_SESSIONS = "django.contrib.sessions.backends.db"
MODEL_BACKEND = f"{ModelBackend.__module__}.{ModelBackend.__qualname__}"

_SESSION_SQL = (
    f"SELECT {pg.column(StoredSession, 'session_data')} FROM {pg.table(StoredSession)} "
    f"WHERE {pg.column(StoredSession, 'session_key')} = %(key)s AND {pg.column(StoredSession, 'expire_date')} > %(now)s"
)
_USER_SQL = f'SELECT {pg.columns(User, "u")} FROM {pg.table(User)} u WHERE u."{User._meta.pk.column}" = %(pk)s'
_USER_FIELDS = pg.attnames(User)
_SESSION, _USER = pg.Statement(_SESSION_SQL), pg.Statement(_USER_SQL)

_ASK_DJANGO = object()  # the fast path's "not the common case": auth.get_user decides


def _user_of(session):
    user = _common_login(session) if _fast_path_applies() else _ASK_DJANGO
    if user is _ASK_DJANGO:
        return auth.get_user(SimpleNamespace(session=session))
    return user


def _fast_path_applies() -> bool:
    engine, backends = settings.SESSION_ENGINE, settings.AUTHENTICATION_BACKENDS
    return pg.available() and engine == DB_SESSIONS and MODEL_BACKEND in backends


def _common_login(session):
    """The logged-in user, AnonymousUser, or ``_ASK_DJANGO`` where ``auth.get_user`` must decide
    (it may change the session: rotate its key under a fallback secret, or flush it)."""
    key = getattr(session, "session_key", None)
    if not key:
        return AnonymousUser()
    (found,) = pg.run([(_SESSION, {"key": key, "now": timezone.now()})])
    if not found.rows:
        return AnonymousUser()  # no such session, or expired: Django's load finds nothing either
    # The engine's own decoding ({} for a bad signature, as in load()), kept for the periodic
    # check of this login (accounts.sessions.login_problems), which then need not decode it again.
    data = sessions.decoded(session, key, found.rows[0][0])
    try:
        user_id = User._meta.pk.to_python(data[auth.SESSION_KEY])
        backend = data[auth.BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    except Exception:
        return _ASK_DJANGO  # a value Django would refuse its own way
    if backend != MODEL_BACKEND:
        return _ASK_DJANGO
    (found,) = pg.run([(_USER, {"pk": user_id})])
    if not found.rows:
        return AnonymousUser()
    user = pg.instance(User, _USER_FIELDS, found.rows[0])
    if not ModelBackend().user_can_authenticate(user):
        return AnonymousUser()
    session_hash = data.get(auth.HASH_SESSION_KEY)
    if session_hash and constant_time_compare(session_hash, sessions.auth_hash(user.pk, user.password, user=user)):
        return user
    return _ASK_DJANGO


class HandshakeAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope):
        scope["user"]._wrapped = await db.run(_user_of, scope["session"])


def handshake_auth_stack(inner):
    """Cookies, then the Django session, then ``scope["user"]`` (as ``AuthMiddlewareStack``)."""
    return CookieMiddleware(SessionMiddleware(HandshakeAuthMiddleware(inner)))
