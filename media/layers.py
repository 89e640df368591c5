"""Which simulcast picture of each member a subscriber receives: pure decisions, no Janus here.

The client says what its layout wants of each member (``high`` for the spotlight or the active
speaker, ``low`` for a thumbnail, ``off`` for a tile not on screen or audio-only mode) and, when
it has one, an estimate of what its downlink carries. The server (media.broker) may know better:
Janus reports ``slowlink`` when it loses packets on the way to this subscriber. ``fit`` lowers the
layout's wishes until they fit the smaller of the two: first the large pictures the layout ranks
last become thumbnails, then the last thumbnails are turned off. Audio is never touched: a person
on a weak connection keeps hearing the group and sees names where pictures were.
"""

from __future__ import annotations

from dataclasses import dataclass

OFF, LOW, HIGH = "off", "low", "high"
QUALITIES = (OFF, LOW, HIGH)

# Rough cost of one forwarded stream, kbps: static/js/sfu.js caps the high layer at 1,200 kbps and
# the half-size one at 500 kbps, which a 320x240 picture rarely reaches; Opus speech is ~40 kbps.
KBPS = {OFF: 0, LOW: 300, HIGH: 1200}
AUDIO_KBPS = 40

# After a slowlink, the budget is what was being forwarded times this, for this long.
SLOWLINK_FACTOR = 0.5
SLOWLINK_SECONDS = 15.0


def cost(layers: dict[str, str]) -> int:
    return sum(KBPS[quality] for quality in layers.values())


def fit(wanted: dict[str, str], budget_kbps: int | None) -> dict[str, str]:
    """The layout's wishes (in the layout's order: most important first), lowered to fit the budget
    (total kbps for the subscriber, audio included; None: no limit known)."""
    chosen = dict(wanted)
    if budget_kbps is None:
        return chosen
    video_budget = budget_kbps - AUDIO_KBPS * len(wanted)
    order = list(reversed(chosen))  # least important first
    for step_from, step_to in ((HIGH, LOW), (LOW, OFF)):
        for member in order:
            if cost(chosen) <= video_budget:
                return chosen
            if chosen[member] == step_from:
                chosen[member] = step_to
    return chosen


@dataclass
class Budget:
    """One subscriber's bandwidth budget: the client's estimate and the server's slowlink cap."""

    client_kbps: int | None = None
    slow_cap_kbps: int | None = None
    slow_until: float = 0.0

    def limit(self, now: float) -> int | None:
        caps = [c for c in (self.client_kbps, self.slow_cap_kbps if now < self.slow_until else None) if c is not None]
        return min(caps) if caps else None

    def slowlink(self, forwarding: dict[str, str], now: float) -> None:
        """Janus lost packets on the way to this subscriber: halve what it forwards for a while
        (a second slowlink while capped halves again)."""
        current = cost(forwarding) + AUDIO_KBPS * len(forwarding)
        if now < self.slow_until and self.slow_cap_kbps is not None:
            current = min(current, self.slow_cap_kbps)
        self.slow_cap_kbps = int(current * SLOWLINK_FACTOR)
        self.slow_until = now + SLOWLINK_SECONDS
