"""The benchmark's verdicts: which runs are held to an issue target and which are only shown."""

from types import SimpleNamespace

from bench.run import RunRecord, render_targets


def _traffic(cpu_us: float) -> dict:
    return {"delivered": 100, "expected": 100, "delivery_ratio": 1.0, "p99_ms": 5.0, "cpu_us_per_delivery": cpu_us}


def _bench(records: list[RunRecord]):
    def find(scenario, target, procs=None):
        return next(
            (r for r in records if r.scenario == scenario and r.target == target and procs in (None, r.procs)), None
        )

    return SimpleNamespace(records=records, find=find)


def test_two_processes_each_carrying_one_processs_load_are_held_to_the_target_and_the_rest_only_shown():
    bench = _bench(
        [
            RunRecord("rooms100", "telehealth", 1, result=_traffic(100.0)),
            RunRecord("procs2", "telehealth", 2, result=_traffic(150.0)),
            RunRecord("proxy1", "telehealth", 1, result=_traffic(100.0)),
            RunRecord("routed2", "telehealth", 2, result=_traffic(108.0)),
            RunRecord("scaled2", "telehealth", 2, result=_traffic(120.0)),
        ]
    )

    rows = render_targets(bench)

    split = next(row for row in rows if "| procs2 x2 |" in row and "1.50x" in row)
    assert split.startswith("| comparison: 2 processes (each session split over both")
    assert split.endswith("| n/a |")
    routed = next(row for row in rows if "| routed2 x2 |" in row and "1.08x" in row)
    assert routed.startswith("| comparison: 2 processes (behind the proxy, each session on one, the same load")
    assert routed.endswith("| n/a |")
    scaled = next(row for row in rows if "| scaled2 x2 |" in row and "1.20x" in row)
    assert scaled.startswith("| 2 processes (behind the proxy, each session on one, each carrying what one does")
    assert "<= 1.1x one process per delivery (proxy1)" in scaled
    assert scaled.endswith("| **not met** |")
