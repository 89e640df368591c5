"""Is a login still valid? For connections that outlive the request that authenticated them.

A WebSocket is authenticated once, at the handshake, from the session cookie. Logging
out (the session is flushed), the session expiring, a password change (the auth hash
changes) or a disabled account must still end it: the realtime service asks this
question periodically.
"""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.utils.crypto import constant_time_compare

from accounts.models import User

LOGGED_OUT = "auth.logged_out"
INACTIVE = "auth.inactive"


def login_problem(user_id, session_key: str | None) -> str | None:
    """None while ``session_key`` still logs in ``user_id`` as an active user, else a stable code."""
    if not session_key:
        return LOGGED_OUT
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key).load()
    if str(data.get(SESSION_KEY, "")) != str(user_id):
        return LOGGED_OUT
    user = User.objects.filter(pk=user_id).first()
    if user is None or not user.is_active:
        return INACTIVE
    if not constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return LOGGED_OUT  # the password changed since this login
    return None


class _Decoded:
    """What ``login_problems`` worked out last time, reused while the stored values are unchanged:
    session data decoded (keyed by the stored string) and auth hashes (keyed by the password hash).
    Only entries asked about in the latest call are kept."""

    sessions: dict[str, tuple[str, dict]] = {}
    hashes: dict[object, tuple[str, str]] = {}


def _auth_hash(user_id, password: str) -> str:
    cached = _Decoded.hashes.get(user_id)
    if cached is not None and cached[0] == password:
        return cached[1]
    user = User(pk=user_id, password=password)
    value = user.get_session_auth_hash()
    _Decoded.hashes[user_id] = (password, value)
    return value


def login_problems(logins: list[tuple[object, str | None]]) -> list[str | None]:
    """``login_problem`` for many (user id, session key) pairs at once: one answer per pair, in order.

    With the database session engine this is two queries however many pairs (the
    realtime service asks for every open connection of a process at once), and a
    session's data is decoded again only when it changed; other engines are asked
    key by key.
    """
    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.db":
        return [login_problem(user_id, key) for user_id, key in logins]
    from django.contrib.sessions.models import Session as StoredSession
    from django.utils import timezone

    keys = {key for _, key in logins if key}
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    rows = StoredSession.objects.filter(session_key__in=keys, expire_date__gt=timezone.now()).values_list(
        "session_key", "session_data"
    )
    decoded: dict[str, tuple[str, dict]] = {}
    for key, stored in rows:
        cached = _Decoded.sessions.get(key)
        decoded[key] = cached if cached is not None and cached[0] == stored else (stored, store.decode(stored))
    _Decoded.sessions = decoded
    users = {
        str(pk): (pk, password, active)
        for pk, password, active in User.objects.filter(pk__in={user_id for user_id, _ in logins}).values_list(
            "pk", "password", "is_active"
        )
    }
    _Decoded.hashes = {pk: value for pk, value in _Decoded.hashes.items() if str(pk) in users}
    answers: list[str | None] = []
    for user_id, key in logins:
        data = decoded[key][1] if key in decoded else None
        if data is None or str(data.get(SESSION_KEY, "")) != str(user_id):
            answers.append(LOGGED_OUT)
            continue
        user = users.get(str(user_id))
        if user is None or not user[2]:
            answers.append(INACTIVE)
            continue
        current = _auth_hash(user[0], user[1])
        answers.append(None if constant_time_compare(data.get(HASH_SESSION_KEY, ""), current) else LOGGED_OUT)
    return answers
