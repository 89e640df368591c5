"""The benchmark stays runnable: a two-second reference run delivers every message.

The full benchmark (`make bench`) is not a test; this only guards bench/ against rot.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_reference_run_delivers_everything():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--scenario",
            "rooms100",
            "--targets",
            "reference",
            "--duration",
            "2",
            "--no-write",
            "--quiet-wait",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| rooms100 | reference |"))
    assert "| 100.00 % |" in row, row
