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


# --- simulcast layers and bandwidth (a recording subscriber stands in for Janus) ---------------


class RecordingSubscriber:
    def __init__(self) -> None:
        self.configured: list[list[dict]] = []

    async def configure_streams(self, streams: list[dict]) -> None:
        self.configured.append(streams)


def subscribed_link(notified: list | None = None) -> tuple[b.MemberLink, RecordingSubscriber]:
    member = b.MemberLink(
        None, INFO, "me", lambda handle, event: (notified if notified is not None else []).append(event)
    )
    subscriber = RecordingSubscriber()
    member.sub.subscriber = subscriber
    member.sub.streams = (
        b.Stream("0", "ann", "audio"),
        b.Stream("1", "ann", "video"),
        b.Stream("2", "bob", "audio"),
        b.Stream("3", "bob", "video"),
    )
    return member, subscriber


async def test_choose_layers_configures_every_video_stream_in_one_request_and_off_pauses_it():
    member, janus = subscribed_link()

    await member.choose_layers({"ann": "high", "bob": "off"})

    assert janus.configured == [[{"mid": "1", "send": True, "substream": 2}, {"mid": "3", "send": False}]]


async def test_choose_layers_only_sends_what_changed():
    member, janus = subscribed_link()
    await member.choose_layers({"ann": "high", "bob": "low"})

    await member.choose_layers({"ann": "high", "bob": "low"})
    await member.choose_layers({"ann": "low", "bob": "low"})

    assert janus.configured[1:] == [[{"mid": "1", "send": True, "substream": 0}]]


async def test_a_low_downlink_estimate_lowers_the_layout():
    member, janus = subscribed_link()

    chosen = await member.choose_layers({"ann": "high", "bob": "low"}, downlink_kbps=500)

    assert chosen == {"ann": "low", "bob": "off"}
    assert janus.configured == [[{"mid": "1", "send": True, "substream": 0}, {"mid": "3", "send": False}]]


async def test_a_slowlink_towards_the_subscriber_lowers_its_layers_then_they_come_back():
    notified: list = []
    member, janus = subscribed_link(notified)
    await member.choose_layers({"ann": "high", "bob": "high"})
    slow = classify({"janus": "slowlink", "sender": 2, "mid": "1", "media": "video", "uplink": False, "lost": 40})

    told = await member.on_event(b.SUBSCRIBER, slow)

    assert told == [b.LinkState(b.SUBSCRIBER, "slowlink", False)]
    assert member.chosen_layers == {"ann": "low", "bob": "low"}  # (2 x 1200 + 80) / 2 = 1240 kbps
    assert janus.configured[-1] == [
        {"mid": "1", "send": True, "substream": 0},
        {"mid": "3", "send": True, "substream": 0},
    ]
    # When the cap runs out the link is told to look again (through the connection's own queue).
    member.budget.slow_until = 0
    await member.on_event(b.SUBSCRIBER, b.JanusEvent(b.LAYERS_DUE, None))
    assert member.chosen_layers == {"ann": "high", "bob": "high"}


async def test_a_slowlink_on_the_publisher_side_leaves_the_subscription_alone():
    member, janus = subscribed_link()
    await member.choose_layers({"ann": "high", "bob": "high"})
    slow = classify({"janus": "slowlink", "sender": 1, "mid": "1", "media": "video", "uplink": True, "lost": 40})

    await member.on_event(b.PUBLISHER, slow)

    assert member.chosen_layers == {"ann": "high", "bob": "high"} and len(janus.configured) == 1
