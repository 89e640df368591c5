"""Pure recurrence: which dates and UTC instants a weekly series produces.

The rule is evaluated on the program's local calendar with dateutil's RRULE and
each local start is then converted to UTC with zoneinfo. So a Monday 18:00
group stays 18:00 for the clinic after a daylight-saving change, while its UTC
instant moves by an hour. No database access here.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from dateutil.rrule import FR, MO, SA, SU, TH, TU, WE, WEEKLY, rrule

_WEEKDAYS = {"MO": MO, "TU": TU, "WE": WE, "TH": TH, "FR": FR, "SA": SA, "SU": SU}


@dataclass(frozen=True)
class SeriesRule:
    weekdays: tuple[str, ...]
    start_time: time
    duration: timedelta
    time_zone: str
    starts_on: date
    until: date | None = None
    excluded: frozenset[date] = frozenset()

    @classmethod
    def from_series(cls, series) -> SeriesRule:
        return cls(
            weekdays=tuple(series.weekday_codes),
            start_time=series.start_time,
            duration=series.duration,
            time_zone=series.time_zone,
            starts_on=series.starts_on,
            until=series.until,
            excluded=frozenset(series.excluded),
        )

    def to_rrule_text(self) -> str:
        """RFC 5545 text for docs and the admin preview."""
        parts = [f"FREQ=WEEKLY;BYDAY={','.join(self.weekdays)}"]
        if self.until:
            parts.append(f"UNTIL={self.until:%Y%m%d}")
        return ";".join(parts)


@dataclass(frozen=True)
class Occurrence:
    occurrence_date: date  # local calendar date in the program's zone
    starts_at: datetime  # aware, UTC
    ends_at: datetime  # aware, UTC


def to_utc(day: date, at: time, zone: str) -> datetime:
    """Local wall time -> UTC. A wall time inside a spring-forward gap moves forward (fold=0)."""
    local = datetime.combine(day, at, tzinfo=zoneinfo.ZoneInfo(zone))
    return local.astimezone(UTC)


def occurrences_between(rule: SeriesRule, first: date, last: date, *, limit: int | None = None) -> list[Occurrence]:
    """Occurrences whose local date lies in [first, last] and in the rule's own range."""
    start = max(first, rule.starts_on)
    end = min(last, rule.until) if rule.until else last
    # limit=0 means "none": the loop below only checks the limit after appending one.
    if end < start or not rule.weekdays or (limit is not None and limit <= 0):
        return []
    dates = rrule(
        WEEKLY,
        byweekday=[_WEEKDAYS[code] for code in rule.weekdays],
        dtstart=datetime.combine(start, time()),
        until=datetime.combine(end, time()),
    )
    result: list[Occurrence] = []
    for moment in dates:
        day = moment.date()
        if day in rule.excluded:
            continue
        starts_at = to_utc(day, rule.start_time, rule.time_zone)
        # Duration is wall-clock elapsed time: a 3-hour group is 3 hours even on a DST night.
        result.append(Occurrence(day, starts_at, starts_at + rule.duration))
        if limit is not None and len(result) >= limit:
            break
    return result
