"""accounts.sessions: is a login still valid, asked for many connections at once, with a cache."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from accounts import sessions
from accounts.models import Role, User
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(sessions._Decoded, "sessions", {})
    monkeypatch.setattr(sessions._Decoded, "hashes", {})
    monkeypatch.setattr(sessions._Decoded, "pruned_at", 0.0, raising=False)


@pytest.fixture
def counted(monkeypatch):
    """How many times session data was decoded and auth hashes computed."""
    counts = {"decode": 0, "hash": 0}
    decode, auth_hash = SessionStore.decode, User.get_session_auth_hash

    def counting_decode(store, data):
        counts["decode"] += 1
        return decode(store, data)

    def counting_hash(user):
        counts["hash"] += 1
        return auth_hash(user)

    monkeypatch.setattr(SessionStore, "decode", counting_decode)
    monkeypatch.setattr(User, "get_session_auth_hash", counting_hash)
    return counts


def logged_in(user: User) -> tuple[object, str]:
    client = Client()
    client.force_login(user)
    return user.pk, client.session.session_key


def test_the_batch_answers_what_login_problem_answers_one_by_one():
    ok = logged_in(make_user())
    logged_out = logged_in(make_user())
    SessionStore(session_key=logged_out[1]).delete()
    disabled = logged_in(make_user())
    User.objects.filter(pk=disabled[0]).update(is_active=False)
    new_password = logged_in(make_user(Role.THERAPIST))
    user = User.objects.get(pk=new_password[0])
    user.set_password("another long passphrase")
    user.save()
    someone_elses = (make_user().pk, ok[1])
    no_key = (ok[0], None)
    logins = [ok, logged_out, disabled, new_password, someone_elses, no_key]

    answers = sessions.login_problems(logins)

    assert answers == [sessions.login_problem(user_id, key) for user_id, key in logins]
    out, inactive = sessions.LOGGED_OUT, sessions.INACTIVE
    assert answers == [None, out, inactive, out, out, out]


def test_each_session_is_decoded_and_hashed_once_across_chunks_and_rounds(counted):
    logins = [logged_in(make_user()) for _ in range(6)]
    counted.update(decode=0, hash=0)

    for _ in range(3):  # three survey rounds, each asking in two chunks (as signaling.watch does)
        assert sessions.login_problems(logins[:3]) == [None] * 3
        assert sessions.login_problems(logins[3:]) == [None] * 3

    assert counted == {"decode": 6, "hash": 6}


def test_a_changed_session_or_password_is_worked_out_again(counted):
    first, second = logged_in(make_user()), logged_in(make_user())
    assert sessions.login_problems([first, second]) == [None, None]

    store = SessionStore(session_key=first[1])
    store["theme"] = "dark"
    store.save()
    user = User.objects.get(pk=second[0])
    user.set_password("another long passphrase")
    user.save()
    counted.update(decode=0, hash=0)

    assert sessions.login_problems([first, second]) == [None, "auth.logged_out"]
    assert counted == {"decode": 1, "hash": 1}  # the changed session; the changed password


def test_entries_not_asked_about_for_a_while_are_dropped(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(sessions, "clock", lambda: now[0])
    kept, closed = logged_in(make_user()), logged_in(make_user())
    sessions.login_problems([kept, closed])

    now[0] += sessions.KEEP_SECONDS + 1
    sessions.login_problems([kept])

    assert set(sessions._Decoded.sessions) == {kept[1]}
    assert set(sessions._Decoded.hashes) == {kept[0]}
