"""CPU seconds of processes, read from /proc (Linux only).

``/proc/<pid>/stat`` sums all threads of a process, so daphne's ``sync_to_async``
worker threads are included.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    # The list then starts at field 3 of proc(5): index = field number - 3.
    return raw[raw.rindex(b")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (all its threads) in seconds, or None once it has exited."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(root: int) -> float | None:
    """CPU of ``root``, of the children it has reaped, and of its live children.

    PostgreSQL forks a backend per connection and reaps it when it exits; the
    postmaster's cutime + cstime keep the CPU of the exited ones, so nothing a
    short-lived backend spent is lost.
    """
    fields = _stat_fields(root)
    if fields is None:
        return None
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        child = _stat_fields(int(entry.name))
        if child is not None and int(child[1]) == root:  # field 4: ppid
            total += int(child[11]) + int(child[12])
    return total / CLOCK_TICKS


def pids_named(name: str) -> list[int]:
    """PIDs whose command name is exactly ``name`` (``pgrep -x``), oldest first."""
    done = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return sorted(int(pid) for pid in done.stdout.split())


def redis_pid(redis_url: str | None = None) -> int | None:
    """The pid of the redis-server behind ``redis_url`` (its INFO says), else the oldest redis-server.

    Asking the server matters when a test suite runs a private redis-server next to it.
    """
    if redis_url:
        try:
            import redis

            client = redis.Redis.from_url(redis_url, socket_timeout=2)
            try:
                return int(client.info("server")["process_id"])
            finally:
                client.close()
        except Exception:
            pass
    pids = pids_named("redis-server")
    return pids[0] if pids else None


def postmaster_pid() -> int | None:
    """The PostgreSQL postmaster: the ``postgres`` process whose parent is not one."""
    pids = set(pids_named("postgres"))
    for pid in sorted(pids):
        fields = _stat_fields(pid)
        if fields is not None and int(fields[1]) not in pids:
            return pid
    return None


class CpuMeter:
    """CPU seconds per named component between ``start()`` and ``stop()``.

    ``components`` maps a name to a zero-argument function returning the current
    cumulative CPU seconds (or None when unknown).
    """

    def __init__(self, components: dict) -> None:
        self._components = components
        self._before: dict[str, float | None] = {}

    def start(self) -> None:
        self._before = {name: read() for name, read in self._components.items()}

    def stop(self) -> dict[str, float | None]:
        spent: dict[str, float | None] = {}
        for name, read in self._components.items():
            now, before = read(), self._before.get(name)
            spent[name] = None if now is None or before is None else max(0.0, now - before)
        return spent


def cpu_seconds_self() -> float:
    return cpu_seconds(os.getpid()) or 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all processes spent, summed over cores (``/proc/stat``: everything but idle and iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
