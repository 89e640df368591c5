"""The SFU broker end to end: synthetic participants -> our consumer (daphne) -> real Janus.

daphne runs with JANUS_URLS pointing at a Janus started from the generated safe config; the
participants speak only our protocol (``sfu.*``) and never see Janus's API. Each test makes its
own clinic (a group room: the SFU path) on the module's server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from media.janus import JanusClient, VideoRoomAdmin
from media.synthetic import SyntheticParticipant, wait_for_frames
from tests.media.conftest import Server, launch_janus, require_binary, run_daphne, stop_janus
from tests.media.rtc import wait_for
from tests.media.test_synthetic import SETUP

pytestmark = pytest.mark.media

CANDIDATE = "candidate:842163049 1 udp 1677729535 127.0.0.1 51236 typ host"
SFU_MEDIA = {"mode": "sfu", "reason": "media.group", "mesh_limit": None, "crowded": False}
PEOPLE = ("lead", "pat", "sam", "kim")

CLINIC = SETUP.replace(
    """    "sam": login_cookie(clinic.sam),
}}))""",
    """    "sam": login_cookie(clinic.sam),
    "kim": login_cookie(clinic.kim),
    "co": login_cookie(clinic.co),
    "max": login_cookie(max_),
    "outsider": login_cookie(clinic.outsider),
}}))""",
).replace(
    """print(json.dumps(""",
    """from datetime import timedelta
from accounts.models import Role
from tests.factories import enroll, make_user
max_ = make_user(Role.PARTICIPANT, first="Max", last="Fourth")
enroll(max_, clinic.session.track, start=timezone.now().date() - timedelta(days=30))
print(json.dumps(""",
)
ROOM_OF = """
import json
from media.models import SfuRoom
row = SfuRoom.objects.get(session_id="{session}")
print(json.dumps({{"room": row.janus_room, "secret": row.secret, "destroyed": row.destroyed_at is not None}}))
"""


class SfuServer(Server):
    janus = None


@pytest.fixture(scope="module")
def sfu_server(tmp_path_factory) -> Iterator[Server]:
    binary = require_binary("janus")
    folder = tmp_path_factory.mktemp("sfu")
    janus = launch_janus(binary, folder / "janus", rtp_ports=200)
    try:
        extra = {"JANUS_URLS": janus.url, "JANUS_API_SECRET": janus.api_secret, "JANUS_ADMIN_KEY": janus.admin_key}
        for server in run_daphne(folder / "daphne", extra):
            server.janus = janus
            yield server
    finally:
        stop_janus(janus)


def clinic(server: Server, policy: str = "AUTO_THEN_KNOCK") -> dict:
    done = server.manage("shell", "-c", CLINIC.format(policy=policy))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def janus_room_of(server: Server, session: str) -> dict:
    done = server.manage("shell", "-c", ROOM_OF.format(session=session))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def person(server: Server, ids: dict, name: str, **options) -> SyntheticParticipant:
    return SyntheticParticipant(server.url, ids["session"], ids[name], label=name, **options)


async def close_all(group) -> None:
    for participant in group:
        await participant.close()


def counts(participant: SyntheticParticipant, member: str) -> dict[str, int]:
    return participant.frames_from().get(member, {"audio": 0, "video": 0})


async def start_flowing(group: list[SyntheticParticipant]) -> None:
    """Start everyone and wait until each has 10 video and 25 audio frames of every other one."""
    for participant in group:
        await participant.start()
    await wait_for_frames(group, video=10, audio=25, timeout=30)


async def counts_over_a_window(observers, member: str) -> tuple[dict, dict]:
    """What each observer has of ``member``'s media 0.7 s after a change (packets in flight) and 1.5 s later."""
    await asyncio.sleep(0.7)
    first = {p.label: dict(counts(p, member)) for p in observers}
    await asyncio.sleep(1.5)
    return first, {p.label: dict(counts(p, member)) for p in observers}


async def test_sfu_group_of_six_each_receives_every_other_through_janus(sfu_server):
    ids = clinic(sfu_server)
    group = [person(sfu_server, ids, name) for name in (*PEOPLE, "co", "max")]
    try:
        welcomes = [await p.start() for p in group]
        took = await wait_for_frames(group, video=15, audio=25, timeout=40)
        room = janus_room_of(sfu_server, ids["session"])
    finally:
        await close_all(group)

    assert [w["room"]["media"] for w in welcomes] == [SFU_MEDIA] * 6
    assert all(p.errors == [] and p.peers == {} for p in group)  # no P2P connection at all
    for me in group:
        assert set(me.frames_from()) == {p.member_id for p in group if p is not me}
    # Janus's room id and secret never reach a client (frames, offers) or the server's log.
    everything = json.dumps([p.frames for p in group]) + sfu_server.log.read_text()
    assert room["room"] not in everything and room["secret"] not in everything
    print(f"6 members through the broker: 15 video + 25 audio frames of every feed everywhere after {took:.2f} s")


async def test_sfu_late_joiner_gets_every_feed_within_a_second_and_is_added_for_the_others(sfu_server):
    ids = clinic(sfu_server)
    early = [person(sfu_server, ids, name) for name in ("lead", "pat", "sam")]
    late = person(sfu_server, ids, "kim")
    try:
        for participant in early:
            await participant.start()
        await wait_for_frames(early, video=10, timeout=30)
        offers_before = {p.label: p.sfu_offers for p in early}

        await late.start()
        await wait_for_frames([*early, late], video=10, audio=10, timeout=20)
    finally:
        await close_all([*early, late])

    first_frames = {
        member: received.first_frame_at["video"] - late.subscribe_sent_at
        for member, received in late.sfu_received.items()
    }
    assert set(first_frames) == {p.member_id for p in early}
    offer = late.sfu_offer_at - late.subscribe_sent_at
    connected = late.sfu_connected_at - late.subscribe_sent_at
    print(
        f"late joiner: subscribe -> offer {offer:.2f} s, -> connected {connected:.2f} s, -> first video frame per feed "
        + ", ".join(f"{t:.2f} s" for t in first_frames.values())
    )
    # Janus asks each publisher for a keyframe when a subscriber joins; the replayed clip honours it.
    assert max(first_frames.values()) < 1.0
    # The others were offered the newcomer on their running connection (a pushed sfu.offer each).
    assert all(p.sfu_offers > offers_before[p.label] for p in early)
    assert all(p.errors == [] for p in [*early, late])


async def test_sfu_removal_stops_forwarding_to_and_from_the_removed_member(sfu_server):
    ids = clinic(sfu_server)
    group = [person(sfu_server, ids, name) for name in PEOPLE]
    lead, pat, sam, kim = group
    try:
        for participant in group:
            await participant.start()
        await wait_for_frames(group, video=10, timeout=30)

        await lead.send("mod.remove", {"member": kim.member_id})
        assert await kim.closed() == 4403
        await asyncio.sleep(0.5)  # packets already in flight
        to_kim = {p.member_id: counts(kim, p.member_id)["video"] for p in (lead, pat, sam)}
        from_kim = {p.label: counts(p, kim.member_id)["video"] for p in (lead, pat, sam)}
        between = counts(pat, sam.member_id)["video"]
        await asyncio.sleep(1.5)
        to_kim_after = {p.member_id: counts(kim, p.member_id)["video"] for p in (lead, pat, sam)}
        from_kim_after = {p.label: counts(p, kim.member_id)["video"] for p in (lead, pat, sam)}
        between_after = counts(pat, sam.member_id)["video"]
    finally:
        await close_all(group)

    assert to_kim_after == to_kim  # nothing reaches the removed member any more
    assert from_kim_after == from_kim  # and nobody receives them
    assert between_after - between >= 15  # 1.5 s at 15 fps: the others carry on


async def test_sfu_hard_mute_stops_the_members_audio_at_janus_until_released(sfu_server):
    # The synthetic participant ignores mod.muted and keeps sending audio (a modified client):
    # Janus stops forwarding it anyway.
    ids = clinic(sfu_server)
    group = [person(sfu_server, ids, name) for name in ("lead", "pat", "sam")]
    lead, pat, sam = group
    try:
        await start_flowing(group)

        await lead.send("mod.mute", {"member": pat.member_id, "hard": True})
        muted, muted_after = await counts_over_a_window((lead, sam), pat.member_id)
        await lead.send("mod.release_mute", {"member": pat.member_id})
        await wait_for(
            lambda: all(counts(p, pat.member_id)["audio"] >= muted_after[p.label]["audio"] + 25 for p in (lead, sam)),
            10,
            "audio after the release",
        )
    finally:
        await close_all(group)

    for label in ("lead", "sam"):
        assert muted_after[label]["audio"] == muted[label]["audio"]  # 1.5 s of audio is 75 frames
        assert muted_after[label]["video"] - muted[label]["video"] >= 15  # the camera is not affected
    assert all(p.errors == [] for p in group)


async def test_sfu_layers_off_or_a_short_downlink_stops_video_to_that_subscriber_only(sfu_server):
    # Audio-only mode (or a tile off screen): the subscriber asks for no picture of anyone; Janus stops
    # forwarding those videos to it, keeps the audio, and forwards to the others as before.
    ids = clinic(sfu_server)
    group = [person(sfu_server, ids, name) for name in ("lead", "pat", "sam")]
    lead, pat, sam = group
    try:
        await start_flowing(group)

        off = await pat.request("sfu.layers", {"layers": {lead.member_id: "off", sam.member_id: "off"}})
        await asyncio.sleep(0.7)  # packets in flight
        paused = {o.label: dict(counts(pat, o.member_id)) for o in (lead, sam)}
        to_sam = counts(sam, lead.member_id)["video"]
        await asyncio.sleep(1.5)
        paused_after = {o.label: dict(counts(pat, o.member_id)) for o in (lead, sam)}
        to_sam_after = counts(sam, lead.member_id)["video"]

        back = await pat.request("sfu.layers", {"layers": {lead.member_id: "low", sam.member_id: "high"}})
        await wait_for(
            lambda: all(counts(pat, o.member_id)["video"] >= paused_after[o.label]["video"] + 10 for o in (lead, sam)),
            10,
            "video after asking for it again",
        )

        # The same wishes from a downlink that carries ~100 kbps: the server fits them to voices only.
        wishes = {lead.member_id: "high", sam.member_id: "low"}
        short = await pat.request("sfu.layers", {"layers": wishes, "downlink_kbps": 100})
        await asyncio.sleep(0.7)
        starved = {o.label: counts(pat, o.member_id)["video"] for o in (lead, sam)}
        await asyncio.sleep(1.5)
        starved_after = {o.label: counts(pat, o.member_id)["video"] for o in (lead, sam)}
    finally:
        await close_all(group)

    assert off["type"] == "ack" and back["type"] == "ack" and short["type"] == "ack"
    assert starved_after == starved
    for label in ("lead", "sam"):
        assert paused_after[label]["video"] == paused[label]["video"]  # 1.5 s at 15 fps would be 22 frames
        assert paused_after[label]["audio"] - paused[label]["audio"] >= 40  # 50 frames/s of audio go on
    assert to_sam_after - to_sam >= 15  # another subscriber is not affected
    assert all(p.errors == [] for p in group)


async def test_sfu_camera_block_stops_the_members_video_at_janus_until_released(sfu_server):
    ids = clinic(sfu_server)
    group = [person(sfu_server, ids, name) for name in ("lead", "pat", "sam")]
    lead, pat, sam = group
    try:
        await start_flowing(group)

        await lead.send("mod.camera_off", {"member": pat.member_id, "hard": True})
        blocked, blocked_after = await counts_over_a_window((lead, sam), pat.member_id)
        await lead.send("mod.release_camera", {"member": pat.member_id})
        await wait_for(
            lambda: all(counts(p, pat.member_id)["video"] >= blocked_after[p.label]["video"] + 10 for p in (lead, sam)),
            10,
            "video after the release",
        )
    finally:
        await close_all(group)

    for label in ("lead", "sam"):
        assert blocked_after[label]["video"] == blocked[label]["video"]  # 1.5 s of video is 22 frames
        assert blocked_after[label]["audio"] - blocked[label]["audio"] >= 50  # the microphone is not affected
    assert all(p.errors == [] for p in group)


async def test_sfu_bad_input_gets_error_frames_and_forwards_nothing(sfu_server):
    ids = clinic(sfu_server)
    outsider = SyntheticParticipant(sfu_server.url, ids["other_session"], ids["outsider"], label="outsider")
    lead = person(sfu_server, ids, "lead", audio=False, video=False)
    pat = person(sfu_server, ids, "pat")
    try:
        await outsider.start()
        await lead.start()
        await pat.start()
        await pat.sfu_published.wait()
        answers = {
            "start before any offer": await pat.request("sfu.start", {"sdp": "v=0\r\n"}),
            "trickle, no subscription": await pat.request(
                "sfu.trickle", {"handle": "subscriber", "candidate": "", "sdp_mid": "0"}
            ),
            "unparseable offer": await pat.request("sfu.publish", {"sdp": "v=0\r\nthis is not sdp\r\n"}),
            "feed of another session": await pat.request("sfu.subscribe", {"feeds": [outsider.member_id]}),
            "unknown feed": await pat.request("sfu.subscribe", {"feeds": ["nobody-here"]}),
            "unknown handle": await pat.request("sfu.trickle", {"handle": "janus", "candidate": ""}),
            "extra field": await pat.request("sfu.publish", {"sdp": "v=0", "room": "1234"}),
        }
        # Valid trickle is accepted silently: a candidate, then the end of candidates.
        trickled = [
            await pat.send("sfu.trickle", {"handle": "publisher", "candidate": CANDIDATE, "sdp_mid": "0"}),
            await pat.send("sfu.trickle", {"handle": "publisher", "candidate": ""}),
        ]
        alive = await pat.request("ping")
        # Nothing broke pat's valid publication: the watching therapist still receives it.
        await wait_for(lambda: counts(lead, pat.member_id)["video"] >= 10, 10, "pat's video at lead")
        room = janus_room_of(sfu_server, ids["session"])
    finally:
        await close_all([pat, lead, outsider])

    codes = {what: (frame["type"], frame.get("code")) for what, frame in answers.items()}
    assert codes == {
        "start before any offer": ("error", "sfu.not_negotiating"),
        "trickle, no subscription": ("error", "sfu.not_negotiating"),
        "unparseable offer": ("error", "sfu.rejected"),
        "feed of another session": ("error", "sfu.feed_not_found"),
        "unknown feed": ("error", "sfu.feed_not_found"),
        "unknown handle": ("error", "protocol.bad_payload"),
        "extra field": ("error", "protocol.bad_payload"),
    }
    assert alive["type"] == "pong" and pat.close_code == 1000  # still connected until it left
    assert not [e for e in pat.errors if e["re"] in trickled]
    # Alone in its own session's Janus room: its publish answered, its subscription waits (ack):
    # no offer of anyone else's streams, nothing from this session.
    assert [f["type"] for f in outsider.frames] == ["sfu.answer", "ack"] and outsider.errors == []
    assert not room["destroyed"]


async def test_sfu_waiting_room_gets_no_sfu_and_the_end_destroys_the_janus_room(sfu_server):
    ids = clinic(sfu_server, policy="THERAPIST_ADMITS")
    lead = person(sfu_server, ids, "lead")
    pat = person(sfu_server, ids, "pat")
    try:
        await lead.start()
        await pat.start()
        refused = await pat.request("sfu.publish", {"sdp": "v=0\r\n"})
        room = janus_room_of(sfu_server, ids["session"])
        async with JanusClient(sfu_server.janus.url, sfu_server.janus.api_secret) as client:
            admin = await VideoRoomAdmin.open(await client.create_session(), sfu_server.janus.admin_key)
            existed = await admin.exists(room["room"])
            await lead.send("mod.end")
            assert await lead.closed() == 4410
            started = time.monotonic()
            while await admin.exists(room["room"]) and time.monotonic() - started < 5:
                await asyncio.sleep(0.1)
            exists_after = await admin.exists(room["room"])
    finally:
        await close_all([pat, lead])
    row_after = janus_room_of(sfu_server, ids["session"])

    assert (refused["type"], refused["code"]) == ("error", "perm.waiting")
    assert existed and not exists_after
    assert not room["destroyed"] and row_after["destroyed"]


async def test_sfu_talking_events_reach_the_others_as_sfu_talking(sfu_server):
    # A live-encoded tone carries the audio level Janus reads (replayed clips carry none).
    ids = clinic(sfu_server)
    lead = person(sfu_server, ids, "lead", tone=True)
    pat = person(sfu_server, ids, "pat", audio=False)
    try:
        await lead.start()
        await pat.start()
        await wait_for(lambda: (lead.member_id, True) in pat.talking, 15, "pat to hear that lead talks")
        frame = next(f for f in pat.frames if f["type"] == "sfu.talking")
        # Janus reads the level on lead's published audio: the event can reach pat before pat's own
        # subscription carries that audio (CI saw 0 frames at that moment once). Wait for it too.
        await wait_for(lambda: counts(pat, lead.member_id)["audio"] > 0, 15, "pat to receive lead's audio")
    finally:
        await close_all([pat, lead])

    assert {k: v for k, v in frame.items() if k != "ts"} == {
        "v": 1,
        "type": "sfu.talking",
        "from": lead.member_id,
        "re": None,
        "member": lead.member_id,
        "talking": True,
    }
    assert counts(pat, lead.member_id)["audio"] > 0
