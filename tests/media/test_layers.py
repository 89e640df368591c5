"""Simulcast layer choice: the layout's wishes fitted to the subscriber's bandwidth (pure)."""

from __future__ import annotations

from media import layers
from media.layers import HIGH, LOW, OFF, Budget

GRID = {"spot": HIGH, "ann": LOW, "bob": LOW, "cat": LOW}  # most important first


def test_no_budget_known_gives_the_layout_as_it_is():
    assert layers.fit(GRID, None) == GRID


def test_a_roomy_budget_changes_nothing():
    assert layers.fit(GRID, 10_000) == GRID


def test_a_tight_budget_turns_the_large_picture_into_a_thumbnail_first():
    # 4 x 40 audio + 1200 + 3 x 300 = 2260 wanted; 1,500 fits four thumbnails (1,360)
    assert layers.fit(GRID, 1500) == {"spot": LOW, "ann": LOW, "bob": LOW, "cat": LOW}


def test_a_tighter_budget_turns_off_the_least_important_thumbnails_first():
    assert layers.fit(GRID, 800) == {"spot": LOW, "ann": LOW, "bob": OFF, "cat": OFF}


def test_a_budget_for_audio_only_turns_every_picture_off():
    assert layers.fit(GRID, 100) == dict.fromkeys(GRID, OFF)


def test_large_pictures_the_layout_ranks_last_are_lowered_before_the_first():
    wanted = {"spotlight": HIGH, "speaker": HIGH, "ann": LOW}
    assert layers.fit(wanted, 2000) == {"spotlight": HIGH, "speaker": LOW, "ann": LOW}


def test_off_stays_off_whatever_the_budget():
    assert layers.fit({"ann": OFF, "bob": HIGH}, 100_000) == {"ann": OFF, "bob": HIGH}


def test_budget_is_the_smaller_of_the_client_estimate_and_a_live_slowlink_cap():
    budget = Budget(client_kbps=3000)
    assert budget.limit(now=0) == 3000

    budget.slowlink({"ann": HIGH, "bob": LOW}, now=10)  # (1200 + 300 + 80) / 2

    assert budget.limit(now=11) == 790
    assert budget.limit(now=10 + layers.SLOWLINK_SECONDS + 1) == 3000  # the cap runs out


def test_a_second_slowlink_while_capped_halves_the_cap_again():
    budget = Budget()
    budget.slowlink({"ann": HIGH}, now=0)  # 620
    budget.slowlink({"ann": HIGH}, now=1)

    assert budget.limit(now=2) == 310
