"""The Janus config generator and the Janus client, against a real Janus (Debian's janus 1.1.2).

Each test starts its own Janus from the generated config (``janus`` fixture) and drives it only
through ``media.janus``; media comes from aiortc peers publishing the synthetic clip.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
import time

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from django.core.management import call_command

from media import janusconf
from media.janus import (
    UNAUTHORIZED,
    VIDEOROOM_MISSING_ELEMENT,
    VIDEOROOM_NO_SUCH_FEED,
    VIDEOROOM_NO_SUCH_ROOM,
    VIDEOROOM_UNAUTHORIZED,
    JanusClient,
    JanusError,
    JanusEvent,
    Publisher,
    RoomSpec,
    Subscriber,
    VideoRoomAdmin,
    classify,
)
from media.synthetic import Received, ToneTrack, add_clip_tracks
from tests.media.rtc import wait_for

pytestmark = pytest.mark.media

SECRET = "a" * 32
KEY = "b" * 32


# --- the generated config (pure) -----------------------------------------------------------------


def rendered(**changes) -> dict[str, str]:
    conf = janusconf.JanusConf(api_secret=SECRET, admin_key=KEY, **changes)
    return janusconf.render(conf, janusconf.Path("/srv/janus"))


def test_janusconf_websocket_api_only_on_given_address_with_secrets():
    files = rendered(ws_ip="127.0.0.1", ws_port=8190, rtp_port_range=(30000, 30099))

    janus, ws, videoroom = (
        files["janus.jcfg"],
        files["janus.transport.websockets.jcfg"],
        files["janus.plugin.videoroom.jcfg"],
    )
    assert f'api_secret = "{SECRET}"' in janus
    assert 'rtp_port_range = "30000-30099"' in janus
    assert re.search(r'transports: \{\n(\t#.*\n)*\tdisable = "[^"]*libjanus_http\.so', janus)
    assert not re.search(r"^\s*http\s*=", "".join(files.values()), re.MULTILINE)  # crashed 1.1.2 at start
    assert 'ws_ip = "127.0.0.1"' in ws and "ws_port = 8190" in ws
    assert "wss = false" in ws and "admin_ws = false" in ws
    assert f'admin_key = "{KEY}"' in videoroom
    assert "room-" not in videoroom  # no demo rooms


def test_janusconf_disables_every_plugin_but_videoroom():
    janus = rendered()["janus.jcfg"]

    disabled = re.search(r'plugins: \{\n\tdisable = "([^"]*)"', janus).group(1).split(",")
    assert "libjanus_videoroom.so" not in disabled
    assert {"libjanus_streaming.so", "libjanus_echotest.so", "libjanus_audiobridge.so"} <= set(disabled)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"api_secret": "short"}, id="short-api-secret"),
        pytest.param({"admin_key": "k" * 30 + '"\nadmin_key = "x'}, id="quote-injection"),
        pytest.param({"ws_ip": "localhost"}, id="not-an-ip"),
        pytest.param({"rtp_port_range": (40000, 30000)}, id="backwards-range"),
    ],
)
def test_janusconf_refuses_unsafe_values(changes):
    values = {"api_secret": SECRET, "admin_key": KEY} | changes
    with pytest.raises(ValueError):
        janusconf.render(janusconf.JanusConf(**values), janusconf.Path("/srv/janus"))


def test_janusconf_command_writes_private_files_with_secrets_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("JANUS_API_SECRET", SECRET)
    (tmp_path / "key").write_text(KEY + "\n")
    monkeypatch.setenv("JANUS_ADMIN_KEY_FILE", str(tmp_path / "key"))

    call_command("janusconf", str(tmp_path / "conf"), "--ws-port", "8299", "--rtp-ports", "31000-31099")

    names = sorted(p.name for p in (tmp_path / "conf").iterdir())
    assert names == ["janus.jcfg", "janus.plugin.videoroom.jcfg", "janus.transport.websockets.jcfg"]
    assert all((tmp_path / "conf" / name).stat().st_mode & 0o077 == 0 for name in names)
    assert f'admin_key = "{KEY}"' in (tmp_path / "conf" / "janus.plugin.videoroom.jcfg").read_text()


def test_janus_started_from_config_listens_on_loopback_only(janus):
    text = janus.log.read_text()
    assert "Transport plugin 'libjanus_http.so' has been disabled" in text
    assert "VideoRoom will use alphanumeric IDs" in text
    if shutil.which("ss"):
        sockets = subprocess.run(["ss", "-Hltunp"], capture_output=True, text=True, check=True).stdout
        mine = [line.split()[4] for line in sockets.splitlines() if f"pid={janus.process.pid}," in line]
        assert mine and all(address.startswith("127.0.0.1:") for address in mine), mine


# --- event classification (pure) -------------------------------------------------------------------


def plugin_event(**data) -> dict:
    return {"janus": "event", "sender": 1, "plugindata": {"plugin": "janus.plugin.videoroom", "data": data}}


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (plugin_event(videoroom="event", publishers=[]), "publishers"),
        (plugin_event(videoroom="event", unpublished="a"), "unpublished"),
        (plugin_event(videoroom="event", leaving="a"), "leaving"),
        (plugin_event(videoroom="event", leaving="ok", reason="kicked"), "kicked"),
        (plugin_event(videoroom="talking", id="a"), "talking"),
        (plugin_event(videoroom="destroyed"), "destroyed"),
        ({"janus": "slowlink", "sender": 1, "mid": "1", "media": "video", "uplink": True, "lost": 9}, "slowlink"),
        ({"janus": "hangup", "sender": 1, "reason": "DTLS alert"}, "hangup"),
        ({"janus": "webrtcup", "sender": 1}, "webrtcup"),
    ],
)
def test_classify_maps_janus_pushes_to_event_kinds(message, kind):
    event = classify(message)

    assert event.kind == kind
    assert event.handle_id == 1


# --- the API against a real Janus ------------------------------------------------------------------


async def test_janus_wrong_api_secret_is_refused(janus):
    async with JanusClient(janus.url, "not-the-secret") as client:
        with pytest.raises(JanusError) as refused:
            await client.create_session()

    assert refused.value.code == UNAUTHORIZED


async def test_videoroom_create_and_destroy_room(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        session = await client.create_session()
        admin = await VideoRoomAdmin.open(session, janus.admin_key)
        spec = RoomSpec(room=secrets.token_hex(8), secret=secrets.token_urlsafe(16))

        created = await admin.create_room(spec)
        existed = await admin.exists(spec.room)
        destroyed = await admin.destroy_room(spec.room, spec.secret)
        exists_after = await admin.exists(spec.room)
        with pytest.raises(JanusError) as again:
            await admin.destroy_room(spec.room, spec.secret)
        await session.destroy()

    assert created == {"videoroom": "created", "room": spec.room, "permanent": False}
    assert existed is True
    assert destroyed == {"videoroom": "destroyed", "room": spec.room, "permanent": False}
    assert exists_after is False
    assert again.value.code == VIDEOROOM_NO_SUCH_ROOM


async def test_videoroom_create_without_or_with_wrong_admin_key_is_refused(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        session = await client.create_session()
        handle = await session.attach()
        with pytest.raises(JanusError) as missing:
            await handle.message({"request": "create", "room": "no-key"})
        with pytest.raises(JanusError) as wrong:
            await VideoRoomAdmin(handle, "not-the-admin-key").create_room(RoomSpec("wrong-key", "s" * 16))
        exists = await VideoRoomAdmin(handle, janus.admin_key).exists("wrong-key")
        await session.destroy()

    assert missing.value.code == VIDEOROOM_MISSING_ELEMENT
    assert wrong.value.code == VIDEOROOM_UNAUTHORIZED
    assert exists is False


async def test_videoroom_publisher_token_must_be_allowed(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        control = await client.create_session()
        admin = await VideoRoomAdmin.open(control, janus.admin_key)
        spec = RoomSpec(room=secrets.token_hex(8), secret=secrets.token_urlsafe(16))
        await admin.create_room(spec)
        token = secrets.token_urlsafe(16)
        person = await client.create_session()
        publisher = await Publisher.open(person)

        with pytest.raises(JanusError) as before:
            await publisher.join(spec.room, "member-a", token)
        allowed = await admin.allow(spec.room, spec.secret, [token])
        joined = await publisher.join(spec.room, "member-a", token, display="A")
        await admin.disallow(spec.room, spec.secret, [token])
        late = await Publisher.open(person)
        with pytest.raises(JanusError) as revoked:
            await late.join(spec.room, "member-b", token)
        with pytest.raises(JanusError) as wrong_secret:
            await admin.allow(spec.room, "not-the-room-secret", ["x"])
        await admin.destroy_room(spec.room, spec.secret)
        await person.destroy()
        await control.destroy()

    assert before.value.code == VIDEOROOM_UNAUTHORIZED
    assert allowed == [token]
    assert joined.id == "member-a" and joined.private_id > 0 and joined.publishers == []
    assert revoked.value.code == VIDEOROOM_UNAUTHORIZED
    assert wrong_secret.value.code == VIDEOROOM_UNAUTHORIZED


def subscriber_pc() -> RTCPeerConnection:
    # aiortc's default (balanced) bundle policy answers a Janus multistream offer with the second
    # video m-line unbundled (port 9) and never receives it; max-bundle receives every stream.
    return RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


class Room:
    """A room on Janus with one control session; publishers and subscribers on sessions of their own."""

    def __init__(self, client: JanusClient, admin: VideoRoomAdmin, spec: RoomSpec) -> None:
        self.client, self.admin, self.spec = client, admin, spec
        self.pcs: list[RTCPeerConnection] = []

    @classmethod
    async def create(cls, client: JanusClient, admin_key: str) -> Room:
        control = await client.create_session()
        admin = await VideoRoomAdmin.open(control, admin_key)
        spec = RoomSpec(room=secrets.token_hex(8), secret=secrets.token_urlsafe(16), audio_active_packets=25)
        await admin.create_room(spec)
        return cls(client, admin, spec)

    async def publish(self, member: str, *, tone: bool = False) -> Publisher:
        token = secrets.token_urlsafe(16)
        await self.admin.allow(self.spec.room, self.spec.secret, [token])
        publisher = await Publisher.open(await self.client.create_session())
        await publisher.join(self.spec.room, member, token, display=member)
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        if tone:
            pc.addTrack(ToneTrack())
        add_clip_tracks(pc, audio=not tone)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await publisher.configure(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await publisher.handle.next_event("webrtcup")
        return publisher

    async def subscribe(self, feeds: list[str], private_id: int) -> tuple[Subscriber, Received, dict]:
        subscriber = await Subscriber.open(await self.client.create_session())
        offer, data = await subscriber.subscribe(self.spec.room, feeds, private_id)
        pc = subscriber_pc()
        self.pcs.append(pc)
        received = Received()
        pc.on("track", received.consume)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await subscriber.start(pc.localDescription.sdp)
        return subscriber, received, data

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()
        for session in list(self.client._sessions.values()):
            await session.destroy()


async def test_videoroom_subscriber_decodes_publishers_video_and_audio(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            started = time.monotonic()
            publisher = await room.publish("member-a")
            subscribing = time.monotonic()
            subscriber, received, data = await room.subscribe(["member-a"], publisher.joined.private_id)

            await wait_for(lambda: received.frames["video"] >= 15 and received.frames["audio"] >= 25, 10, "media")
            first_frame = received.first_frame_at["video"] - started
            subscriber_first_frame = received.first_frame_at["video"] - subscribing
            await received.stop()
        finally:
            await room.close()

    assert [(s["type"], s["feed_id"]) for s in data["streams"]] == [("audio", "member-a"), ("video", "member-a")]
    print(f"through Janus: publish to first frame {first_frame:.2f} s, subscribe to it {subscriber_first_frame:.2f} s")
    assert first_frame < 5
    # Janus asks the publisher for a keyframe when a subscriber joins; the replayed clip honours it.
    assert subscriber_first_frame < 1.5


async def test_videoroom_subscribe_needs_a_private_id_of_the_room(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            publisher = await room.publish("member-a")
            stranger = await Subscriber.open(await client.create_session())
            with pytest.raises(JanusError) as no_pvtid:
                await stranger.subscribe(room.spec.room, ["member-a"], private_id=None)
            with pytest.raises(JanusError) as no_feed:
                await stranger.subscribe(room.spec.room, ["nobody"], publisher.joined.private_id)
        finally:
            await room.close()

    assert no_pvtid.value.code == VIDEOROOM_UNAUTHORIZED
    assert no_feed.value.code == VIDEOROOM_NO_SUCH_FEED


async def test_videoroom_kick_stops_forwarding(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            watcher = await room.publish("member-w")
            publisher = await room.publish("member-a")
            subscriber, received, _ = await room.subscribe(["member-a"], watcher.joined.private_id)
            await wait_for(lambda: received.frames["video"] >= 10, 10, "video before the kick")

            await room.admin.kick(room.spec.room, room.spec.secret, "member-a")
            kicked = await publisher.handle.next_event("kicked")
            await publisher.handle.next_event("hangup")
            await asyncio.sleep(0.3)  # frames already in flight
            after_kick = received.frames["video"]
            await asyncio.sleep(1.5)
            later = received.frames["video"]
            participants = await room.admin.participants(room.spec.room)
            await received.stop()
        finally:
            await room.close()

    assert kicked.data["reason"] == "kicked"
    assert later == after_kick  # 1.5 s at 15 fps would be ~22 frames
    assert [p["id"] for p in participants] == ["member-w"]


async def test_videoroom_events_reach_other_publishers(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            watcher = await room.publish("member-w")
            seen: list[JanusEvent] = []
            watcher.handle.add_listener(seen.append)
            speaker = await room.publish("member-s", tone=True)
            published = await watcher.handle.next_event("publishers")
            talking = await watcher.handle.next_event("talking", timeout=10)
            await speaker.leave()
            left = await watcher.handle.next_event("unpublished", "leaving")
        finally:
            await room.close()

    assert [p["id"] for p in published.data["publishers"]] == ["member-s"]
    assert talking.data["id"] == "member-s"
    assert left.data.get("unpublished", left.data.get("leaving")) == "member-s"
    assert {"joining", "publishers", "talking"} <= {event.kind for event in seen}  # notify_joining is on


async def test_janus_keepalive_keeps_session_and_silence_times_out(start_janus):
    node = start_janus(session_timeout=3)
    async with (
        JanusClient(node.url, node.api_secret, keepalive_seconds=1) as kept,
        JanusClient(node.url, node.api_secret, keepalive_seconds=600) as silent,
    ):
        alive = await kept.create_session()
        quiet = await silent.create_session()
        quiet_handle = await quiet.attach()

        timeout = await quiet_handle.next_event("timeout", timeout=10)
        handle = await alive.attach()  # still a valid session
        with pytest.raises(JanusError) as gone:
            await quiet.attach()
        await alive.destroy()

    assert timeout.kind == "timeout" and quiet.timed_out.is_set()
    assert handle.id > 0
    assert gone.value.code == 458  # no such session


async def test_videoroom_moderate_stops_one_stream_at_janus(janus):
    # A hard mute enforced at Janus: the publisher keeps sending audio, nobody receives it.
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            watcher = await room.publish("member-w")
            await room.publish("member-a")
            _, received, data = await room.subscribe(["member-a"], watcher.joined.private_id)
            await wait_for(lambda: received.frames["audio"] >= 25 and received.frames["video"] >= 5, 10, "media")
            audio_mid = next(s["feed_mid"] for s in data["streams"] if s["type"] == "audio")

            await room.admin.moderate(room.spec.room, room.spec.secret, "member-a", audio_mid, mute=True)
            await asyncio.sleep(0.5)
            audio, video = received.frames["audio"], received.frames["video"]
            await asyncio.sleep(1.5)
            muted_audio, still_video = received.frames["audio"] - audio, received.frames["video"] - video
            await room.admin.moderate(room.spec.room, room.spec.secret, "member-a", audio_mid, mute=False)
            await wait_for(lambda: received.frames["audio"] >= audio + muted_audio + 25, 10, "audio after release")
            await received.stop()
        finally:
            await room.close()

    assert muted_audio == 0  # 1.5 s of audio is 75 frames
    assert still_video >= 10  # the camera is not affected


async def test_videoroom_subscription_update_adds_a_late_feed(janus):
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            watcher = await room.publish("member-w")
            await room.publish("member-a")
            subscriber = await Subscriber.open(await client.create_session())
            offer, _ = await subscriber.subscribe(room.spec.room, ["member-a"], watcher.joined.private_id)
            pc = subscriber_pc()
            room.pcs.append(pc)
            per_track: list[tuple[str, Received]] = []  # (kind, its own counter), in arrival order

            @pc.on("track")
            def on_track(track):
                counter = Received()
                counter.consume(track)
                per_track.append((track.kind, counter))

            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await subscriber.start(pc.localDescription.sdp)
            await wait_for(lambda: per_track and per_track[-1][1].frames["video"] >= 5, 10, "the first feed")

            await room.publish("member-b")
            offer, data = await subscriber.update(add=["member-b"])
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await subscriber.start(pc.localDescription.sdp)
            await wait_for(lambda: len(per_track) == 4, 10, "the second feed's tracks")
            late_video = per_track[3][1]
            await wait_for(lambda: late_video.frames["video"] >= 15, 10, "video from the late feed")
            first_video_frames = per_track[1][1].frames["video"]
            for _, counter in per_track:
                await counter.stop()
        finally:
            await room.close()

    assert [kind for kind, _ in per_track] == ["audio", "video", "audio", "video"]
    assert first_video_frames >= 20  # the first feed kept flowing through the renegotiation
    assert [(s["feed_id"], s["type"]) for s in data["streams"] if s.get("active")] == [
        ("member-a", "audio"),
        ("member-a", "video"),
        ("member-b", "audio"),
        ("member-b", "video"),
    ]


async def test_videoroom_group_of_six_each_receives_every_other_over_one_connection(janus):
    # The SFU shape the broker will build: every member publishes once and receives all the
    # others over a single multistream subscriber connection.
    members = [f"member-{n}" for n in range(6)]
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            publishers = {m: await room.publish(m) for m in members}
            started = time.monotonic()
            counters: dict[tuple[str, str], Received] = {}  # (subscriber, feed) -> video frames
            for me in members:
                others = [m for m in members if m != me]
                subscriber = await Subscriber.open(await client.create_session())
                offer, data = await subscriber.subscribe(room.spec.room, others, publishers[me].joined.private_id)
                pc = subscriber_pc()
                room.pcs.append(pc)
                await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
                feed_of_mid = {s["mid"]: s["feed_id"] for s in data["streams"] if s["type"] == "video"}
                for transceiver in pc.getTransceivers():
                    if transceiver.mid in feed_of_mid:
                        counter = counters[(me, feed_of_mid[transceiver.mid])] = Received()
                        counter.consume(transceiver.receiver.track)
                await pc.setLocalDescription(await pc.createAnswer())
                await subscriber.start(pc.localDescription.sdp)
            try:
                await wait_for(lambda: all(c.frames["video"] >= 10 for c in counters.values()), 30, "every feed")
            except AssertionError:
                print({k: c.frames for k, c in counters.items()})
                raise
            took = time.monotonic() - started
            before = {key: c.frames["video"] for key, c in counters.items()}
            await asyncio.sleep(2)
            rates = {key: (c.frames["video"] - before[key]) / 2 for key, c in counters.items()}
            for counter in counters.values():
                await counter.stop()
        finally:
            await room.close()

    assert len(counters) == 30 and set(counters) == {(a, b) for a in members for b in members if a != b}
    print(f"6 members x 5 feeds through Janus: 10 video frames of every feed everywhere after {took:.2f} s")
    print(f"decoded frame rates per feed: min {min(rates.values())}, max {max(rates.values())} fps")
    # Each receiver decodes its own feed at the clip's 15 fps: more would mean streams were mixed.
    assert all(5 <= rate <= 17 for rate in rates.values()), rates


async def test_janus_trickle_candidates_and_end_of_candidates_are_accepted(janus):
    # Browsers trickle: the broker forwards each candidate, then the end of gathering.
    async with JanusClient(janus.url, janus.api_secret) as client:
        room = await Room.create(client, janus.admin_key)
        try:
            token = secrets.token_urlsafe(16)
            await room.admin.allow(room.spec.room, room.spec.secret, [token])
            publisher = await Publisher.open(await client.create_session())
            await publisher.join(room.spec.room, "member-t", token)
            pc = RTCPeerConnection()
            room.pcs.append(pc)
            add_clip_tracks(pc)
            await pc.setLocalDescription(await pc.createOffer())
            await publisher.configure(pc.localDescription.sdp)

            await publisher.handle.trickle(
                {
                    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                }
            )
            await publisher.handle.trickle(None)
            with pytest.raises(JanusError) as bad:
                await publisher.handle.trickle({"sdpMid": "0"})  # no candidate: Janus refuses it
        finally:
            await room.close()

    assert bad.value.code > 0
