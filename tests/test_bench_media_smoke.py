"""The media benchmark stays runnable: its smallest run measures real numbers on both paths.

The full benchmark (`make bench-media`, rooms of 4, 8 and 12) is not a test; this runs a room of
3 with one join and a 3-second CPU window, end to end (its own Janus and daphne), and fails when
any figure the report is made of is missing or implausible.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media.conftest import require_binary

pytestmark = pytest.mark.media

ROOT = Path(__file__).resolve().parent.parent


def test_bench_media_smallest_room_measures_both_paths(tmp_path):
    require_binary("janus")
    out = tmp_path / "media.json"
    docs_before = (ROOT / "docs" / "performance.md").read_text()

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.media",
            "--sizes",
            "3",
            "--reps",
            "1",
            "--window",
            "3",
            "--settle",
            "0.5",
            "--quiet-wait",
            "0",
            "--no-write",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    results = {r["path"]: r for r in report["results"]}
    assert set(results) == {"reference", "broker"}
    for path, r in results.items():
        assert r["size"] == 3 and r["errors"] == [], (path, r)
        (join,) = r["joins"]
        assert join["feeds"] == 2, (path, join)  # a first frame of both other members was decoded
        assert 0 < join["subscribe_ms"] <= join["join_ms"] < 30_000, (path, join)
        assert r["median_join_ms"] == join["join_ms"]
    windows = {w["path"]: w for w in report["windows"]}
    assert set(windows) == {"reference", "broker"}
    for path, w in windows.items():
        assert w["size"] == 3 and w["streams"] == 12, (path, w)  # 3 x 2 video + 3 x 2 audio
        assert 2.5 <= w["seconds"] < 10, (path, w)
        assert w["janus_cpu_s"] > 0 and 0 < w["janus_pct_per_stream"] < 100, (path, w)
        assert w["client_cpu_s"] > 0, (path, w)
        assert w["received_mbit_s"] > 0, (path, w)  # Janus forwarded media to the members
        assert w["complete"] == "3/3", (path, w)  # everyone had decoded a frame of everyone
    assert windows["broker"]["server_cpu_s"] is not None and windows["broker"]["server_pct_per_member"] is not None
    assert "| 3 | " in result.stdout and "### CPU while the largest room flows" in result.stdout
    assert (ROOT / "docs" / "performance.md").read_text() == docs_before  # --no-write
