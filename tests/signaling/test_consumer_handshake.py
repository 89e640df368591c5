"""Handshake: who may open a session socket, what they are told first, and refusals (403 + audit)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from media.turn import turn_password
from rooms import live as live_domain
from rooms.models import AdmissionPolicy, AuditAction, SessionRemoval
from tests.factories import make_live_clinic
from tests.signaling.helpers import audit, frame, member, room, welcome
from tests.signaling.test_asgi import websocket_handshake_status
from tests.telehealth.names import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED = AuditAction.HANDSHAKE_REFUSED


async def test_handshake_anonymous_refused_and_audited(live, sockets):
    accepted, _, _ = await sockets.connect(None, live.session)

    assert accepted is False
    assert await audit(REFUSED) == [(live.session.pk, None, None, "auth.required")]


async def test_handshake_with_a_login_from_before_a_password_change_refused(live, sockets):
    # The session cookie still names the user, but its auth hash no longer matches: logged out.
    session_key = await sockets.login(live.pat)

    def change_password():
        live.pat.set_password("a-new-password-123")
        live.pat.save()

    await sync_to_async(change_password)()

    accepted, _, _ = await sockets.connect(live.pat, live.session, session_key=session_key)

    assert accepted is False
    assert await audit(REFUSED) == [(live.session.pk, None, None, "auth.required")]


@pytest.mark.parametrize("subprotocols", [(), ("telehealth.v2",), ("chat", "json")], ids=["none", "v2", "other"])
async def test_handshake_without_protocol_version_refused_and_audited(live, sockets, subprotocols):
    accepted, _, _ = await sockets.connect(live.pat, live.session, subprotocols=subprotocols)

    assert accepted is False
    assert await audit(REFUSED) == [(live.session.pk, live.pat.pk, None, "protocol.subprotocol")]


@pytest.mark.parametrize("who", ["outsider", "outsider_therapist"])
async def test_handshake_not_on_roster_refused_and_audited(live, sockets, who):
    user = getattr(live, who)

    accepted, _, _ = await sockets.connect(user, live.session)

    assert accepted is False
    assert await audit(REFUSED) == [(live.session.pk, user.pk, None, "roster.not_member")]


async def test_handshake_removed_person_refused_and_audited(live, sockets):
    await sync_to_async(SessionRemoval.objects.create)(session=live.session, user=live.pat, removed_by=live.lead)

    accepted, _, _ = await sockets.connect(live.pat, live.session)

    assert accepted is False
    assert await audit(REFUSED) == [(live.session.pk, live.pat.pk, None, "session.removed")]


async def test_handshake_before_lobby_opens_refused_and_audited(transactional_db, sockets):
    later = await sync_to_async(make_live_clinic)(timezone.now(), starts_in=timedelta(hours=1))

    accepted, _, _ = await sockets.connect(later.pat, later.session)
    therapist_accepted, _, _ = await sockets.connect(later.lead, later.session)

    assert (accepted, therapist_accepted) == (False, False)
    assert await audit(REFUSED) == [
        (later.session.pk, later.pat.pk, None, "session.not_open"),
        (later.session.pk, later.lead.pk, None, "session.not_open"),
    ]


async def test_handshake_unknown_session_refused_and_audited(live, sockets):
    accepted, _, _ = await sockets.connect(live.pat, path=f"/ws/sessions/{uuid.uuid4()}/")

    assert accepted is False
    assert await audit(REFUSED) == [(None, live.pat.pk, None, "session.not_found")]


async def test_handshake_malformed_session_id_refused(live, sockets):
    accepted, _, _ = await sockets.connect(live.pat, path="/ws/sessions/not-a-uuid/")

    assert accepted is False


async def test_handshake_participant_welcome_shows_room_with_display_names(live, sockets):
    lead, lead_hello = await sockets.enter(live.lead, live.session)

    pat = await sockets.open(live.pat, live.session)
    hello = await pat.recv()

    assert hello == welcome(
        hello,
        role="participant",
        room=room(
            [member(lead_hello["member"], "Lee L.", "moderator"), member(hello["member"], "Pat P.")],
        ),
    )
    assert await lead.recv() == frame("member.joined", sender=hello["member"], member=member(hello["member"], "Pat P."))
    assert hello["member"] != str(live.pat.pk)
    await pat.quiet()
    assert await audit(AuditAction.JOINED) == [
        (live.session.pk, live.lead.pk, None, "direct"),
        (live.session.pk, live.pat.pk, None, "auto"),
    ]


async def test_handshakes_at_once_are_joined_in_batches_and_each_is_welcomed_to_the_room_so_far(
    live, sockets, monkeypatch
):
    # While one join call runs in the database thread, the joins that arrive wait and go together in
    # the next (signaling.batches, rooms.live.join_many). The first call is held a moment so they do.
    calls: list[int] = []
    original = live_domain.join_many

    def held_first(joins, **kwargs):
        calls.append(len(joins))
        if len(calls) == 1:
            time.sleep(0.3)
        return original(joins, **kwargs)

    monkeypatch.setattr(live_domain, "join_many", held_first)
    people = [live.lead, live.co, live.pat, live.sam, live.kim]

    entered = await asyncio.gather(*(sockets.enter(person, live.session) for person in people))

    assert sum(calls) == len(people) and len(calls) < len(people), calls
    hellos = [hello for _, hello in entered]
    assert all(h["state"] == "admitted" for h in hellos)
    # Every welcome shows its own member, and the last one decided shows all five.
    rosters = [{m["member"] for m in h["room"]["roster"]} for h in hellos]
    assert all(h["member"] in roster for h, roster in zip(hellos, rosters, strict=True))
    assert max(len(roster) for roster in rosters) == len(people)
    assert sorted(row[1] for row in await audit(AuditAction.JOINED)) == sorted(person.pk for person in people)


async def test_handshake_therapist_gets_waiting_list_after_welcome(live, sockets):
    lead = await sockets.open(live.lead, live.session)

    hello = await lead.recv()
    waiting = await lead.recv()

    assert hello == welcome(hello, role="moderator", room=room([member(hello["member"], "Lee L.", "moderator")]))
    assert waiting == frame("waiting.list", entries=[])


async def test_handshake_clinic_admin_observes(live, sockets):
    admin = await sockets.open(live.admin, live.session)

    hello = await admin.recv()

    assert hello == welcome(hello, role="observer", room=room([member(hello["member"], "Alex A.", "observer")]))
    await admin.quiet()


def test_daphne_refuses_anonymous_session_socket_with_403(daphne, clean_env):
    # The whole path under the real server: a refusal before accept is an HTTP 403.
    database = {"DATABASE_URL": clean_env()["DATABASE_URL"]}
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=clean_env(**database),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrated.returncode == 0, migrated.stderr
    base_url = daphne(**database)

    status = websocket_handshake_status(base_url, f"/ws/sessions/{uuid.uuid4()}/", "http://127.0.0.1")

    assert status == 403


async def test_handshake_welcome_carries_ice_servers_from_settings(live, sockets, settings):
    settings.ICE_SERVERS = [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"},
    ]

    _, hello = await sockets.enter(live.pat, live.session)

    assert hello["room"]["ice_servers"] == settings.ICE_SERVERS


async def test_admitted_members_get_turn_credentials_of_their_own_valid_to_the_session_end(live, sockets, settings):
    settings.ICE_SERVERS = [{"urls": ["stun:stun.example.org:3478"]}]
    settings.TURN_URLS = ["turn:turn.example.org:3478?transport=udp"]
    settings.TURN_SECRET = "s" * 40
    settings.TURN_TTL_MARGIN = 3600
    live.session.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
    await sync_to_async(live.session.save)()

    lead, lead_hello = await sockets.enter(live.lead, live.session)
    pat, pat_hello = await sockets.enter(live.pat, live.session)
    await lead.recv_type("waiting.list")
    await lead.send("mod.admit", {"member": pat_hello["member"]})
    admitted = await pat.recv_type("admitted")

    stun, lead_turn = lead_hello["room"]["ice_servers"]
    pat_turn = admitted["room"]["ice_servers"][1]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert pat_hello["room"] is None  # nothing for someone waiting, credentials included
    assert lead_turn["urls"] == pat_turn["urls"] == settings.TURN_URLS
    for hello, credential in ((lead_hello, lead_turn), (pat_hello, pat_turn)):
        expiry, pseudonym = credential["username"].split(":")
        assert int(expiry) >= live.session.ends_at.timestamp() + 3600  # the session's end plus the margin
        assert hello["member"] not in pseudonym  # coturn logs usernames: opaque, not the member id
        assert credential["credential"] == turn_password(settings.TURN_SECRET, credential["username"])
    assert lead_turn["username"] != pat_turn["username"]
