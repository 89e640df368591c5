"""The SFU room lifecycle in the database (media.sfu): one room per session, destroyed once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from media import sfu
from media.models import JanusNode, SfuRoom
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


# --- several nodes: health and moving rooms ------------------------------------------------------


def test_a_node_marked_down_gets_no_new_sessions_until_it_answers_again(clinic):
    assert sfu.note_health(NODES[0], False) == sfu.DOWN
    assert sfu.note_health(NODES[0], False) is None  # already down: nothing changes, nobody moves twice

    first = sfu.claim_room(clinic.session.pk, NODES)
    assert first.node == NODES[1]  # the least loaded node (0 rooms) is down: the other one gets it

    assert sfu.note_health(NODES[0], True) == sfu.UP
    assert sfu.note_health(NODES[0], True) is None
    assert sfu.claim_room(clinic.other_session.pk, NODES).node == NODES[0]


def test_a_healthy_verdict_on_a_node_never_marked_down_writes_nothing(clinic, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert sfu.note_health(NODES[0], True) is None
    assert not JanusNode.objects.exists()


def test_when_every_node_is_down_a_session_still_gets_one_of_them(clinic):
    for node in NODES:
        sfu.note_health(node, False)

    assert sfu.usable_nodes(NODES) == NODES
    assert sfu.claim_room(clinic.session.pk, NODES).node == NODES[0]


def test_move_rooms_off_re_pins_the_live_rooms_of_a_down_node_with_new_room_ids(clinic):
    first = sfu.claim_room(clinic.session.pk, [NODES[0]])
    second = sfu.claim_room(clinic.other_session.pk, [NODES[0]])
    sfu.mark_opened(clinic.session.pk)
    sfu.note_health(NODES[0], False)

    moved = sfu.move_rooms_off(NODES[0], NODES)

    assert set(moved) == {clinic.session.pk, clinic.other_session.pk}
    now_first, now_second = (sfu.claim_room(s.pk, NODES) for s in (clinic.session, clinic.other_session))
    assert (now_first.node, now_second.node) == (NODES[1], NODES[1])
    assert now_first.room != first.room and now_second.room != second.room
    assert now_first.secret == first.secret  # the secret stays: it never left the server
    assert SfuRoom.objects.get(session=clinic.session).opened_at is None  # to be created on the new node
    assert JanusNode.objects.get(url=NODES[0]).moved_rooms == 2
    assert sfu.move_rooms_off(NODES[0], NODES) == []  # a second caller finds nothing left to move


def test_move_rooms_off_leaves_destroyed_rooms_and_other_nodes_alone(clinic):
    sfu.claim_room(clinic.session.pk, NODES)  # node a
    sfu.claim_room(clinic.other_session.pk, NODES)  # node b
    sfu.release_room(clinic.session.pk)

    assert sfu.move_rooms_off(NODES[0], NODES) == []
    assert sfu.move_rooms_off(NODES[1], NODES) == [clinic.other_session.pk]
    assert SfuRoom.objects.get(session=clinic.other_session).node == NODES[0]


def test_move_rooms_off_keeps_rooms_where_they_are_when_no_other_node_is_up(clinic):
    claimed = sfu.claim_room(clinic.session.pk, NODES)
    for node in NODES:
        sfu.note_health(node, False)

    assert sfu.move_rooms_off(claimed.node, NODES) == []
    assert sfu.claim_room(clinic.session.pk, NODES) == claimed


def test_admin_shows_node_health_and_room_placement_read_only_without_the_secret(clinic, client):
    from tests.rooms.test_admin import make_superuser

    claimed = sfu.claim_room(clinic.session.pk, NODES)
    sfu.note_health(NODES[1], False)
    client.force_login(make_superuser())

    nodes = client.get("/admin/media/janusnode/")
    rooms = client.get("/admin/media/sfuroom/")
    room = client.get(f"/admin/media/sfuroom/{SfuRoom.objects.get().pk}/change/")

    assert nodes.status_code == rooms.status_code == room.status_code == 200
    assert NODES[1] in nodes.text and "down" in nodes.text
    assert NODES[0] in rooms.text
    assert claimed.secret not in room.text and claimed.room not in room.text
    assert client.get("/admin/media/janusnode/add/").status_code == 403
