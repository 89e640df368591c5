"""Real media processes for the media tests: coturn, Janus and daphne, each on free loopback ports.

Every test here carries the ``media`` marker (``-m "not media"`` leaves them out). When a binary
is missing the tests skip, unless TELEHEALTH_REQUIRE_SERVICES=1 (CI): then they fail, so a run
meant to prove media never passes by skipping. ``scripts/test`` installs both (Debian's
``coturn`` and ``janus``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from media import coturnconf, janusconf
from media.janusconf import free_udp_range
from telehealth import serve

ROOT = Path(__file__).resolve().parents[2]


def require_binary(name: str) -> str:
    """The binary's path; a skip (or, with TELEHEALTH_REQUIRE_SERVICES=1, a failure) without it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")  # nginx is in /usr/sbin
    if path:
        return path
    message = f"{name} is not installed (apt-get install -y {'coturn' if name == 'turnserver' else name})"
    if os.environ.get("TELEHEALTH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"TELEHEALTH_REQUIRE_SERVICES=1 but {message}", pytrace=False)
    pytest.skip(message)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (TURN and STUN listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            try:
                with socket.socket(socket.AF_INET, other) as second:
                    second.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.05)
    detail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# --- coturn --------------------------------------------------------------------------------------


@dataclass
class Turn:
    port: int
    secret: str
    log: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


def _stun_answers(port: int) -> bool:
    # A STUN Binding request (RFC 5389 header only): coturn answers it without credentials.
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + secrets.token_bytes(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(request, ("127.0.0.1", port))
            answer, _ = sock.recvfrom(2048)
        except OSError:
            return False
    return answer[:2] == b"\x01\x01" and answer[8:20] == request[8:20]


@pytest.fixture
def start_turnserver(tmp_path) -> Iterator:
    """Start coturn on 127.0.0.1: ``start_turnserver()`` with the loopback test config, or
    ``start_turnserver(production=True)`` with the production config (loopback peers denied) bound
    to 127.0.0.1. Each gets a fresh secret and its own ports; all are stopped at teardown."""
    binary = require_binary("turnserver")
    processes: list[subprocess.Popen] = []

    def start(*, production: bool = False) -> Turn:
        port = free_port()
        low, high = free_udp_range(40)
        secret = secrets.token_urlsafe(32)
        state = tmp_path / f"coturn-{len(processes)}"
        state.mkdir()
        if production:
            text = coturnconf.production_config(
                coturnconf.ProductionTurn(
                    secret=secret,
                    realm="telehealth.test",
                    listening_ips=["127.0.0.1"],
                    relay_ips=["127.0.0.1"],
                    port=port,
                    min_port=low,
                    max_port=high,
                )
            )
            text += f"verbose\nuserdb={state / 'turndb'}\npidfile={state / 'turnserver.pid'}\n"
        else:
            text = coturnconf.loopback_config(secret=secret, port=port, min_port=low, max_port=high, state_dir=state)
        conf = state / "turnserver.conf"
        conf.write_text(text)
        log = state / "turnserver.log"
        with log.open("w") as out:
            process = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, cwd=state)
        processes.append(process)
        wait_until(lambda: _stun_answers(port), 10, "coturn to answer STUN", process, log)
        return Turn(port, secret, log)

    yield start
    for process in processes:
        stop(process)


@pytest.fixture
def turnserver(start_turnserver) -> Turn:
    return start_turnserver()


# --- Janus ---------------------------------------------------------------------------------------


@dataclass
class Janus:
    url: str
    api_secret: str
    admin_key: str
    log: Path
    process: subprocess.Popen


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def start_janus(tmp_path) -> Iterator:
    """Start Janus with the generated safe config (WebSocket API on 127.0.0.1 only, its own RTP ports).

    ``start_janus(session_timeout=60)``; every Janus started is stopped at teardown, and a crash in
    its log fails the test.
    """
    binary = require_binary("janus")
    started: list[Janus] = []

    def start(session_timeout: int = 60) -> Janus:
        node = launch_janus(binary, tmp_path / f"janus-{len(started)}", session_timeout=session_timeout)
        started.append(node)
        return node

    yield start
    for node in started:
        stop_janus(node)


def launch_janus(
    binary: str,
    folder: Path,
    *,
    session_timeout: int = 60,
    rtp_ports: int = 60,
    api_secret: str | None = None,
    admin_key: str | None = None,
) -> Janus:
    """Janus from a freshly generated safe config in ``folder``, listening when this returns.
    Nodes of one deployment share ``api_secret`` and ``admin_key`` (fresh ones by default)."""
    port = free_port()
    low, high = free_udp_range(rtp_ports)
    conf = janusconf.JanusConf(
        api_secret=api_secret or secrets.token_urlsafe(24),
        admin_key=admin_key or secrets.token_urlsafe(24),
        ws_ip="127.0.0.1",
        ws_port=port,
        rtp_port_range=(low, high),
        loopback=True,
        session_timeout=session_timeout,
    )
    janusconf.write(conf, folder)
    log = folder / "janus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [binary, "-C", str(folder / "janus.jcfg"), "-F", str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    node = Janus(f"ws://127.0.0.1:{port}", conf.api_secret, conf.admin_key, log, process)
    wait_until(lambda: _accepts_tcp(port), 20, "janus to listen", process, log)
    return node


def stop_janus(node: Janus) -> None:
    """Stop it; a crash in its log fails the test."""
    stop(node.process)
    text = node.log.read_text(errors="replace")
    assert not re.search(r"Segmentation fault|SIGSEGV|Aborted|AddressSanitizer", text), text[-4000:]


@pytest.fixture
def janus(start_janus) -> Janus:
    return start_janus()


# --- daphne --------------------------------------------------------------------------------------

# What a child process inherits; settings variables are given explicitly per test.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")


@dataclass
class Server:
    url: str
    env: dict[str, str]
    log: Path

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def media_server(tmp_path_factory) -> Iterator[Server]:
    """daphne on a free port against a fresh, migrated SQLite file of its own (no test database).

    One per module: each test makes its own clinic and people in it, so tests never share a session.
    """
    yield from run_daphne(tmp_path_factory.mktemp("media-server"))


def run_daphne(tmp_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """daphne as ``media_server`` starts it, with ``extra_env`` on top (JANUS_URLS, ...)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = (
        {name: os.environ[name] for name in _INHERITED if name in os.environ}
        | {
            "PYTHONDONTWRITEBYTECODE": "1",
            "DJANGO_SETTINGS_MODULE": "telehealth.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'media.sqlite3'}",
            "DEBUG": "true",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECRET_KEY": secrets.token_urlsafe(45),
        }
        | (extra_env or {})
    )
    server = Server("", env, tmp_path / "daphne.log")
    migrated = server.manage("migrate", "--no-input", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    with server.log.open("w") as out:
        process = subprocess.Popen(
            serve.command("127.0.0.1", 0),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        found: list[str] = []

        def listening() -> bool:
            match = re.search(r"Listening on TCP address 127\.0\.0\.1:(\d+)", server.log.read_text())
            if match:
                found.append(match.group(1))
            return bool(match)

        wait_until(listening, 30, "daphne to listen", process, server.log)
        server.url = f"http://127.0.0.1:{found[0]}"
        yield server
    finally:
        stop(process)
    text = server.log.read_text()
    assert not re.search(r"Exception inside application|Internal Server Error|Traceback", text), text
