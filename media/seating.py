"""Logins for synthetic participants: users on a session's roster, and browser-like session cookies.

A synthetic participant authenticates exactly like a browser: a Django session row holding the
user's id, backend and auth hash, sent as the ``sessionid`` cookie. Nothing here bypasses the
access decision: the users are put on the roster the normal way (an enrollment in the session's
track, or an explicit roster line) and then go through the waiting room like anyone else.

Used by ``manage.py drop_synthetic_participants`` (a live demo or a capacity check) and the tests.
Synthetic users are named ``synthetic-<random>``, have no usable password, and are marked in
their last name, so a clinic never mistakes them for people.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.db import transaction

from accounts.models import Role, User
from rooms.models import Enrollment, RosterEntry, Session

BACKEND = "django.contrib.auth.backends.ModelBackend"


@dataclass(frozen=True)
class SyntheticLogin:
    user_id: str
    username: str
    display_name: str
    cookie: str  # the sessionid cookie value


def login_cookie(user: User, *, lifetime: timedelta = timedelta(hours=12)) -> str:
    """A fresh Django session for ``user`` (as if they had logged in); returns its key."""
    store = SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = BACKEND
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.set_expiry(int(lifetime.total_seconds()))
    store.create()
    return store.session_key


def enlist_synthetic(session_id: str, count: int, *, now: datetime) -> list[SyntheticLogin]:
    """Create ``count`` synthetic participants on the session's roster and log each one in.

    Track-roster sessions (groups) get an enrollment covering the session's date; others an
    explicit roster line. Raises Session.DoesNotExist for an unknown id.
    """
    if not 1 <= count <= 50:
        raise ValueError("count must be between 1 and 50")
    logins = []
    with transaction.atomic():
        session = Session.objects.select_related("room__program").get(pk=session_id)
        day = min(session.local_date(), now.date())
        for _ in range(count):
            tag = secrets.token_hex(3)
            user = User(
                username=f"synthetic-{tag}",
                first_name="Synthetic",
                last_name=f"{tag} (synthetic)",
                role=Role.PARTICIPANT,
                alias=f"Synthetic {tag}",  # what the room shows: never mistaken for a person
                alias_approved=True,
            )
            user.set_unusable_password()
            user.save()
            if session.uses_track_roster:
                Enrollment.objects.create(participant=user, track=session.track, start_date=day - timedelta(days=1))
            else:
                RosterEntry.objects.create(session=session, participant=user)
            logins.append(SyntheticLogin(str(user.pk), user.username, user.display_name, login_cookie(user)))
    return logins
