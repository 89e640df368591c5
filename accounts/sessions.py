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


def login_problems(logins: list[tuple[object, str | None]]) -> list[str | None]:
    """``login_problem`` for many (user id, session key) pairs at once: one answer per pair, in order.

    With the database session engine this is two queries however many pairs (the
    realtime service asks for every open connection of a process at once); other
    engines are asked key by key.
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
    data_by_key = {key: store.decode(data) for key, data in rows}
    users = {
        str(user.pk): user
        for user in User.objects.filter(pk__in={user_id for user_id, _ in logins}).only("password", "is_active")
    }
    hashes: dict[str, str] = {}
    answers: list[str | None] = []
    for user_id, key in logins:
        data = data_by_key.get(key) if key else None
        if data is None or str(data.get(SESSION_KEY, "")) != str(user_id):
            answers.append(LOGGED_OUT)
            continue
        user = users.get(str(user_id))
        if user is None or not user.is_active:
            answers.append(INACTIVE)
            continue
        if user_id not in hashes:
            hashes[user_id] = user.get_session_auth_hash()
        answers.append(None if constant_time_compare(data.get(HASH_SESSION_KEY, ""), hashes[user_id]) else LOGGED_OUT)
    return answers
