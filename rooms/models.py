"""The scheduling domain: programs, tracks, enrollment, rooms, series, sessions, audit.

Times are stored aware in UTC. Recurrences are evaluated in the program's own
time zone (rooms.recurrence), so "18:00 every Monday" stays 18:00 across
daylight-saving changes. Every model has a UUID primary key: ids that reach a
URL, a browser or a log line are opaque.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Role, User, default_time_zone, validate_time_zone


class LevelOfCare(models.TextChoices):
    IOP = "iop", "Intensive outpatient (IOP)"
    PHP = "php", "Partial hospitalization (PHP)"
    OP = "op", "Standard outpatient"


class Program(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    level_of_care = models.CharField(max_length=8, choices=LevelOfCare.choices, default=LevelOfCare.IOP)
    weekly_hours_min = models.DurationField(default=timedelta(hours=9), help_text="Weekly attendance target: minimum.")
    weekly_hours_max = models.DurationField(default=timedelta(hours=15), help_text="Weekly attendance target: maximum.")
    typical_length_weeks = models.PositiveSmallIntegerField(default=10)
    time_zone = models.CharField(max_length=64, default=default_time_zone, validators=[validate_time_zone])
    starts_on = models.DateField(help_text="First day the program runs; enrollments cannot start before it.")
    ends_on = models.DateField(null=True, blank=True, help_text="Last day, if the program closes.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(weekly_hours_min__lte=models.F("weekly_hours_max")),
                name="rooms_program_weekly_min_le_max",
                violation_error_message="The weekly minimum cannot exceed the weekly maximum.",
            ),
            models.CheckConstraint(
                condition=Q(ends_on__isnull=True) | Q(ends_on__gte=models.F("starts_on")),
                name="rooms_program_ends_after_start",
                violation_error_message="The program cannot end before it starts.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def covers(self, day: date) -> bool:
        return self.starts_on <= day and (self.ends_on is None or day <= self.ends_on)


class PartOfDay(models.TextChoices):
    MORNING = "morning", "Morning"
    AFTERNOON = "afternoon", "Afternoon"
    EVENING = "evening", "Evening"


class AdmissionPolicy(models.TextChoices):
    AUTO_THEN_KNOCK = "auto_then_knock", "Admit automatically until the late-join limit, then knock"
    THERAPIST_ADMITS = "therapist_admits", "The therapist admits everyone"


class Track(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="tracks")
    name = models.CharField(max_length=120)
    part_of_day = models.CharField(max_length=16, choices=PartOfDay.choices)
    therapists = models.ManyToManyField(User, through="TrackTherapist", related_name="tracks_facilitated")
    admission_policy = models.CharField(
        max_length=24, choices=AdmissionPolicy.choices, default=AdmissionPolicy.AUTO_THEN_KNOCK
    )

    class Meta:
        ordering = ["program__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["program", "name"], name="rooms_track_unique_name_per_program"),
        ]

    def __str__(self) -> str:
        return f"{self.program.name} · {self.name}"


class FacilitatorRole(models.TextChoices):
    LEAD = "lead", "Lead therapist"
    CO = "co", "Co-facilitator"


def _require_therapist(user: User | None, field: str) -> None:
    if user is not None and user.role != Role.THERAPIST:
        raise ValidationError({field: f"{user} is not a therapist."})


class TrackTherapist(models.Model):
    track = models.ForeignKey(Track, on_delete=models.CASCADE, related_name="facilitators")
    therapist = models.ForeignKey(User, on_delete=models.PROTECT, related_name="track_assignments")
    role = models.CharField(max_length=8, choices=FacilitatorRole.choices, default=FacilitatorRole.CO)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["track", "therapist"], name="rooms_tracktherapist_unique"),
            models.UniqueConstraint(
                fields=["track"],
                condition=Q(role="lead"),
                name="rooms_tracktherapist_one_lead",
                violation_error_message="A track has one lead therapist.",
            ),
        ]

    def clean(self) -> None:
        _require_therapist(getattr(self, "therapist", None), "therapist")

    def __str__(self) -> str:
        return f"{self.therapist} ({self.get_role_display()})"


class EnrollmentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    ON_HOLD = "on_hold", "On hold"
    COMPLETED = "completed", "Completed"
    DISCHARGED = "discharged", "Discharged"


class Enrollment(models.Model):
    """A participant in a track, with their own dates (rolling admission)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    participant = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="enrollments", limit_choices_to={"role": Role.PARTICIPANT}
    )
    track = models.ForeignKey(Track, on_delete=models.PROTECT, related_name="enrollments")
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True, help_text="Planned or actual last day; empty while open-ended.")
    status = models.CharField(max_length=16, choices=EnrollmentStatus.choices, default=EnrollmentStatus.ACTIVE)

    class Meta:
        ordering = ["-start_date"]
        constraints = [
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gte=models.F("start_date")),
                name="rooms_enrollment_ends_after_start",
                violation_error_message="An enrollment cannot end before it starts.",
            ),
            models.UniqueConstraint(
                fields=["participant", "track"],
                condition=Q(status__in=["active", "on_hold"]),
                name="rooms_enrollment_one_open_per_track",
                violation_error_message="This participant already has an open enrollment in this track.",
            ),
        ]

    def clean(self) -> None:
        errors = {}
        participant = getattr(self, "participant", None)
        if participant is not None and participant.role != Role.PARTICIPANT:
            errors["participant"] = f"{participant} is not a participant."
        track = getattr(self, "track", None)
        if track is not None and self.start_date:
            program = track.program
            if not program.covers(self.start_date):
                errors["start_date"] = f"The program runs from {program.starts_on}; the enrollment starts outside it."
            if self.end_date and program.ends_on and self.end_date > program.ends_on:
                errors["end_date"] = f"The program ends on {program.ends_on}; the enrollment ends after it."
        if errors:
            raise ValidationError(errors)
        if track is not None and self.start_date and self.status == EnrollmentStatus.ACTIVE:
            self._check_group_capacity(track)

    def _check_group_capacity(self, track: Track) -> None:
        """Refuse the enrollment that would put more people in a group than its room holds."""
        today = local_today(track.program.time_zone)
        first = max(self.start_date, today)
        if self.end_date and self.end_date < first:
            return  # a past enrollment changes no future roster
        room = rooms_meeting(track.pk, today).order_by("capacity").first()
        if room is None:
            return
        peak, day = peak_active_enrollments(
            track.pk,
            first,
            self.end_date,
            exclude_pk=None if self._state.adding else self.pk,
            extra=(self.start_date, self.end_date),
        )
        if peak > room.capacity:
            raise ValidationError(
                f"The room “{room.name}” holds {people(room.capacity)}; with this enrollment "
                f"{track.name} would have {people(peak, 'active participant')} on {day}. "
                f"Raise the room's capacity or choose other dates.",
                code="room.over_capacity",
            )

    def covers(self, day: date) -> bool:
        return self.start_date <= day and (self.end_date is None or day <= self.end_date)

    def __str__(self) -> str:
        return f"{self.participant} in {self.track.name}"


def people(count: int, noun: str = "participant") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def local_today(zone: str) -> date:
    """Today on the program's calendar (enrollment and series dates are local dates)."""
    import zoneinfo

    return timezone.localdate(timezone=zoneinfo.ZoneInfo(zone))


def peak_active_enrollments(
    track_id, first: date, last: date | None = None, *, exclude_pk=None, extra: tuple[date, date | None] | None = None
) -> tuple[int, date | None]:
    """The largest number of active enrollments of a track on any one day of [first, last], and that day.

    Rolling admission: twenty enrollments over a season may never meet on the same day, so a
    room's capacity is compared with the busiest day, not with the total.
    """
    qs = Enrollment.objects.filter(track_id=track_id, status=EnrollmentStatus.ACTIVE).filter(
        Q(end_date__isnull=True) | Q(end_date__gte=first)
    )
    if last is not None:
        qs = qs.filter(start_date__lte=last)
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    intervals = list(qs.values_list("start_date", "end_date"))
    if extra is not None:
        intervals.append(extra)
    events: list[tuple[date, int]] = []
    for start, end in intervals:
        start = max(start, first)
        if (end is not None and end < start) or (last is not None and start > last):
            continue
        events.append((start, 1))
        if end is not None:
            events.append((end + timedelta(days=1), -1))  # end dates are inclusive
    peak, peak_day, current = 0, None, 0
    # On one day, leavers go before joiners: a stay ending Monday and one starting Tuesday never meet.
    for day, delta in sorted(events, key=lambda event: (event[0], event[1])):
        current += delta
        if current > peak:
            peak, peak_day = current, day
    return peak, peak_day


def rooms_meeting(track_id, today: date) -> models.QuerySet[Room]:
    """Group-kind rooms where this track meets from today on (a current series or a future session)."""
    return (
        Room.objects.filter(kind__in=TRACK_ROSTER_KINDS)
        .filter(
            Q(series__track_id=track_id, series__until__isnull=True)
            | Q(series__track_id=track_id, series__until__gte=today)
            | Q(
                sessions__track_id=track_id,
                sessions__ends_at__gt=timezone.now(),
                sessions__status__in=[SessionStatus.SCHEDULED, SessionStatus.OPEN, SessionStatus.LIVE],
            )
        )
        .distinct()
    )


class RoomKind(models.TextChoices):
    GROUP = "group", "Group therapy"
    INDIVIDUAL = "individual", "Individual therapy"
    FAMILY = "family", "Family therapy"
    EDUCATION = "education", "Education"
    HOLISTIC = "holistic", "Holistic"
    MEDICATION = "medication", "Medication management"


# Kinds whose roster comes from a track's enrollments; the others list people explicitly.
TRACK_ROSTER_KINDS = frozenset({RoomKind.GROUP, RoomKind.EDUCATION, RoomKind.HOLISTIC})


class MediaPreference(models.TextChoices):
    AUTO = "auto", "Automatic (peer-to-peer for two, SFU for three or more)"
    P2P = "p2p", "Always peer-to-peer"
    SFU = "sfu", "Always through the SFU"


class Room(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="rooms")
    name = models.CharField(max_length=120, help_text="Staff-facing only; never shown in URLs or logs.")
    kind = models.CharField(max_length=16, choices=RoomKind.choices)
    capacity = models.PositiveSmallIntegerField(default=15, help_text="Participants at once (therapists not counted).")
    therapists = models.ManyToManyField(User, through="RoomTherapist", related_name="rooms_facilitated")
    media_preference = models.CharField(max_length=8, choices=MediaPreference.choices, default=MediaPreference.AUTO)

    class Meta:
        ordering = ["program__name", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(capacity__gte=1), name="rooms_room_capacity_positive"),
            models.UniqueConstraint(fields=["program", "name"], name="rooms_room_unique_name_per_program"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Only an existing group-kind room has tracks meeting in it whose size can exceed a new capacity.
        if self._state.adding or not self.capacity or self.kind not in TRACK_ROSTER_KINDS:
            return
        program = getattr(self, "program", None)
        if program is None:
            return
        today = local_today(program.time_zone)
        track_ids = set(
            SessionSeries.objects.filter(room_id=self.pk, track__isnull=False)
            .filter(Q(until__isnull=True) | Q(until__gte=today))
            .values_list("track_id", flat=True)
        ) | set(
            Session.objects.filter(room_id=self.pk, track__isnull=False, ends_at__gt=timezone.now())
            .exclude(status=SessionStatus.CANCELLED)
            .values_list("track_id", flat=True)
        )
        for track in Track.objects.filter(pk__in=track_ids).order_by("name"):
            peak, day = peak_active_enrollments(track.pk, today)
            if peak > self.capacity:
                raise ValidationError(
                    {
                        "capacity": (
                            f"{track.name} meets in this room and has {people(peak, 'active participant')} on {day}; "
                            f"the capacity cannot be lower than that."
                        )
                    },
                    code="room.over_capacity",
                )


class RoomTherapist(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="facilitators")
    therapist = models.ForeignKey(User, on_delete=models.PROTECT, related_name="room_assignments")
    role = models.CharField(max_length=8, choices=FacilitatorRole.choices, default=FacilitatorRole.CO)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "therapist"], name="rooms_roomtherapist_unique"),
        ]

    def clean(self) -> None:
        _require_therapist(getattr(self, "therapist", None), "therapist")

    def __str__(self) -> str:
        return f"{self.therapist} ({self.get_role_display()})"


WEEKDAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def validate_weekdays(value: str) -> None:
    codes = [code.strip().upper() for code in value.split(",") if code.strip()]
    if not codes:
        raise ValidationError("Choose at least one weekday (e.g. MO,WE,FR).", code="no_weekdays")
    bad = [code for code in codes if code not in WEEKDAY_CODES]
    if bad:
        raise ValidationError(
            "Unknown weekday code(s): %(bad)s. Use MO,TU,WE,TH,FR,SA,SU.", params={"bad": ", ".join(bad)}
        )


def validate_exception_dates(value: str) -> None:
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            date.fromisoformat(item)
        except ValueError:
            raise ValidationError(
                "%(item)s is not a date (use YYYY-MM-DD, separated by commas).", params={"item": item}
            ) from None


class SessionSeries(models.Model):
    """A recurring session: weekdays at a local start time in the program's time zone."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    room = models.ForeignKey(Room, on_delete=models.PROTECT, related_name="series")
    track = models.ForeignKey(
        Track,
        on_delete=models.PROTECT,
        related_name="series",
        null=True,
        blank=True,
        help_text="Required for group, education and holistic rooms: the roster comes from its enrollments.",
    )
    title = models.CharField(max_length=120, help_text="Shown to members of the session.")
    weekdays = models.CharField(max_length=32, validators=[validate_weekdays], help_text="e.g. MO,WE,FR")
    start_time = models.TimeField(help_text="Local start time in the program's time zone.")
    duration = models.DurationField(default=timedelta(hours=3))
    starts_on = models.DateField()
    until = models.DateField(null=True, blank=True, help_text="Last possible date; empty for open-ended.")
    exception_dates = models.CharField(
        max_length=2000,
        blank=True,
        validators=[validate_exception_dates],
        help_text="Dates without a session, YYYY-MM-DD separated by commas (holidays).",
    )
    lobby_opens_before = models.DurationField(default=timedelta(minutes=10))
    late_join_minutes = models.PositiveSmallIntegerField(default=10)
    admission_policy = models.CharField(
        max_length=24, choices=AdmissionPolicy.choices, blank=True, help_text="Empty: the track's policy."
    )

    class Meta:
        verbose_name_plural = "session series"
        ordering = ["title"]
        constraints = [
            models.CheckConstraint(
                condition=Q(duration__gt=timedelta(0)),
                name="rooms_series_duration_positive",
                violation_error_message="A session must last longer than zero minutes.",
            ),
            models.CheckConstraint(
                condition=Q(until__isnull=True) | Q(until__gte=models.F("starts_on")),
                name="rooms_series_until_after_start",
                violation_error_message="The series cannot end before it starts.",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def time_zone(self) -> str:
        return self.room.program.time_zone

    @property
    def weekday_codes(self) -> list[str]:
        return [code.strip().upper() for code in self.weekdays.split(",") if code.strip()]

    @property
    def excluded(self) -> set[date]:
        return {date.fromisoformat(p.strip()) for p in self.exception_dates.split(",") if p.strip()}

    def effective_admission_policy(self) -> str:
        if self.admission_policy:
            return self.admission_policy
        return self.track.admission_policy if self.track_id else AdmissionPolicy.AUTO_THEN_KNOCK

    def clean(self) -> None:
        # Imported here: recurrence is a pure module that only needs plain values.
        from rooms.recurrence import SeriesRule, occurrences_between

        errors = {}
        room = getattr(self, "room", None)
        if room is not None:
            if room.kind in TRACK_ROSTER_KINDS and not self.track_id:
                errors["track"] = f"A {room.get_kind_display().lower()} series needs a track (its roster)."
            if self.track_id and self.track.program_id != room.program_id:
                errors["track"] = "The track belongs to another program than the room."
        if self.duration is not None and self.duration <= timedelta(0):
            errors["duration"] = "A session must last longer than zero minutes."
        if self.duration is not None and self.duration > timedelta(hours=12):
            errors["duration"] = "A session cannot last longer than 12 hours."
        if self.until and self.starts_on and self.until < self.starts_on:
            errors["until"] = "The series cannot end before it starts."
        if not errors and room is not None and room.kind in TRACK_ROSTER_KINDS and self.track_id and self.starts_on:
            first = max(self.starts_on, local_today(room.program.time_zone))
            if self.until is None or self.until >= first:
                peak, day = peak_active_enrollments(self.track_id, first, self.until)
                if peak > room.capacity:
                    errors["room"] = (
                        f"The room “{room.name}” holds {people(room.capacity)} but {self.track.name} "
                        f"has {people(peak, 'active participant')} on {day}. "
                        f"Choose a larger room or raise its capacity."
                    )
        if errors:
            raise ValidationError(errors)
        if room is not None and self.starts_on and self.weekdays and self.start_time and self.duration:
            try:
                validate_weekdays(self.weekdays)
                validate_exception_dates(self.exception_dates)
            except ValidationError:
                return  # field validators report these
            rule = SeriesRule.from_series(self)
            horizon_end = self.until or (self.starts_on + timedelta(days=366))
            if not occurrences_between(rule, self.starts_on, horizon_end, limit=1):
                raise ValidationError("This series has no occurrences: check the weekdays, dates and exceptions.")


class SessionStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    OPEN = "open", "Open (lobby)"
    LIVE = "live", "Live"
    ENDED = "ended", "Ended"
    CANCELLED = "cancelled", "Cancelled"


class Session(models.Model):
    """One occurrence: a series instance or a one-off (individual, family) session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    series = models.ForeignKey(SessionSeries, on_delete=models.PROTECT, related_name="sessions", null=True, blank=True)
    # The series date this occurrence stands for; stays fixed when the occurrence is moved,
    # so regenerating the series is idempotent.
    occurrence_date = models.DateField(null=True, blank=True, editable=False)
    room = models.ForeignKey(Room, on_delete=models.PROTECT, related_name="sessions")
    track = models.ForeignKey(Track, on_delete=models.PROTECT, related_name="sessions", null=True, blank=True)
    title = models.CharField(max_length=120)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.SCHEDULED)
    lobby_opens_before = models.DurationField(default=timedelta(minutes=10))
    late_join_minutes = models.PositiveSmallIntegerField(default=10)
    admission_policy = models.CharField(
        max_length=24, choices=AdmissionPolicy.choices, default=AdmissionPolicy.AUTO_THEN_KNOCK
    )
    locked = models.BooleanField(default=False)
    # Set when staff edit this occurrence by hand: series edits then leave it alone.
    detached = models.BooleanField(default=False, help_text="Edited by hand; series changes no longer apply.")
    participants = models.ManyToManyField(
        User,
        through="RosterEntry",
        related_name="explicit_sessions",
        blank=True,
    )
    # Realtime state (rooms.live). The chat counter is bumped under this row's lock, so
    # sequence numbers are gap-free per session and clients resynchronise by them.
    chat_seq = models.PositiveIntegerField(default=0, editable=False)
    spotlight = models.ForeignKey(
        "Seat", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    # The therapists' latest message to everyone waiting: people who start waiting later see it too.
    waiting_room_message = models.CharField(max_length=500, blank=True, editable=False)

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["room", "starts_at"], name="rooms_session_room_start")]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")),
                name="rooms_session_ends_after_start",
                violation_error_message="A session must end after it starts.",
            ),
            models.UniqueConstraint(
                fields=["series", "occurrence_date"],
                name="rooms_session_one_per_series_date",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} {self.starts_at:%Y-%m-%d %H:%M} UTC"

    @property
    def lobby_opens_at(self) -> datetime:
        return self.starts_at - self.lobby_opens_before

    @property
    def late_join_until(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.late_join_minutes)

    @property
    def duration(self) -> timedelta:
        return self.ends_at - self.starts_at

    @property
    def uses_track_roster(self) -> bool:
        return self.room.kind in TRACK_ROSTER_KINDS and self.track_id is not None

    def local_date(self) -> date:
        """The session's calendar date in the program's zone (enrollment dates are local dates)."""
        import zoneinfo

        return timezone.localtime(self.starts_at, zoneinfo.ZoneInfo(self.room.program.time_zone)).date()

    def overlapping(self) -> models.QuerySet[Session]:
        """Other live (not cancelled) sessions in the same room that overlap this one."""
        qs = Session.objects.filter(room_id=self.room_id, starts_at__lt=self.ends_at, ends_at__gt=self.starts_at)
        qs = qs.exclude(status=SessionStatus.CANCELLED)
        if self.pk:
            qs = qs.exclude(pk=self.pk)
        return qs

    def clean(self) -> None:
        errors = {}
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            errors["ends_at"] = "A session must end after it starts."
        room = getattr(self, "room", None)
        if room is not None and room.kind in TRACK_ROSTER_KINDS and not self.track_id:
            errors["track"] = f"A {room.get_kind_display().lower()} session needs a track (its roster)."
        if errors:
            raise ValidationError(errors)
        if room is not None and self.starts_at and self.ends_at and self.status != SessionStatus.CANCELLED:
            problems = []
            clash = self.overlapping().first()
            if clash is not None:
                problems.append(
                    ValidationError(
                        f"The room already has “{clash.title}” from "
                        f"{timezone.localtime(clash.starts_at):%a %d %b %H:%M} to "
                        f"{timezone.localtime(clash.ends_at):%H:%M}.",
                        code="session.overlap",
                    )
                )
            if room.kind in TRACK_ROSTER_KINDS and self.track_id:
                day = self.local_date()
                expected = Enrollment.objects.filter(
                    Q(end_date__isnull=True) | Q(end_date__gte=day),
                    track_id=self.track_id,
                    status=EnrollmentStatus.ACTIVE,
                    start_date__lte=day,
                ).count()
                if expected > room.capacity:
                    problems.append(
                        ValidationError(
                            f"The room “{room.name}” holds {people(room.capacity)} but {self.track.name} "
                            f"has {people(expected, 'active participant')} on {day}.",
                            code="room.over_capacity",
                        )
                    )
            if problems:
                raise ValidationError(problems)


class RosterEntry(models.Model):
    """An explicit roster line for individual, family and medication sessions."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="roster_entries")
    participant = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="roster_entries", limit_choices_to={"role": Role.PARTICIPANT}
    )

    class Meta:
        verbose_name_plural = "roster entries"
        constraints = [
            models.UniqueConstraint(fields=["session", "participant"], name="rooms_rosterentry_unique"),
        ]

    def clean(self) -> None:
        participant = getattr(self, "participant", None)
        if participant is not None and participant.role != Role.PARTICIPANT:
            raise ValidationError({"participant": f"{participant} is not a participant."})

    def __str__(self) -> str:
        return f"{self.participant} on {self.session}"


class SessionRemoval(models.Model):
    """A person removed (or denied) from one session: they cannot enter it again."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="removals")
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="session_removals")
    removed_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    removed_at = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=32, default="removed")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], name="rooms_sessionremoval_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} removed from {self.session}"


class FamilyConsent(models.Model):
    """The participant's consent to involve a family contact in one program (42 CFR Part 2)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    contact = models.ForeignKey("accounts.FamilyContact", on_delete=models.CASCADE, related_name="consents")
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="family_consents")
    consented_by = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="+", help_text="Who gave consent (normally the participant)."
    )
    consented_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="+", null=True, blank=True, editable=False
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "program"],
                condition=Q(revoked_at__isnull=True),
                name="rooms_familyconsent_one_active_per_program",
                violation_error_message="This contact already has an active consent for this program.",
            ),
            models.CheckConstraint(
                condition=Q(revoked_at__isnull=True) | Q(revoked_at__gte=models.F("consented_at")),
                name="rooms_familyconsent_revoked_after_given",
            ),
        ]

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def clean(self) -> None:
        errors = {}
        if self.consented_at and self.consented_at > timezone.now() + timedelta(minutes=5):
            errors["consented_at"] = "Consent cannot be recorded ahead of time: use the date it was given."
        contact = getattr(self, "contact", None)
        if (
            contact is not None
            and self.program_id
            and not Enrollment.objects.filter(
                participant_id=contact.participant_id, track__program_id=self.program_id
            ).exists()
        ):
            errors["program"] = f"{contact.participant} has no enrollment in this program."
        # The constraint says so too, but forms leave revoked_at out (it is set by revoking), and
        # Django skips a conditional constraint whose condition names an excluded field.
        if contact is not None and self.program_id and self.revoked_at is None and "program" not in errors:
            others = FamilyConsent.objects.filter(
                contact_id=contact.pk, program_id=self.program_id, revoked_at__isnull=True
            ).exclude(pk=self.pk)
            if others.exists():
                errors["program"] = "This contact already has an active consent for this program."
        if errors:
            raise ValidationError(errors)

    def __str__(self) -> str:
        state = "active" if self.revoked_at is None else "revoked"
        return f"Consent for {self.contact} in {self.program} ({state})"


class SeatState(models.TextChoices):
    WAITING = "waiting", "In the waiting room"
    ADMITTED = "admitted", "In the room"
    DENIED = "denied", "Denied"
    REMOVED = "removed", "Removed"
    LEFT = "left", "Left"


class SeatCapacity(models.TextChoices):
    """The values of rooms.access.Capacity, as model choices."""

    PARTICIPANT = "participant", "Participant"
    MODERATOR = "moderator", "Moderator (therapist of the session)"
    OBSERVER = "observer", "Observer (clinic admin)"


def new_member_id() -> str:
    """An opaque, URL-safe id peers know a person by in one session (never the user id)."""
    return secrets.token_urlsafe(16)


class Seat(models.Model):
    """One person's place in one session's realtime room: waiting, admitted, or gone.

    One row per (session, user), whatever the number of tabs or reconnects: the
    roster is built from seats, so nobody appears twice. ``epoch`` counts
    connections; the newest connection owns the seat, and a stale connection's
    disconnect (same person, older tab) is recognised by its older epoch.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="seats")
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="seats")
    member_id = models.CharField(max_length=32, unique=True, default=new_member_id, editable=False)
    capacity = models.CharField(max_length=16, choices=SeatCapacity.choices)
    state = models.CharField(max_length=16, choices=SeatState.choices)
    waiting_since = models.DateTimeField(null=True, blank=True)
    admitted_at = models.DateTimeField(null=True, blank=True)
    admitted_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    left_at = models.DateTimeField(null=True, blank=True)
    # Connection: the newest socket's epoch; disconnected_at starts the reconnect grace period.
    connected = models.BooleanField(default=False)
    epoch = models.PositiveIntegerField(default=0)
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    # SHA-256 of the resume tokens (the current one and the one before the latest connection):
    # a token is a bearer secret and is never stored.
    resume_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    previous_resume_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    # Media as the person's client reports it, and what the therapist imposed.
    mic = models.BooleanField(default=False)
    camera = models.BooleanField(default=False)
    hard_muted = models.BooleanField(default=False)
    camera_blocked = models.BooleanField(default=False)
    hand_raised_at = models.DateTimeField(null=True, blank=True)
    # The therapist's latest message to this person while they wait (plain text, shown as such).
    waiting_message = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], name="rooms_seat_one_per_person"),
            models.CheckConstraint(
                condition=Q(state__in=["waiting", "admitted", "denied", "removed", "left"]),
                name="rooms_seat_state_valid",
            ),
            models.CheckConstraint(
                condition=Q(capacity__in=["participant", "moderator", "observer"]),
                name="rooms_seat_capacity_valid",
            ),
        ]
        indexes = [models.Index(fields=["session", "state"], name="rooms_seat_session_state")]

    def __str__(self) -> str:
        return f"seat {self.member_id} ({self.state})"

    @property
    def is_moderator(self) -> bool:
        return self.capacity == SeatCapacity.MODERATOR


class ChatMessage(models.Model):
    """A chat message, persisted before anyone receives it.

    ``seq`` is per session and gap-free (taken under the session row's lock);
    ``client_id`` makes a resend idempotent. ``thread_participant`` empty means
    the room chat; otherwise the private thread between that participant and the
    session's therapists. Deleting keeps the row (and its number) and drops the text.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="chat_messages")
    seq = models.PositiveIntegerField()
    sender = models.ForeignKey(Seat, on_delete=models.PROTECT, related_name="sent_messages")
    client_id = models.CharField(max_length=64)
    text = models.TextField(max_length=2000, blank=True)
    thread_participant = models.ForeignKey(
        Seat, on_delete=models.PROTECT, null=True, blank=True, related_name="thread_messages"
    )
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(User, on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="rooms_chatmessage_unique_seq"),
            models.UniqueConstraint(
                fields=["session", "sender", "client_id"], name="rooms_chatmessage_idempotent_client_id"
            ),
        ]

    def __str__(self) -> str:
        return f"chat #{self.seq}"


class AuditAction(models.TextChoices):
    ROSTER_VIEWED = "roster.viewed", "Roster viewed"
    ENTRY_CHECKED = "entry.checked", "Entry checked"
    ENTRY_REFUSED = "entry.refused", "Entry refused"
    SESSION_CANCELLED = "session.cancelled", "Session cancelled"
    SESSION_MOVED = "session.moved", "Session moved"
    CONSENT_REVOKED = "consent.revoked", "Family consent revoked"
    # The realtime session (rooms.live). Ids and codes only: never chat text, SDP or tokens.
    JOINED = "live.joined", "Joined (room or waiting room)"
    LEFT = "live.left", "Left"
    RECONNECTED = "live.reconnected", "Reconnected"
    ADMITTED = "live.admitted", "Admitted from the waiting room"
    DENIED = "live.denied", "Denied entry"
    REMOVED = "live.removed", "Removed"
    MUTED = "live.muted", "Muted"
    HARD_MUTED = "live.hard_muted", "Hard-muted"
    MUTE_RELEASED = "live.mute_released", "Hard mute released"
    UNMUTE_ASKED = "live.unmute_asked", "Asked to unmute"
    CAMERA_OFF = "live.camera_off", "Camera turned off"
    CAMERA_RELEASED = "live.camera_released", "Camera block released"
    LOCKED = "live.locked", "Room locked"
    UNLOCKED = "live.unlocked", "Room unlocked"
    ENDED = "live.ended", "Session ended"
    SPOTLIGHT = "live.spotlight", "Spotlight changed"
    HAND_LOWERED = "live.hand_lowered", "Hand lowered by a therapist"
    WAITING_MESSAGE = "live.waiting_message", "Message to the waiting room"
    CHAT_DELETED = "live.chat_deleted", "Chat message deleted"
    HANDSHAKE_REFUSED = "live.handshake_refused", "Connection refused"
    COMMAND_REFUSED = "live.command_refused", "Command refused"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):  # pragma: no cover - guarded by tests
        raise PermissionError("The audit log is append-only.")

    def delete(self):
        raise PermissionError("The audit log is append-only.")


class AuditEvent(models.Model):
    """Append-only record of who did what to whom. Never chat text, SDP, tokens or keys."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=48)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    session = models.ForeignKey(Session, on_delete=models.PROTECT, null=True, blank=True, related_name="audit_events")
    code = models.CharField(max_length=48, blank=True, help_text="Stable reason code, e.g. session.not_open.")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at"]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only.")

    def __str__(self) -> str:
        return f"{self.action} at {self.at:%Y-%m-%d %H:%M:%S} UTC"
