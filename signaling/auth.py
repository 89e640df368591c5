"""The WebSocket handshake's user: Django's session login, resolved in the database thread.

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

Handshakes that arrive while a lookup runs are looked up together in the next call
(``signaling.batches``): in a burst of connections, one hop and two round trips for all of them.
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
from accounts.sessions import DB_SESSIONS
from rooms import pg
from signaling import db
from signaling.batches import Batches, per_loop

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
    """``_users_of`` for one handshake."""
    return _users_of([session])[0]


def _users_of(stores: list) -> list:
    """The user of each handshake's session store (``AnonymousUser`` when not logged in), as
    ``auth.get_user`` answers it; on the fast path, the common case of all of them in two round
    trips (every session row, then every user row), the rest by ``auth.get_user`` one by one."""
    users = _common_logins(stores) if _fast_path_applies() else [_ASK_DJANGO] * len(stores)
    return [
        auth.get_user(SimpleNamespace(session=store)) if user is _ASK_DJANGO else user
        for store, user in zip(stores, users, strict=True)
    ]


def _fast_path_applies() -> bool:
    engine, backends = settings.SESSION_ENGINE, settings.AUTHENTICATION_BACKENDS
    return pg.available() and engine == DB_SESSIONS and MODEL_BACKEND in backends


def _common_logins(stores: list) -> list:
    """For each store: the logged-in user, AnonymousUser, or ``_ASK_DJANGO`` where ``auth.get_user``
    must decide (it may change the session: rotate its key under a fallback secret, or flush it)."""
    answers: list = [AnonymousUser() for _ in stores]
    keys = {i: key for i, store in enumerate(stores) if (key := getattr(store, "session_key", None))}
    now = timezone.now()
    found = pg.run([(_SESSION, {"key": key, "now": now}) for key in keys.values()]) if keys else []
    logins: dict[int, tuple[object, dict]] = {}  # position -> (user id, session data)
    for (i, key), rows in zip(keys.items(), (f.rows for f in found), strict=True):
        if not rows:
            continue  # no such session, or expired: Django's load finds nothing either
        # The engine's own decoding ({} for a bad signature, as in load()), kept for the periodic
        # check of this login (accounts.sessions.login_problems), which then need not decode it again.
        data = sessions.decoded(stores[i], key, rows[0][0])
        try:
            user_id = User._meta.pk.to_python(data[auth.SESSION_KEY])
            backend = data[auth.BACKEND_SESSION_KEY]
        except KeyError:
            continue
        except Exception:
            answers[i] = _ASK_DJANGO  # a value Django would refuse its own way
            continue
        if backend != MODEL_BACKEND:
            answers[i] = _ASK_DJANGO
            continue
        logins[i] = (user_id, data)
    found = pg.run([(_USER, {"pk": user_id}) for user_id, _ in logins.values()]) if logins else []
    for (i, (_, data)), rows in zip(logins.items(), (f.rows for f in found), strict=True):
        if rows:
            answers[i] = _checked(pg.instance(User, _USER_FIELDS, rows[0]), data)
    return answers


def _checked(user: User, data: dict):
    """``user`` if the login still holds (an active account whose password hash the session was made
    with), AnonymousUser if not, ``_ASK_DJANGO`` when only Django can tell (the fallback secrets)."""
    if not ModelBackend().user_can_authenticate(user):
        return AnonymousUser()
    session_hash = data.get(auth.HASH_SESSION_KEY)
    if session_hash and constant_time_compare(session_hash, sessions.auth_hash(user.pk, user.password, user=user)):
        return user
    return _ASK_DJANGO


# Most handshakes' logins in one call.
MAX_LOGIN_BATCH = 32


def logins() -> Batches:
    """This event loop's handshake logins, batched (``_users_of`` in the database thread)."""
    return per_loop(
        "logins", lambda: Batches(lambda stores: db.run(_users_of, stores), name="logins", max_batch=MAX_LOGIN_BATCH)
    )


class HandshakeAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope):
        # The user itself, not Channels' lazy wrapper around it: the handshake reads it at once
        # anyway, and every attribute read through the wrapper (the join reads dozens) costs a
        # call (py-spy: 3 % of a join storm's CPU, docs/performance.md).
        scope["user"] = await logins().submit(scope["session"])


def handshake_auth_stack(inner):
    """Cookies, then the Django session, then ``scope["user"]`` (as ``AuthMiddlewareStack``)."""
    return CookieMiddleware(SessionMiddleware(HandshakeAuthMiddleware(inner)))
