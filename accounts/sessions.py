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
