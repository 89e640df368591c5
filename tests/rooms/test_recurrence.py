"""Pure recurrence: local dates and UTC instants of a weekly series, across daylight-saving changes.

US daylight saving in 2026: spring-forward on Sunday 8 March (02:00 EST -> 03:00 EDT),
fall-back on Sunday 1 November (02:00 EDT -> 01:00 EST). An 18:00 group in New York is
23:00 UTC in winter (EST, UTC-5) and 22:00 UTC in summer (EDT, UTC-4).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from rooms.models import Program, Room, RoomKind, SessionSeries
from rooms.recurrence import Occurrence, SeriesRule, occurrences_between, to_utc

NEW_YORK = ZoneInfo("America/New_York")
THREE_HOURS = timedelta(hours=3)

MON_WED_FRI_18 = SeriesRule(
    weekdays=("MO", "WE", "FR"),
    start_time=time(18, 0),
    duration=THREE_HOURS,
    time_zone="America/New_York",
    starts_on=date(2026, 1, 5),
)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def occ(day: date, starts_at: datetime, duration: timedelta = THREE_HOURS) -> Occurrence:
    return Occurrence(day, starts_at, starts_at + duration)


def test_occurrences_between_spring_forward_shifts_utc_from_23_to_22():
    # Act: the week around Sunday 8 March
    result = occurrences_between(MON_WED_FRI_18, date(2026, 3, 4), date(2026, 3, 11))

    # Assert
    assert result == [
        occ(date(2026, 3, 4), utc(2026, 3, 4, 23, 0)),
        occ(date(2026, 3, 6), utc(2026, 3, 6, 23, 0)),
        occ(date(2026, 3, 9), utc(2026, 3, 9, 22, 0)),
        occ(date(2026, 3, 11), utc(2026, 3, 11, 22, 0)),
    ]


def test_occurrences_between_fall_back_shifts_utc_from_22_to_23():
    # Act: the week around Sunday 1 November
    result = occurrences_between(MON_WED_FRI_18, date(2026, 10, 28), date(2026, 11, 4))

    # Assert
    assert result == [
        occ(date(2026, 10, 28), utc(2026, 10, 28, 22, 0)),
        occ(date(2026, 10, 30), utc(2026, 10, 30, 22, 0)),
        occ(date(2026, 11, 2), utc(2026, 11, 2, 23, 0)),
        occ(date(2026, 11, 4), utc(2026, 11, 4, 23, 0)),
    ]


def test_occurrences_between_local_start_stays_18_all_year():
    # Act
    result = occurrences_between(MON_WED_FRI_18, date(2026, 1, 5), date(2026, 12, 31))

    # Assert: every occurrence is 18:00 on a Mon/Wed/Fri in New York, on its own local date
    local_starts = [o.starts_at.astimezone(NEW_YORK) for o in result]
    assert len(result) == 155  # 51 full weeks from Mon 5 Jan, then Mon 28 and Wed 30 Dec
    assert {(t.time(), t.strftime("%a")) for t in local_starts} == {
        (time(18, 0), "Mon"),
        (time(18, 0), "Wed"),
        (time(18, 0), "Fri"),
    }
    assert [t.date() for t in local_starts] == [o.occurrence_date for o in result]
    assert {o.starts_at.astimezone(UTC).hour for o in result} == {22, 23}
    assert all(o.ends_at - o.starts_at == THREE_HOURS for o in result)


def test_occurrences_between_exception_dates_are_skipped():
    # Arrange
    rule = replace(MON_WED_FRI_18, excluded=frozenset({date(2026, 3, 6), date(2026, 3, 9)}))

    # Act
    result = occurrences_between(rule, date(2026, 3, 4), date(2026, 3, 11))

    # Assert
    assert [o.occurrence_date for o in result] == [date(2026, 3, 4), date(2026, 3, 11)]


def test_occurrences_between_exception_on_other_weekday_changes_nothing():
    # Arrange: Tuesday is not a session day
    rule = replace(MON_WED_FRI_18, excluded=frozenset({date(2026, 3, 10)}))

    # Act
    result = occurrences_between(rule, date(2026, 3, 4), date(2026, 3, 11))

    # Assert
    assert result == occurrences_between(MON_WED_FRI_18, date(2026, 3, 4), date(2026, 3, 11))


def test_occurrences_between_until_is_inclusive():
    # Arrange: the series ends on a Monday
    rule = replace(MON_WED_FRI_18, until=date(2026, 3, 9))

    # Act
    result = occurrences_between(rule, date(2026, 3, 1), date(2026, 3, 31))

    # Assert
    assert [o.occurrence_date for o in result] == [
        date(2026, 3, 2),
        date(2026, 3, 4),
        date(2026, 3, 6),
        date(2026, 3, 9),
    ]


def test_occurrences_between_window_bounds_are_inclusive():
    # Act: a window that starts and ends on session days
    result = occurrences_between(MON_WED_FRI_18, date(2026, 3, 2), date(2026, 3, 6))

    # Assert
    assert [o.occurrence_date for o in result] == [date(2026, 3, 2), date(2026, 3, 4), date(2026, 3, 6)]


def test_occurrences_between_starts_on_bounds_the_window():
    # Arrange: a series that starts on a Wednesday
    rule = replace(MON_WED_FRI_18, starts_on=date(2026, 3, 4))

    # Act
    result = occurrences_between(rule, date(2026, 3, 1), date(2026, 3, 9))

    # Assert
    assert [o.occurrence_date for o in result] == [date(2026, 3, 4), date(2026, 3, 6), date(2026, 3, 9)]


def test_occurrences_between_limit_returns_the_first_ones():
    # Arrange: the exception does not use up the limit
    rule = replace(MON_WED_FRI_18, excluded=frozenset({date(2026, 3, 4)}))

    # Act
    result = occurrences_between(rule, date(2026, 3, 1), date(2026, 12, 31), limit=3)

    # Assert
    assert [o.occurrence_date for o in result] == [date(2026, 3, 2), date(2026, 3, 6), date(2026, 3, 9)]


def test_occurrences_between_limit_zero_is_empty():
    # Act
    result = occurrences_between(MON_WED_FRI_18, date(2026, 3, 1), date(2026, 12, 31), limit=0)

    # Assert
    assert result == []


@pytest.mark.parametrize(
    ("rule", "first", "last"),
    [
        pytest.param(
            replace(MON_WED_FRI_18, starts_on=date(2026, 3, 10), until=date(2026, 3, 9)),
            date(2026, 3, 1),
            date(2026, 3, 31),
            id="until-before-starts-on",
        ),
        pytest.param(MON_WED_FRI_18, date(2026, 3, 9), date(2026, 3, 8), id="last-before-first"),
        pytest.param(
            replace(MON_WED_FRI_18, until=date(2026, 2, 27)),
            date(2026, 3, 1),
            date(2026, 3, 31),
            id="window-after-until",
        ),
        pytest.param(MON_WED_FRI_18, date(2025, 12, 1), date(2026, 1, 4), id="window-before-starts-on"),
        pytest.param(replace(MON_WED_FRI_18, weekdays=()), date(2026, 3, 1), date(2026, 3, 31), id="no-weekdays"),
    ],
)
def test_occurrences_between_empty_range_is_empty(rule, first, last):
    # Act
    result = occurrences_between(rule, first, last)

    # Assert
    assert result == []


# --- the spring-forward gap and the fall-back fold -------------------------------------------------

SUNDAY_0230 = SeriesRule(
    weekdays=("SU",),
    start_time=time(2, 30),
    duration=timedelta(hours=1),
    time_zone="America/New_York",
    starts_on=date(2026, 3, 1),
)


def test_occurrences_between_start_in_dst_gap_moves_forward():
    # Act: 02:30 does not exist on 8 March in New York
    result = occurrences_between(SUNDAY_0230, date(2026, 3, 1), date(2026, 3, 15))

    # Assert: the gap day maps to 07:30 UTC = 03:30 EDT, one hour later on the wall clock
    assert result == [
        occ(date(2026, 3, 1), utc(2026, 3, 1, 7, 30), timedelta(hours=1)),
        occ(date(2026, 3, 8), utc(2026, 3, 8, 7, 30), timedelta(hours=1)),
        occ(date(2026, 3, 15), utc(2026, 3, 15, 6, 30), timedelta(hours=1)),
    ]
    assert result[1].starts_at.astimezone(NEW_YORK).timetz().replace(tzinfo=None) == time(3, 30)


def test_to_utc_dst_gap_maps_forward_consistently():
    # Act: every wall time in the missing hour, computed twice
    first = [to_utc(date(2026, 3, 8), time(2, minute), "America/New_York") for minute in (0, 30, 59)]
    second = [to_utc(date(2026, 3, 8), time(2, minute), "America/New_York") for minute in (0, 30, 59)]

    # Assert: same answers each time, in order, after the transition, as EST offsets read forward
    assert first == second == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 7, 59)]
    assert all(moment >= utc(2026, 3, 8, 7, 0) for moment in first)  # 07:00 UTC is the transition


def test_to_utc_fall_back_fold_takes_the_first_0130():
    # Act: 01:30 happens twice on 1 November in New York
    moment = to_utc(date(2026, 11, 1), time(1, 30), "America/New_York")

    # Assert: the first one, still EDT
    assert moment == utc(2026, 11, 1, 5, 30)


def test_occurrences_between_duration_is_elapsed_time_across_the_change():
    # Arrange: a 3-hour session starting at 00:30 on the spring-forward night
    rule = replace(SUNDAY_0230, start_time=time(0, 30), duration=THREE_HOURS)

    # Act
    (result,) = occurrences_between(rule, date(2026, 3, 8), date(2026, 3, 8))

    # Assert: 05:30 -> 08:30 UTC, i.e. 00:30 EST -> 04:30 EDT on the wall clock
    assert result == occ(date(2026, 3, 8), utc(2026, 3, 8, 5, 30))
    assert result.ends_at.astimezone(NEW_YORK).hour == 4


# --- SeriesRule --------------------------------------------------------------------------------------


def test_series_rule_from_series_normalises_codes_and_exceptions():
    # Arrange: an unsaved series (no database needed), with sloppy but valid input
    program = Program(name="Evening IOP", time_zone="America/Chicago", starts_on=date(2026, 1, 1))
    room = Room(program=program, name="Room A", kind=RoomKind.GROUP)
    series = SessionSeries(
        room=room,
        title="Process group",
        weekdays="mo, we,FR",
        start_time=time(18, 0),
        duration=THREE_HOURS,
        starts_on=date(2026, 1, 5),
        until=date(2026, 6, 26),
        exception_dates="2026-05-25, 2026-07-03,",
    )

    # Act
    rule = SeriesRule.from_series(series)

    # Assert
    assert rule == SeriesRule(
        weekdays=("MO", "WE", "FR"),
        start_time=time(18, 0),
        duration=THREE_HOURS,
        time_zone="America/Chicago",
        starts_on=date(2026, 1, 5),
        until=date(2026, 6, 26),
        excluded=frozenset({date(2026, 5, 25), date(2026, 7, 3)}),
    )


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param(MON_WED_FRI_18, "FREQ=WEEKLY;BYDAY=MO,WE,FR", id="open-ended"),
        pytest.param(
            replace(MON_WED_FRI_18, until=date(2026, 6, 26)),
            "FREQ=WEEKLY;BYDAY=MO,WE,FR;UNTIL=20260626",
            id="with-until",
        ),
    ],
)
def test_series_rule_to_rrule_text_is_rfc5545(rule, expected):
    # Act
    text = rule.to_rrule_text()

    # Assert
    assert text == expected


def test_occurrences_between_uses_the_rule_time_zone():
    # Arrange: the same rule in Chicago (UTC-6 in winter) and Phoenix (no daylight saving)
    chicago = replace(MON_WED_FRI_18, time_zone="America/Chicago")
    phoenix = replace(MON_WED_FRI_18, time_zone="America/Phoenix")

    # Act
    chicago_starts = [o.starts_at for o in occurrences_between(chicago, date(2026, 3, 6), date(2026, 3, 9))]
    phoenix_starts = [o.starts_at for o in occurrences_between(phoenix, date(2026, 3, 6), date(2026, 3, 9))]

    # Assert
    assert chicago_starts == [utc(2026, 3, 7, 0, 0), utc(2026, 3, 9, 23, 0)]
    assert phoenix_starts == [utc(2026, 3, 7, 1, 0), utc(2026, 3, 10, 1, 0)]
