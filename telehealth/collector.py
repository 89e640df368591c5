"""Full garbage collections on a timer instead of on allocation counts.

CPython's cyclic collector walks the whole heap (a full collection) after enough objects have
survived two younger collections. A server holding 1,200 WebSockets keeps a large heap of
long-lived objects (each connection's protocol, transport, consumer, scope and tasks), and its
steady traffic keeps promoting a few survivors (a burst of keepalive pings, say), so full
collections came every few tens of seconds, each pausing the event loop for 70-100 ms and
walking 1,200 connections' objects to free nothing: measured in ``rooms100``, one per 30-second
window, ~4 % of the server's CPU and the run's slowest deliveries (docs/performance.md).

Here automatic full collections are off and a daemon thread runs one every
``GC_FULL_COLLECTION_SECONDS`` (300 unless set; 0 keeps CPython's own schedule). Young
collections run as before, so short-lived cycles (most of a message's garbage) are freed as
soon as ever; only cycles among objects that had already lived long (a closed connection's)
wait for the timer.
"""

from __future__ import annotations

import gc
import logging
import threading

log = logging.getLogger(__name__)

# A generation-2 threshold no server reaches: gen1 collections between two full ones.
NEVER = 1 << 30


def full_collections_every(seconds: float) -> threading.Event | None:
    """Turn automatic full collections off and run one every ``seconds`` from a daemon thread.
    Returns the event that stops the thread (and restores the thresholds); None when ``seconds``
    is 0 (nothing changed)."""
    if seconds <= 0:
        return None
    young, middle, full = gc.get_threshold()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(seconds):
            collected = gc.collect()
            log.debug("timed full collection freed %d objects", collected)
        gc.set_threshold(young, middle, full)

    gc.set_threshold(young, middle, NEVER)
    threading.Thread(target=run, name="full garbage collections", daemon=True).start()
    return stop
