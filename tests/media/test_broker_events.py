"""MemberLink's reading of Janus events, fed recorded messages (no Janus process needed)."""

from __future__ import annotations

from media import broker as b
from media.janus import classify
from media.sfu import RoomInfo

INFO = RoomInfo("session", "ws://127.0.0.1:8188", "room", "secret", 19)


def link() -> b.MemberLink:
    return b.MemberLink(None, INFO, "me", lambda handle, event: None)  # no Janus call is made below


def event(data: dict) -> object:
    return classify({"janus": "event", "sender": 1, "plugindata": {"data": {"videoroom": "event", **data}}})


async def test_on_event_new_and_departed_publishers_update_the_feeds():
    member = link()

    joined = await member.on_event(b.PUBLISHER, event({"publishers": [{"id": "ann"}, {"id": "me"}, {"id": 7}]}))
    feeds = set(member.feeds)
    left = await member.on_event(b.PUBLISHER, event({"unpublished": "ann"}))

    assert joined == [] and left == []  # nothing subscribed yet: no offer
    assert feeds == {"ann"}  # not ourselves, not a malformed id
    assert member.feeds == set()


async def test_on_event_talking_becomes_talking_output():
    member = link()
    talking = classify({"janus": "event", "sender": 1, "plugindata": {"data": {"videoroom": "talking", "id": "ann"}}})
    stopped = classify(
        {"janus": "event", "sender": 1, "plugindata": {"data": {"videoroom": "stopped-talking", "id": "ann"}}}
    )

    assert await member.on_event(b.PUBLISHER, talking) == [b.Talking("ann", True)]
    assert await member.on_event(b.PUBLISHER, stopped) == [b.Talking("ann", False)]


async def test_on_event_kicked_self_is_link_down_and_kicked_other_is_a_departure():
    member = link()
    member.feeds = {"ann"}

    other = await member.on_event(b.PUBLISHER, event({"leaving": "ann", "reason": "kicked"}))
    me = await member.on_event(b.PUBLISHER, event({"leaving": "ok", "reason": "kicked"}))

    assert other == [] and member.feeds == set()
    assert me == [b.LinkState(b.PUBLISHER, "down")]


async def test_on_event_slowlink_and_hangup_are_reported_per_handle():
    member = link()
    slow = classify({"janus": "slowlink", "sender": 1, "mid": "1", "media": "video", "uplink": True, "lost": 9})
    hangup = classify({"janus": "hangup", "sender": 2, "reason": "DTLS alert"})

    assert await member.on_event(b.PUBLISHER, slow) == [b.LinkState(b.PUBLISHER, "slowlink", True)]
    assert await member.on_event(b.SUBSCRIBER, hangup) == [b.LinkState(b.SUBSCRIBER, "hangup")]


async def test_on_event_after_close_says_nothing():
    member = link()
    member.closed = True

    assert await member.on_event(b.PUBLISHER, event({"publishers": [{"id": "ann"}]})) == []


def test_mids_of_an_answer_per_kind():
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"

    assert b._mids(sdp) == {"audio": ["0"], "video": ["1"]}
