"""telehealth.serve: the one daphne command line, with a listen backlog that absorbs a join burst."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from telehealth import serve
from tests.telehealth.names import ROOT


def test_the_endpoint_asks_for_the_backlog_and_escapes_ipv6_colons(monkeypatch):
    monkeypatch.delenv("LISTEN_BACKLOG", raising=False)
    assert serve.endpoint("0.0.0.0", 8000) == "tcp:port=8000:interface=0.0.0.0:backlog=1024"
    assert serve.endpoint("::1", 0, backlog=64) == r"tcp:port=0:interface=\:\:1:backlog=64"
    monkeypatch.setenv("LISTEN_BACKLOG", "2048")
    assert serve.command("127.0.0.1", 9)[-2:] == ["tcp:port=9:interface=127.0.0.1:backlog=2048", serve.APPLICATION]
    monkeypatch.setenv("LISTEN_BACKLOG", "0")
    with pytest.raises(ValueError, match="LISTEN_BACKLOG"):
        serve.endpoint("127.0.0.1", 9)


def _listen_queue_limit(port: int) -> int | None:
    """The listening socket's backlog as the kernel holds it (ss's Send-Q for a LISTEN socket)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "LISTEN":
            return int(fields[2])
    return None


def test_the_served_process_listens_with_that_backlog(clean_env, tmp_path):
    # The real thing: `python -m telehealth.serve` execs daphne, which listens with the backlog asked
    # (Twisted's default, which daphne's -b/-p use, is 50: a join burst overflowed it, measured).
    log_path = tmp_path / "serve.log"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "telehealth.serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env={**clean_env(), "LISTEN_BACKLOG": "700"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while f"Listening on TCP address 127.0.0.1:{port}" not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
        assert _listen_queue_limit(port) == 700
    finally:
        process.terminate()
        process.wait(timeout=10)
