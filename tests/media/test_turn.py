"""TURN: minted credentials work through a real coturn, expired and forged ones do not.

The relay tests start Debian's coturn on loopback with the generated test config
(``turnserver`` fixture) and connect two aiortc peers restricted to relay candidates
(``iceTransportPolicy=relay``), so the only way their data channel opens is through coturn.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from media import coturnconf, turn

pytestmark = pytest.mark.media

NOW = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
SECRET = "s" * 40


# --- minting (pure) ------------------------------------------------------------------------------


def test_mint_username_is_expiry_and_pseudonym_password_is_coturn_hmac():
    credential = turn.mint(
        SECRET, "member-1", valid_until=NOW + timedelta(hours=3), now=NOW, margin=timedelta(minutes=30)
    )

    expiry, name = credential.username.split(":")
    expected_password = base64.b64encode(
        hmac.new(SECRET.encode(), credential.username.encode(), hashlib.sha1).digest()
    ).decode()
    assert int(expiry) == int((NOW + timedelta(hours=3, minutes=30)).timestamp())
    assert credential.expires_at == NOW + timedelta(hours=3, minutes=30)
    assert credential.password == expected_password
    assert name == turn.pseudonym(SECRET, "member-1")


def test_mint_pseudonym_hides_subject_and_needs_the_secret():
    name = turn.pseudonym(SECRET, "member-1")

    assert "member-1" not in name and ":" not in name
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", name)
    assert turn.pseudonym(SECRET, "member-1") == name  # stable: an operator with the secret can check it
    assert turn.pseudonym("t" * 40, "member-1") != name  # another secret, another pseudonym
    assert turn.pseudonym(SECRET, "member-2") != name


def test_mint_session_already_over_still_gets_the_margin():
    credential = turn.mint(SECRET, "m", valid_until=NOW - timedelta(hours=1), now=NOW, margin=timedelta(minutes=10))

    assert credential.expires_at == NOW + timedelta(minutes=10)


def test_mint_lifetime_is_capped():
    credential = turn.mint(SECRET, "m", valid_until=NOW + timedelta(days=30), now=NOW, margin=timedelta(hours=1))

    assert credential.expires_at == NOW + turn.MAX_LIFETIME


def test_mint_rounds_expiry_up_to_whole_seconds():
    now = NOW + timedelta(microseconds=250_000)

    credential = turn.mint(SECRET, "m", valid_until=now, now=now, margin=timedelta(0))

    assert credential.expires_at == NOW + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"now": NOW.replace(tzinfo=None)}, ValueError, id="naive-now"),
        pytest.param({"margin": timedelta(seconds=-1)}, ValueError, id="negative-margin"),
    ],
)
def test_mint_refuses_bad_arguments(kwargs, error):
    arguments = {"valid_until": NOW, "now": NOW, "margin": timedelta(0)} | kwargs

    with pytest.raises(error):
        turn.mint(SECRET, "m", **arguments)


def test_mint_without_secret_is_not_configured():
    with pytest.raises(turn.TurnNotConfigured):
        turn.mint("", "m", valid_until=NOW, now=NOW, margin=timedelta(0))


def test_ice_server_shape_matches_welcome_ice_servers():
    credential = turn.mint(SECRET, "m", valid_until=NOW, now=NOW, margin=timedelta(0))

    server = credential.ice_server(["turn:turn.example.org:3478"])

    assert server == {
        "urls": ["turn:turn.example.org:3478"],
        "username": credential.username,
        "credential": credential.password,
    }


# --- coturn configs (pure) ---------------------------------------------------------------------


def production(**changes) -> coturnconf.ProductionTurn:
    values = {"secret": SECRET, "realm": "iop.example.org", "listening_ips": ["203.0.113.5"]} | changes
    return coturnconf.ProductionTurn(**values)


def test_production_config_denies_private_loopback_and_multicast_peers():
    text = coturnconf.production_config(production())

    lines = set(text.splitlines())
    for expected in (
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=224.0.0.0-239.255.255.255",
        "denied-peer-ip=::1-::1",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "no-multicast-peers",
        "no-cli",
        "use-auth-secret",
        "listening-ip=203.0.113.5",
        "user-quota=12",
        "total-quota=1200",
    ):
        assert expected in lines, expected
    assert "allow-loopback-peers" not in text


def test_production_config_without_certificate_has_no_tls_with_one_has_tls():
    plain = coturnconf.production_config(production())
    tls = coturnconf.production_config(production(cert="/certs/fullchain.pem", pkey="/certs/privkey.pem"))

    assert "no-tls" in plain.splitlines()
    assert "tls-listening-port=5349" in tls.splitlines() and "no-tls" not in tls.splitlines()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"secret": "short"}, id="short-secret"),
        pytest.param({"listening_ips": []}, id="no-listening-ip"),
        pytest.param({"listening_ips": ["not-an-ip"]}, id="bad-ip"),
        pytest.param({"realm": "x\nallow-loopback-peers"}, id="injected-line"),
        pytest.param({"min_port": 50000, "max_port": 40000}, id="port-range-backwards"),
    ],
)
def test_production_config_refuses_unsafe_values(changes):
    with pytest.raises(ValueError):
        coturnconf.production_config(production(**changes))


def test_coturnconf_command_reads_secret_from_file_env(tmp_path, monkeypatch):
    (tmp_path / "secret").write_text(SECRET + "\n")
    monkeypatch.setenv("TURN_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.delenv("TURN_SECRET", raising=False)
    out = tmp_path / "conf" / "turnserver.conf"

    status = coturnconf.main([str(out), "--listening-ip", "10.1.2.3", "--realm", "iop.example.org"])

    assert status == 0
    assert f"static-auth-secret={SECRET}" in out.read_text().splitlines()
    assert out.stat().st_mode & 0o077 == 0


# --- through a real coturn -----------------------------------------------------------------------


async def relay_only_pair(url: str, username: str, password: str, timeout: float) -> tuple[bool, list[str], str]:
    """Two relay-only aiortc peers; returns (data channel message arrived, candidates offered, state)."""

    def configuration() -> RTCConfiguration:
        return RTCConfiguration(
            iceServers=[RTCIceServer(urls=url, username=username, credential=password)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )

    offerer, answerer = RTCPeerConnection(configuration()), RTCPeerConnection(configuration())
    arrived = asyncio.Event()
    channel = offerer.createDataChannel("check")
    channel.on("open", lambda: channel.send("through the relay"))

    @answerer.on("datachannel")
    def on_channel(remote):
        remote.on("message", lambda message: arrived.set() if message == "through the relay" else None)

    try:
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        candidates = [
            line
            for sdp in (offerer.localDescription.sdp, answerer.localDescription.sdp)
            for line in sdp.splitlines()
            if line.startswith("a=candidate:")
        ]
        try:
            await asyncio.wait_for(arrived.wait(), timeout)
        except TimeoutError:
            pass
        return arrived.is_set(), candidates, offerer.connectionState
    finally:
        await offerer.close()
        await answerer.close()


async def test_turn_relay_opens_data_channel_with_minted_credentials(turnserver):
    now = datetime.now(UTC)
    credential = turn.mint(
        turnserver.secret, "member-abc", valid_until=now + timedelta(hours=3), now=now, margin=timedelta(minutes=5)
    )
    started = time.monotonic()

    arrived, candidates, state = await relay_only_pair(turnserver.url, credential.username, credential.password, 10)

    assert arrived, turnserver.log.read_text()[-2000:]
    assert state == "connected"
    assert candidates and all(" typ relay " in line for line in candidates)
    assert all(" 127.0.0.1 " in line for line in candidates)
    assert time.monotonic() - started < 5
    log = turnserver.log.read_text()
    assert "member-abc" not in log  # coturn logs usernames: only the pseudonym may appear


async def test_turn_expired_credentials_get_no_relay(turnserver):
    then = datetime.now(UTC) - timedelta(hours=4)
    credential = turn.mint(
        turnserver.secret, "member-abc", valid_until=then + timedelta(hours=3), now=then, margin=timedelta(minutes=5)
    )

    arrived, candidates, state = await relay_only_pair(turnserver.url, credential.username, credential.password, 3)

    assert not arrived
    assert candidates == []
    assert state != "connected"


async def test_turn_forged_password_gets_no_relay(turnserver):
    now = datetime.now(UTC)
    credential = turn.mint(
        turnserver.secret, "member-abc", valid_until=now + timedelta(hours=1), now=now, margin=timedelta(minutes=5)
    )
    forged = turn.turn_password("not-the-server-secret-" * 2, credential.username)

    arrived, candidates, state = await relay_only_pair(turnserver.url, credential.username, forged, 3)

    assert not arrived
    assert candidates == []
    assert state != "connected"


async def test_turn_username_with_extended_expiry_but_old_password_gets_no_relay(turnserver):
    # A client cannot stretch its own credential: the password is bound to the expiry in the username.
    now = datetime.now(UTC)
    credential = turn.mint(turnserver.secret, "m", valid_until=now, now=now, margin=timedelta(minutes=5))
    stretched = f"{int((now + timedelta(days=7)).timestamp())}:{credential.username.split(':')[1]}"

    arrived, candidates, _ = await relay_only_pair(turnserver.url, stretched, credential.password, 3)

    assert not arrived
    assert candidates == []


async def test_turn_production_config_refuses_to_relay_to_loopback(start_turnserver):
    # The shipped config denies private and loopback peers: an allocation works, but the relay
    # will not carry traffic to 127.0.0.1, so the same two peers that connect above cannot.
    server = start_turnserver(production=True)
    now = datetime.now(UTC)
    credential = turn.mint(server.secret, "m", valid_until=now + timedelta(hours=1), now=now, margin=timedelta(0))

    arrived, candidates, state = await relay_only_pair(server.url, credential.username, credential.password, 3)

    assert candidates and all(" typ relay " in line for line in candidates)  # authenticated and allocated
    assert not arrived
    assert state != "connected"
    assert "error 403: Forbidden IP" in server.log.read_text()  # refused for the peer address, not the login
