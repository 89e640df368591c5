"""The ASGI application: HTTP reaches Django, WebSockets pass origin and session checks first.

In-process tests drive ``telehealth.asgi.application`` with Channels'
communicators; the live tests start daphne itself (the ``daphne`` fixture) to
prove what only the real server shows: static files through whitenoise and a
refused handshake answered with HTTP 403.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from urllib.parse import urlparse

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.db import connections
from django.test import Client

from telehealth.asgi import application, websocket_stack
from tests.factories import make_user
from tests.telehealth.names import ROOT

SAME_ORIGIN = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
FOREIGN_ORIGIN = [(b"host", b"127.0.0.1"), (b"origin", b"https://evil.example")]


async def close_thread_connections():
    # Views and auth lookups ran in asgiref's worker thread; close its connection so the
    # test database can be dropped at the end of the run (PostgreSQL refuses while one is open).
    await sync_to_async(connections.close_all)()


async def echo_user(scope, receive, send):
    """Accept any handshake and report who the stack says the user is."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    user = scope["user"]
    await send(
        {
            "type": "websocket.send",
            "text": json.dumps(
                {
                    "authenticated": user.is_authenticated,
                    "id": str(user.pk) if user.pk else None,
                    "class": type(user).__name__,  # the user itself, not a lazy wrapper around it
                }
            ),
        }
    )
    await receive()


# --- in process ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_asgi_http_request_reaches_django():
    communicator = HttpCommunicator(application, "GET", "/healthz", headers=[(b"host", b"127.0.0.1")])

    response = await communicator.get_response()
    await close_thread_connections()

    assert response["status"] == 200
    assert json.loads(response["body"]) == {"status": "ok"}
    headers = {name.lower(): value for name, value in response["headers"]}
    assert b"default-src 'self'" in headers[b"content-security-policy"]


async def test_asgi_http_unknown_host_refused():
    communicator = HttpCommunicator(application, "GET", "/healthz", headers=[(b"host", b"evil.example")])

    response = await communicator.get_response()

    assert response["status"] == 400


async def test_asgi_websocket_unknown_path_refused_before_accept():
    communicator = WebsocketCommunicator(application, "/ws/no-such-endpoint/", headers=SAME_ORIGIN)

    connected, _ = await communicator.connect()

    assert connected is False


@pytest.mark.parametrize("headers", [FOREIGN_ORIGIN, [(b"host", b"127.0.0.1")]], ids=["foreign", "missing"])
async def test_asgi_websocket_bad_origin_refused(headers):
    communicator = WebsocketCommunicator(application, "/ws/no-such-endpoint/", headers=headers)

    connected, _ = await communicator.connect()

    assert connected is False


async def test_websocket_stack_accepts_same_origin_as_anonymous():
    communicator = WebsocketCommunicator(websocket_stack(echo_user), "/ws/echo/", headers=SAME_ORIGIN)

    connected, _ = await communicator.connect()
    frame = await communicator.receive_json_from()
    await communicator.disconnect()

    assert connected is True
    assert frame == {"authenticated": False, "id": None, "class": "AnonymousUser"}


@pytest.mark.parametrize("headers", [FOREIGN_ORIGIN, [(b"host", b"127.0.0.1")]], ids=["foreign", "missing"])
async def test_websocket_stack_refuses_bad_origin_before_the_app(headers):
    # The same app that accepts a same-origin handshake above: the origin check alone refuses.
    communicator = WebsocketCommunicator(websocket_stack(echo_user), "/ws/echo/", headers=headers)

    connected, _ = await communicator.connect()

    assert connected is False


@pytest.mark.django_db(transaction=True)
async def test_websocket_stack_reads_the_django_session_user():
    user = await sync_to_async(make_user)()
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        websocket_stack(echo_user), "/ws/echo/", headers=[*SAME_ORIGIN, (b"cookie", cookie)]
    )

    connected, _ = await communicator.connect()
    frame = await communicator.receive_json_from()
    await communicator.disconnect()
    await close_thread_connections()

    assert connected is True
    assert frame == {"authenticated": True, "id": str(user.pk), "class": "User"}


# --- under daphne ---------------------------------------------------------------------------------


def get(url: str, host: str | None = None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    return urllib.request.urlopen(request, timeout=10)


def websocket_handshake_status(base_url: str, path: str, origin: str | None) -> int:
    """Send a raw WebSocket upgrade and return the HTTP status daphne answers with."""
    address = urlparse(base_url)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {address.hostname}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_daphne_serves_healthz_and_static_files(daphne):
    base_url = daphne()

    with get(f"{base_url}/healthz") as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok"}
    # Django's admin ships this file; DEBUG on, whitenoise serves it from the app folders.
    with get(f"{base_url}/static/admin/css/base.css") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/css")


def test_daphne_serves_collected_static_files_with_debug_off(daphne, clean_env, tmp_path):
    production = {"DEBUG": "false", "STATIC_ROOT": str(tmp_path / "static"), "ALLOWED_HOSTS": "127.0.0.1"}
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=clean_env(**production),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stderr
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["admin/css/base.css"]
    base_url = daphne(**production)

    with get(f"{base_url}/static/admin/css/base.css") as response:
        assert response.status == 200
    with get(f"{base_url}/static/{hashed}") as response:
        assert response.status == 200
        # Hashed names never change content, so browsers may keep them forever.
        assert "immutable" in response.headers["Cache-Control"]


@pytest.mark.parametrize(
    ("path", "origin"),
    [
        ("/ws/no-such-endpoint/", "http://127.0.0.1"),
        ("/ws/no-such-endpoint/", "https://evil.example"),
        ("/ws/no-such-endpoint/", None),
    ],
    ids=["unknown-path", "foreign-origin", "missing-origin"],
)
def test_daphne_refuses_handshake_with_403(daphne, path, origin):
    base_url = daphne()

    assert websocket_handshake_status(base_url, path, origin) == 403
