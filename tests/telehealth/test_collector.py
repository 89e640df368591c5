"""telehealth.collector: full collections on a timer, none on allocation counts."""

from __future__ import annotations

import gc
import time
import weakref

from telehealth import collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def old_cycle() -> weakref.ref:
    """A cycle that has lived through two younger collections (now in the oldest generation),
    then becomes garbage."""
    node = Node()
    gc.collect(0)
    gc.collect(1)
    ref = weakref.ref(node)
    del node
    return ref


def test_automatic_full_collections_are_off_and_the_timer_frees_old_cycles():
    before = gc.get_threshold()
    stop = collector.full_collections_every(0.5)
    try:
        assert gc.get_threshold() == (before[0], before[1], collector.NEVER)
        ref = old_cycle()
        for _ in range(50):  # plenty of young collections: none of them reaches the old cycle
            gc.collect(1)
        assert ref() is not None
        deadline = time.monotonic() + 5
        while ref() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ref() is None  # the timed full collection freed it
    finally:
        stop.set()
    deadline = time.monotonic() + 5
    while gc.get_threshold() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gc.get_threshold() == before  # stopping restores CPython's schedule


def test_zero_keeps_cpythons_schedule():
    before = gc.get_threshold()
    assert collector.full_collections_every(0) is None
    assert gc.get_threshold() == before
