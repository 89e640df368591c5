"""The SFU room lifecycle in the database (media.sfu): one room per session, destroyed once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from media import sfu
from media.models import SfuRoom
from rooms import live
from rooms.models import SessionStatus
from tests.factories import make_live_clinic

NODES = ["ws://janus-a:8188", "ws://janus-b:8188"]


@pytest.fixture
def clinic(db):
    return make_live_clinic(timezone.now())


def test_claim_room_makes_one_room_per_session_and_returns_it_again(clinic):
    first = sfu.claim_room(clinic.session.pk, NODES)
    again = sfu.claim_room(clinic.session.pk, NODES)

    assert again == first
    assert SfuRoom.objects.filter(session=clinic.session).count() == 1
    assert len(first.room) == 24 and len(first.secret) >= 32
    assert first.publishers == clinic.session.room.capacity + sfu.STAFF_PUBLISHERS
    assert first.secret not in repr(first) and first.secret not in str(SfuRoom.objects.get())


def test_claim_room_places_a_new_session_on_the_least_loaded_node(clinic):
    first = sfu.claim_room(clinic.session.pk, NODES)
    second = sfu.claim_room(clinic.other_session.pk, NODES)

    assert (first.node, second.node) == (NODES[0], NODES[1])
    assert first.room != second.room


def test_claim_room_refused_for_an_ended_session(clinic):
    clinic.session.status = SessionStatus.ENDED
    clinic.session.save()

    with pytest.raises(sfu.SfuRoomError) as refused:
        sfu.claim_room(clinic.session.pk, NODES)

    assert refused.value.code == "sfu.session_ended"
    assert not SfuRoom.objects.exists()


def test_claim_room_refused_after_the_scheduled_end(clinic):
    with pytest.raises(sfu.SfuRoomError):
        sfu.claim_room(clinic.session.pk, NODES, now=clinic.session.ends_at + timedelta(seconds=1))


def test_release_room_hands_the_room_to_one_caller_only(clinic):
    claimed = sfu.claim_room(clinic.session.pk, NODES)
    now = timezone.now()

    first = sfu.release_room(clinic.session.pk, now=now)
    second = sfu.release_room(clinic.session.pk, now=now)

    assert first == claimed and second is None
    assert SfuRoom.objects.get().destroyed_at == now
    with pytest.raises(sfu.SfuRoomError):
        sfu.claim_room(clinic.session.pk, NODES)  # a destroyed room is never made again


def test_ended_rooms_lists_live_rooms_of_sessions_that_are_over(clinic):
    sfu.claim_room(clinic.session.pk, NODES)
    sfu.claim_room(clinic.other_session.pk, NODES)
    lead = live.join(clinic.session.pk, clinic.lead)
    live.end(live.Actor(clinic.session.pk, clinic.lead.pk, lead.epoch))

    assert sfu.ended_rooms() == [clinic.session.pk]
    assert set(sfu.ended_rooms(now=clinic.other_session.ends_at)) == {clinic.session.pk, clinic.other_session.pk}


def test_one_room_per_session_is_a_database_constraint(clinic):
    sfu.claim_room(clinic.session.pk, NODES)

    with pytest.raises(IntegrityError):
        SfuRoom.objects.create(
            session=clinic.session, node=NODES[0], janus_room="x", secret="y", publishers=4, created_at=timezone.now()
        )
