"""The media path of a session: a pure decision with stable codes."""

from __future__ import annotations

import pytest

from media import modes
from media.modes import MediaMode

GROUP_KINDS = ["group", "family", "education", "holistic"]


@pytest.mark.parametrize("kind", GROUP_KINDS)
def test_decide_group_kinds_use_the_sfu_when_configured(kind):
    assert modes.decide(kind, "auto", sfu_available=True) == MediaMode("sfu", "media.group")


@pytest.mark.parametrize("kind", GROUP_KINDS)
def test_decide_group_kinds_fall_back_to_mesh_without_sfu(kind):
    assert modes.decide(kind, "auto", sfu_available=False) == MediaMode("p2p", "media.no_sfu")


@pytest.mark.parametrize("kind", ["individual", "medication"])
@pytest.mark.parametrize("sfu_available", [True, False])
def test_decide_one_to_one_kinds_stay_p2p(kind, sfu_available):
    assert modes.decide(kind, "auto", sfu_available=sfu_available) == MediaMode("p2p", "media.one_to_one")


@pytest.mark.parametrize("kind", ["group", "individual"])
def test_decide_forced_sfu_preference_wins_over_the_kind(kind):
    assert modes.decide(kind, "sfu", sfu_available=True) == MediaMode("sfu", "media.forced_sfu")
    assert modes.decide(kind, "sfu", sfu_available=False) == MediaMode("p2p", "media.no_sfu")


@pytest.mark.parametrize("sfu_available", [True, False])
def test_decide_forced_p2p_preference_wins_over_the_kind(sfu_available):
    assert modes.decide("group", "p2p", sfu_available=sfu_available) == MediaMode("p2p", "media.forced_p2p")


@pytest.mark.parametrize(("mode", "people", "crowded"), [("p2p", 4, False), ("p2p", 5, True), ("sfu", 15, False)])
def test_mesh_crowded_past_four_people_only(mode, people, crowded):
    assert modes.mesh_crowded(MediaMode(mode, "x"), people) is crowded
