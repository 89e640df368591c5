"""Is a login still valid? For connections that outlive the request that authenticated them.

A WebSocket is authenticated once, at the handshake, from the session cookie. Logging
out (the session is flushed), the session expiring, a password change (the auth hash
changes) or a disabled account must still end it: the realtime service asks this
question periodically.
"""

from __future__ import annotations

import time
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.utils.crypto import constant_time_compare

from accounts.models import User

# The cache's clock (tests move it).
clock = time.monotonic

DB_SESSIONS = "django.contrib.sessions.backends.db"  # the engine whose rows can be read in bulk

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
    """What ``login_problems`` and the handshake (signaling.auth) worked out before, reused while
    the stored values are unchanged: session data decoded (keyed by session key, checked against the
    stored string) and auth hashes (keyed by user, checked against the password hash), each with
    when it was last used. The handshake's entries make a connection's first check a cache hit.

    The realtime service asks in chunks of about a hundred connections per call; a cache that kept
    only the latest call's entries never hit, and every round decoded and hashed every connection
    again (measured, ~190 ms of CPU per round of 1,200). Entries not asked about for
    ``KEEP_SECONDS`` are dropped, so closed connections do not accumulate."""

    sessions: dict[str, tuple[str, dict, float]] = {}
    hashes: dict[object, tuple[str, str, float]] = {}
    pruned_at = 0.0


# Longer than any survey period (SESSION_RECHECK_SECONDS is at most 60).
KEEP_SECONDS = 300.0


def _prune(now: float) -> None:
    if now - _Decoded.pruned_at < KEEP_SECONDS / 5:
        return
    cutoff = now - KEEP_SECONDS
    _Decoded.sessions = {k: v for k, v in _Decoded.sessions.items() if v[2] >= cutoff}
    _Decoded.hashes = {k: v for k, v in _Decoded.hashes.items() if v[2] >= cutoff}
    _Decoded.pruned_at = now


def auth_hash(user_id, password: str, *, user: User | None = None) -> str:
    """``User.get_session_auth_hash()`` for this user and password hash, computed once while the
    password is unchanged (``user``: the instance at hand, if any, saves building one)."""
    cached = _Decoded.hashes.get(user_id)
    if cached is not None and cached[0] == password:
        value = cached[1]
    else:
        value = (user or User(pk=user_id, password=password)).get_session_auth_hash()
    _Decoded.hashes[user_id] = (password, value, clock())
    return value


def decoded(store, key: str, stored: str) -> dict:
    """``store.decode(stored)`` (the engine's own: {} for a bad signature) for session ``key``,
    decoded once while its stored data is unchanged. Read it, never change it: it is shared."""
    cached = _Decoded.sessions.get(key)
    data = cached[1] if cached is not None and cached[0] == stored else store.decode(stored)
    _Decoded.sessions[key] = (stored, data, clock())
    return data


def login_problems(logins: list[tuple[object, str | None]]) -> list[str | None]:
    """``login_problem`` for many (user id, session key) pairs at once: one answer per pair, in order.

    With the database session engine this is two queries however many pairs (the
    realtime service asks for every open connection of a process at once), and a
    session's data is decoded again only when it changed; other engines are asked
    key by key.
    """
    if settings.SESSION_ENGINE != DB_SESSIONS:
        return [login_problem(user_id, key) for user_id, key in logins]
    from django.contrib.sessions.models import Session as StoredSession
    from django.utils import timezone

    keys = {key for _, key in logins if key}
    stored = StoredSession.objects.filter(session_key__in=keys, expire_date__gt=timezone.now()).values_list(
        "session_key", "session_data"
    )
    users = User.objects.filter(pk__in={user_id for user_id, _ in logins}).values_list("pk", "password", "is_active")
    return judge_logins(logins, stored, users)


def judge_logins(logins: list[tuple[object, str | None]], stored, users) -> list[str | None]:
    """``login_problems``'s answers from the rows it reads (with the database session engine):
    ``stored``, (session key, session data) of the pairs' sessions that have not expired; ``users``,
    (pk, password hash, is active) of their users. For callers that read those rows their own way
    (the realtime survey, in one round trip with its other reads)."""
    now = clock()
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    data_of = {key: decoded(store, key, data) for key, data in stored}
    accounts = {str(pk): (pk, password, active) for pk, password, active in users}
    answers: list[str | None] = []
    for user_id, key in logins:
        data = data_of.get(key) if key else None
        if data is None or str(data.get(SESSION_KEY, "")) != str(user_id):
            answers.append(LOGGED_OUT)
            continue
        user = accounts.get(str(user_id))
        if user is None or not user[2]:
            answers.append(INACTIVE)
            continue
        current = auth_hash(user[0], user[1])
        answers.append(None if constant_time_compare(data.get(HASH_SESSION_KEY, ""), current) else LOGGED_OUT)
    _prune(now)
    return answers
