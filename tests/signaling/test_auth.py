"""The handshake's user (signaling.auth): the same answer as Django's ``auth.get_user`` in every case,
the common one read without the ORM on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.contrib import auth
from django.contrib.sessions.models import Session as StoredSession
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role, User
from signaling import auth as handshake_auth

pytestmark = pytest.mark.django_db


def _store(key):
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)


def _login(user, **extra) -> str:
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    if extra:
        session = _store(key)
        session.update(extra)
        session.save()
    return key


def _fields(user) -> dict:
    return {f.attname: getattr(user, f.attname) for f in User._meta.concrete_fields}


def _both(key):
    """(our answer, Django's answer), each from a fresh session store as the handshake has."""
    ours = handshake_auth._user_of(_store(key))
    django = auth.get_user(SimpleNamespace(session=_store(key)))
    return ours, django


@pytest.fixture
def pat(db):
    return User.objects.create_user(username="pat", password="pw-pat-123456", role=Role.PARTICIPANT)


def test_a_current_login_is_the_same_user_as_django_reads(pat):
    key = _login(pat)

    ours, django = _both(key)

    assert ours.is_authenticated and django.is_authenticated
    assert _fields(ours) == _fields(django)
    assert ours._state.adding is False and ours._state.db == "default"


def test_the_common_login_on_postgresql_sends_no_orm_query(pat, require_postgres):
    key = _login(pat)
    store = _store(key)

    with CaptureQueriesContext(connection) as queries:
        user = handshake_auth._user_of(store)

    assert user.pk == pat.pk
    assert queries.captured_queries == []  # two prepared statements on psycopg's connection instead


def _expire(key):
    StoredSession.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))


def _deactivate(user):
    User.objects.filter(pk=user.pk).update(is_active=False)


def _change_password(user):
    user.set_password("a-new-password-456")
    user.save()


def _corrupt(key):
    StoredSession.objects.filter(session_key=key).update(session_data="not-signed-data")


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda pat, key: StoredSession.objects.filter(session_key=key).delete(), id="logged-out"),
        pytest.param(lambda pat, key: _expire(key), id="expired"),
        pytest.param(lambda pat, key: _deactivate(pat), id="inactive"),
        pytest.param(lambda pat, key: User.objects.filter(pk=pat.pk).delete(), id="deleted-user"),
        pytest.param(lambda pat, key: _change_password(pat), id="password-changed"),
        pytest.param(lambda pat, key: _corrupt(key), id="corrupted-data"),
    ],
)
def test_every_kind_of_stale_login_is_anonymous_as_in_django(pat, spoil):
    key = _login(pat)
    assert handshake_auth._user_of(_store(key)).pk == pat.pk  # (the login was good before)
    spoil(pat, key)

    ours, django = _both(key)

    assert not ours.is_authenticated
    assert not django.is_authenticated


def test_no_session_key_is_anonymous(pat):
    assert not handshake_auth._user_of(_store(None)).is_authenticated


def test_a_password_change_flushes_the_session_as_django_does(pat):
    # A hash that does not match is Django's to handle (it flushes the session): the fast path defers.
    key = _login(pat)
    _change_password(pat)

    assert not handshake_auth._user_of(_store(key)).is_authenticated
    assert not StoredSession.objects.filter(session_key=key).exists()


def test_a_login_under_a_retired_secret_is_kept_and_its_session_rotated(pat):
    # Logged in under the old SECRET_KEY, now listed in SECRET_KEY_FALLBACKS: Django keeps the login
    # and moves the session to a new key with the current hash; so must the handshake.
    old, new = "old-secret-" + "x" * 50, "new-secret-" + "y" * 50
    with override_settings(SECRET_KEY=old):
        key = _login(pat)
    with override_settings(SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old]):
        store = _store(key)
        user = handshake_auth._user_of(store)
        assert user.pk == pat.pk
        assert store.session_key != key  # cycled, as auth.get_user does


def test_a_login_through_another_backend_is_djangos_to_decide(pat):
    other = "django.contrib.auth.backends.AllowAllUsersModelBackend"
    key = _login(pat, **{auth.BACKEND_SESSION_KEY: other})

    # Not a configured backend: anonymous, as in Django.
    assert not handshake_auth._user_of(_store(key)).is_authenticated
    with override_settings(AUTHENTICATION_BACKENDS=[handshake_auth.MODEL_BACKEND, other]):
        _deactivate(pat)
        # Configured: that backend answers (it lets inactive users in; ModelBackend would not).
        ours, django = _both(key)
        assert ours.is_authenticated and django.is_authenticated and ours.pk == django.pk == pat.pk


def test_the_handshakes_login_leaves_nothing_for_the_periodic_check_to_decode_or_hash(
    pat, monkeypatch, require_postgres
):
    from accounts import sessions

    monkeypatch.setattr(sessions._Decoded, "sessions", {})
    monkeypatch.setattr(sessions._Decoded, "hashes", {})
    key = _login(pat)
    assert handshake_auth._user_of(_store(key)) == pat
    work = []
    monkeypatch.setattr(
        type(_store(key)), "decode", lambda store, data: work.append("decode") or pytest.fail("decoded again")
    )
    monkeypatch.setattr(User, "get_session_auth_hash", lambda user: work.append("hash") or "")

    # The connection's first survey finds its session decoded and its hash computed already.
    assert sessions.login_problems([(pat.pk, key)]) == [None]
    assert work == []


def test_logins_looked_up_together_answer_each_as_django_does_in_two_round_trips(pat, monkeypatch):
    from rooms import pg

    sam = User.objects.create_user(username="sam", password="pw-sam-123456", role=Role.PARTICIPANT)
    current, other, expired, stale = _login(pat), _login(sam), _login(pat), _login(pat)
    _expire(expired)
    stores = [_store(current), _store(None), _store(other), _store(expired)]
    trips = []
    original = pg.run
    monkeypatch.setattr(pg, "run", lambda calls, **kw: trips.append(len(calls)) or original(calls, **kw))

    users = handshake_auth._users_of(stores)

    assert [u.pk for u in users] == [pat.pk, None, sam.pk, None]
    assert [u.is_authenticated for u in users] == [True, False, True, False]
    if connection.vendor == "postgresql":
        assert trips == [3, 2]  # every session row (three had a key), then every user row (two logins)
    # One that only Django can decide (a hash from before a password change) among them: flushed by it.
    _change_password(pat)
    users = handshake_auth._users_of([_store(stale), _store(other)])
    assert [u.is_authenticated for u in users] == [False, True]
    assert not StoredSession.objects.filter(session_key=stale).exists()
