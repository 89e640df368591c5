"""The benchmark's verdicts: which runs are held to an issue target and which are only shown."""

from argparse import Namespace

from bench.run import Bench, RunRecord, render_targets


def _traffic(cpu_us: float) -> dict:
    return {"delivered": 100, "expected": 100, "delivery_ratio": 1.0, "p99_ms": 5.0, "cpu_us_per_delivery": cpu_us}


def _bench(records: list[RunRecord]) -> Bench:
    bench = Bench(Namespace(layer="redis"))
    bench.records = records
    return bench


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


def test_interleaved_pairs_decide_by_their_median_and_each_is_shown():
    records = []
    for pair, (one, two) in enumerate([(100.0, 120.0), (100.0, 95.0), (80.0, 84.0)]):
        records.append(RunRecord("proxy1", "telehealth", 1, result=_traffic(one), pair=pair))
        records.append(RunRecord("scaled2", "telehealth", 2, result=_traffic(two), pair=pair))

    rows = render_targets(_bench(records))

    # One verdict for the three pairs (1.20x, 0.95x, 1.05x: median 1.05x), at the first pair's row.
    verdicts = [row for row in rows if "<= 1.1x one process" in row]
    assert len(verdicts) == 1
    assert "| scaled2 x2 | 1.05x, the median of 3 pairs: 1.20x (120.0 vs 100.0 us), 0.95x" in verdicts[0]
    assert verdicts[0].endswith("| met |")
    # Every pair's own runs are still checked for delivery.
    assert any(row.startswith("| 100 % delivery | scaled2 #3 x2 |") for row in rows)
