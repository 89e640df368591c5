"""How this project runs daphne: one command line for the container, the demo, the tests and bench/.

    python -m telehealth.serve [--host 127.0.0.1] [--port 8000]

Daphne's ``-b``/``-p`` listen with Twisted's default backlog: 50 connections waiting to be
accepted. When a group session starts, its members connect within seconds of each other, and the
event loop that accepts them is also the one running their handshakes. Measured in the join storm
(240 joins, 64 handshakes in flight): in the runs where the accept queue overflowed (the kernel's
``TcpExtListenOverflows`` counter went up by 13) the dropped connections were retried by the client's
TCP a second later, and join p99 was 1,020-1,050 ms against 220-360 ms in the runs without an
overflow (docs/performance.md). The endpoint here asks for ``LISTEN_BACKLOG`` pending connections
(1024 unless set; the kernel caps it at ``net.core.somaxconn``).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

APPLICATION = "telehealth.asgi:application"
DEFAULT_BACKLOG = 1024
# Keepalive: a WebSocket idle this long gets a ping, and one that does not answer within
# PING_TIMEOUT is closed (its seat then waits for a reconnect). Daphne's defaults, spelled out so
# bench/'s reference relay keeps its connections alive the same way.
PING_INTERVAL = 20
PING_TIMEOUT = 30


def listen_backlog() -> int:
    value = os.environ.get("LISTEN_BACKLOG", "").strip()
    if not value:
        return DEFAULT_BACKLOG
    backlog = int(value)
    if backlog < 1:
        raise ValueError("LISTEN_BACKLOG must be a positive number of connections")
    return backlog


def endpoint(host: str, port: int, backlog: int | None = None) -> str:
    """Twisted's endpoint description for daphne's ``-e`` (colons in an IPv6 address escaped)."""
    backlog = listen_backlog() if backlog is None else backlog
    interface = host.replace(":", r"\:")
    return f"tcp:port={port}:interface={interface}:backlog={backlog}"


def command(host: str, port: int, *, python: str = sys.executable) -> list[str]:
    """The daphne command line serving this project on ``host``:``port`` (port 0: the kernel picks;
    daphne logs "Listening on TCP address HOST:PORT" either way)."""
    keepalive = ["--ping-interval", str(PING_INTERVAL), "--ping-timeout", str(PING_TIMEOUT)]
    return [python, "-m", "daphne", *keepalive, "-e", endpoint(host, port), APPLICATION]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30, host: str = "127.0.0.1") -> None:
    """Return once something accepts connections on ``host``:``port``; raise RuntimeError if
    ``process`` (the server started to listen there) exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server process {process.pid} exited with {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """End a server this project started (daphne, nginx, Janus ...): SIGTERM, then SIGKILL after
    ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve telehealth with daphne.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    argv = command(args.host, args.port)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
