"""The pre-call check: an aiortc "browser" offers its media to the server's probe over real HTTP and
WebRTC (a live daphne), and the verdict comes back over its data channel. Plus the verdict table,
the limits, and bad input."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media import precall
from media.precall import Measurement, judge
from media.synthetic import add_clip_tracks
from tests.media.test_synthetic import live_clinic

pytestmark = pytest.mark.media


# --- the verdict (pure) ------------------------------------------------------------------------------

GOOD = Measurement(
    connected=True, seconds=4, video_frames=60, width=640, height=480, audio_frames=200, packets_received=500
)


@pytest.mark.parametrize(
    ("measurement", "code"),
    [
        pytest.param(GOOD, precall.GOOD_FOR_VIDEO, id="good"),
        pytest.param(Measurement(connected=False), precall.BLOCKED, id="never-connected"),
        pytest.param(Measurement(connected=True, seconds=4), precall.NO_MEDIA, id="nothing-arrived"),
        pytest.param(Measurement(**{**GOOD.__dict__, "video_frames": 30}), precall.AUDIO_ONLY, id="7.5-fps"),
        pytest.param(Measurement(**{**GOOD.__dict__, "height": 120}), precall.AUDIO_ONLY, id="tiny-picture"),
        pytest.param(Measurement(**{**GOOD.__dict__, "packets_lost": 30}), precall.AUDIO_ONLY, id="5.7%-loss"),
        pytest.param(Measurement(**{**GOOD.__dict__, "rtt_ms": 450.0}), precall.AUDIO_ONLY, id="slow-round-trip"),
        pytest.param(Measurement(**{**GOOD.__dict__, "video_frames": 0}), precall.AUDIO_ONLY, id="audio-only"),
        pytest.param(Measurement(**{**GOOD.__dict__, "rtt_ms": 399.0}), precall.GOOD_FOR_VIDEO, id="rtt-edge"),
    ],
)
def test_judge_gives_a_plain_verdict(measurement, code):
    verdict = judge(measurement)

    assert verdict.code == code
    assert verdict.text == precall.VERDICT_TEXT[code]
    assert verdict.details["fps"] == round(measurement.fps, 1)


def test_limiter_allows_four_a_minute_per_person_and_bounds_the_process():
    now = [0.0]
    limiter = precall.Limiter(clock=lambda: now[0])

    first_four = [limiter.admit("pat") for _ in range(4)]
    fifth = limiter.admit("pat")
    for _ in range(4):
        limiter.done()
    now[0] = 61.0
    later = limiter.admit("pat")
    others = [limiter.admit(f"person-{n}") for n in range(4)]

    assert first_four == [0.0] * 4
    assert 0 < fifth <= 60
    assert later == 0.0
    assert others[:3] == [0.0] * 3 and others[3] > 0  # four checks already running in this process


# --- against a live server ---------------------------------------------------------------------------


def _request(url: str, cookie: str, *, body: dict | None = None, csrf: str | None = None) -> tuple[int, dict]:
    headers = {"Cookie": f"sessionid={cookie}" + (f"; csrftoken={csrf}" if csrf else "")}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers |= {"Content-Type": "application/json", "X-CSRFToken": csrf or "", "Referer": url}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        text = refused.read()
        try:
            return refused.code, json.loads(text or b"{}")
        except ValueError:
            return refused.code, {"page": text.decode(errors="replace")}


async def check(server_url: str, cookie: str, *, video: bool = True) -> tuple[dict, float]:
    """What a browser does: offer camera + microphone + a data channel, answer pings, read the report."""
    url = f"{server_url}/media/precall/"
    status, start = await asyncio.to_thread(_request, url, cookie)
    assert status == 200, start
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    add_clip_tracks(pc, video=video)
    channel = pc.createDataChannel("precall")
    report: asyncio.Future = asyncio.get_running_loop().create_future()

    @channel.on("message")
    def _message(text) -> None:
        message = json.loads(text)
        if message["type"] == "ping":
            channel.send(json.dumps({"type": "pong", "t": message["t"]}))
        elif message["type"] == "report" and not report.done():
            report.set_result(message)

    try:
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "relay": False}
        status, answer = await asyncio.to_thread(_request, url, cookie, body=body, csrf=start["csrfToken"])
        assert status == 200, answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        started = asyncio.get_running_loop().time()
        result = await asyncio.wait_for(report, precall.CHECK_SECONDS + 5)
        return result, asyncio.get_running_loop().time() - started
    finally:
        await pc.close()


async def test_precall_reports_what_arrived_with_a_verdict(media_server):
    ids = live_clinic(media_server)

    report, took = await check(media_server.url, ids["pat"])
    audio_only, _ = await check(media_server.url, ids["sam"], video=False)

    assert report["code"] == precall.GOOD_FOR_VIDEO, report
    details = report["details"]
    assert (details["width"], details["height"]) == (320, 240)  # the synthetic clip's picture
    assert 12 <= details["fps"] <= 16  # the clip runs at 15 fps
    assert details["kbps"] > 0 and details["loss_percent"] < 5
    assert details["rtt_ms"] is not None and details["rtt_ms"] < 100  # loopback
    assert took < precall.CHECK_SECONDS
    assert audio_only["code"] == precall.AUDIO_ONLY
    print(f"pre-call check: {report['code']} {details} in {took:.2f} s")


def test_precall_refuses_bad_input_anonymous_and_floods_with_clear_errors(media_server):
    ids = live_clinic(media_server)
    url = f"{media_server.url}/media/precall/"
    status, start = _request(url, ids["pat"])
    token = start["csrfToken"]

    not_sdp = _request(url, ids["pat"], body={"sdp": "hello"}, csrf=token)
    not_json = _request(url, ids["pat"], body={"offer": 1}, csrf=token)
    no_media = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    refused_sdp = _request(url, ids["pat"], body={"sdp": no_media}, csrf=token)
    anonymous = urllib.request.Request(url)
    with urllib.request.urlopen(anonymous, timeout=10) as response:
        anonymous_landed_on = response.url
    no_csrf = _request(url, ids["sam"], body={"sdp": "v=0"}, csrf=None)
    bad_offer = {"sdp": no_media}
    flood = [_request(url, ids["pat"], body=bad_offer, csrf=token)[0] for _ in range(2)]

    assert status == 200 and start["relayAvailable"] is False and start["iceServers"] == []
    assert not_sdp == (400, {"error": "precall.bad_sdp", "detail": not_sdp[1]["detail"]})
    assert not_json[0] == 400 and not_json[1]["error"] == "precall.bad_request"
    assert refused_sdp[0] == 400 and refused_sdp[1]["error"] == "precall.bad_sdp"
    assert "/accounts/login/" in anonymous_landed_on
    assert no_csrf[0] == 403
    assert flood == [400, 429]  # four attempts a minute, malformed ones included
