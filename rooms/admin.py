"""The clinic admin's scheduling screens: programs, tracks, enrollment, rooms, series, sessions, consent, audit.

The admin is one more interface over the domain: state changes that are audited
elsewhere (cancelling, moving, revoking consent, generating a series) go through
rooms.services here too, never through a bare save. Changelists load their
relations up front (list_select_related, prefetches, annotations) so a page costs
the same number of queries for 3 rows as for 300; tests/rooms/test_admin.py guards it.
"""

from __future__ import annotations

import uuid
import zoneinfo
from contextlib import nullcontext
from datetime import datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Count, Prefetch, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from accounts.admin import FamilyContactAdmin as AccountsFamilyContactAdmin
from accounts.models import FamilyContact, Role
from rooms import services
from rooms.forms import (
    NOT_A_PARTICIPANT,
    RosterFormSet,
    SessionForm,
    SessionSeriesForm,
    TrackFacilitatorFormSet,
    therapist_choice_field,
)
from rooms.models import (
    TRACK_ROSTER_KINDS,
    AuditAction,
    AuditEvent,
    Enrollment,
    EnrollmentStatus,
    FacilitatorRole,
    FamilyConsent,
    Program,
    Room,
    RoomTherapist,
    RosterEntry,
    Session,
    SessionSeries,
    SessionStatus,
    Track,
    TrackTherapist,
)
from rooms.recurrence import SeriesRule

# --- shared helpers --------------------------------------------------------------------------


def in_zone(moment: datetime, zone: str, fmt: str = "%a %d %b %Y %H:%M %Z") -> str:
    return timezone.localtime(moment, zoneinfo.ZoneInfo(zone)).strftime(fmt)


def hours(duration: timedelta) -> str:
    value = duration.total_seconds() / 3600
    return f"{value:g}"


def room_label(room: Room) -> str:
    # Rooms of different programs may share a name ("Group room A"): the picker says which is which.
    return f"{room.program.name} · {room.name} ({room.get_kind_display()})"


class TrackListFilter(admin.RelatedFieldListFilter):
    """A track filter whose labels ("Program · Track") do not cost one query per track."""

    def field_choices(self, field, request, model_admin):
        return [(track.pk, str(track)) for track in Track.objects.select_related("program")]


class SchedulingFieldsMixin:
    """Pickers that load what their labels need, and only offer people of the right role."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        model = db_field.remote_field.model
        if db_field.name == "therapist":
            return therapist_choice_field(label=db_field.verbose_name.capitalize(), **kwargs)
        if model is Track:
            kwargs.setdefault("queryset", Track.objects.select_related("program"))
        elif model is Room:
            kwargs.setdefault("queryset", Room.objects.select_related("program"))
        if db_field.name == "participant":
            kwargs.setdefault("error_messages", {"invalid_choice": NOT_A_PARTICIPANT})
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if model is Room and field is not None:
            field.label_from_instance = room_label
        return field


def facilitator_prefetch() -> Prefetch:
    # Lead first, then co-facilitators: "lead" sorts before "co" only by accident of the alphabet.
    return Prefetch(
        "facilitators",
        queryset=TrackTherapist.objects.select_related("therapist").order_by("-role", "therapist__last_name"),
    )


def facilitator_names(facilitators) -> str:
    names = [f"{f.therapist} (lead)" if f.role == FacilitatorRole.LEAD else str(f.therapist) for f in facilitators]
    return ", ".join(names) or "—"


# --- programs and tracks -------------------------------------------------------------------------


class TrackInline(admin.TabularInline):
    model = Track
    fields = ["name", "part_of_day", "admission_policy"]
    extra = 0
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("program")


@admin.register(Program)
class ProgramAdmin(admin.ModelAdmin):
    list_display = ["name", "level_of_care", "time_zone", "weekly_target", "starts_on", "ends_on", "track_count"]
    list_filter = ["level_of_care", "time_zone"]
    search_fields = ["name"]
    inlines = [TrackInline]
    fieldsets = [
        (None, {"fields": ["name", "level_of_care", "time_zone"]}),
        ("Dates", {"fields": ["starts_on", "ends_on", "typical_length_weeks"]}),
        (
            "Weekly attendance target",
            {"fields": ["weekly_hours_min", "weekly_hours_max"], "description": "Durations as HH:MM:SS, e.g. 9:00:00."},
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(track_count=Count("tracks"))

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "time_zone":
            return forms.ChoiceField(
                choices=[(zone, zone) for zone in sorted(zoneinfo.available_timezones())],
                initial=db_field.get_default(),
                label="Time zone",
                help_text="Schedules are evaluated in this zone: 18:00 stays 18:00 across daylight-saving changes.",
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Weekly target (hours)")
    def weekly_target(self, obj: Program) -> str:
        return f"{hours(obj.weekly_hours_min)}–{hours(obj.weekly_hours_max)}"

    @admin.display(description="Tracks", ordering="track_count")
    def track_count(self, obj: Program) -> int:
        return obj.track_count


class TrackTherapistInline(SchedulingFieldsMixin, admin.TabularInline):
    model = TrackTherapist
    formset = TrackFacilitatorFormSet
    fields = ["therapist", "role"]
    extra = 1
    verbose_name = "therapist"
    verbose_name_plural = "therapists (one lead, co-facilitators)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("therapist")


@admin.register(Track)
class TrackAdmin(SchedulingFieldsMixin, admin.ModelAdmin):
    list_display = ["name", "program", "part_of_day", "admission_policy", "therapist_list", "active_enrollments"]
    list_filter = ["program", "part_of_day"]
    search_fields = ["name", "program__name"]
    list_select_related = ["program"]
    inlines = [TrackTherapistInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related(facilitator_prefetch())
            .annotate(active_count=Count("enrollments", filter=Q(enrollments__status=EnrollmentStatus.ACTIVE)))
        )

    @admin.display(description="Therapists")
    def therapist_list(self, obj: Track) -> str:
        return facilitator_names(obj.facilitators.all())

    @admin.display(description="Active enrollments", ordering="active_count")
    def active_enrollments(self, obj: Track) -> int:
        return obj.active_count


# --- enrollment ---------------------------------------------------------------------------------


@admin.register(Enrollment)
class EnrollmentAdmin(SchedulingFieldsMixin, admin.ModelAdmin):
    list_display = ["participant", "track", "program", "start_date", "end_date", "status"]
    list_filter = ["status", "track__program", ("track", TrackListFilter)]
    search_fields = ["participant__first_name", "participant__last_name", "participant__alias", "participant__username"]
    autocomplete_fields = ["participant"]
    date_hierarchy = "start_date"
    list_select_related = ["participant", "track__program"]
    fields = ["participant", "track", "start_date", "end_date", "status"]

    @admin.display(description="Program", ordering="track__program__name")
    def program(self, obj: Enrollment) -> str:
        return obj.track.program.name


# --- rooms --------------------------------------------------------------------------------------


class RoomTherapistInline(SchedulingFieldsMixin, admin.TabularInline):
    model = RoomTherapist
    fields = ["therapist", "role"]
    extra = 1
    verbose_name = "therapist"
    verbose_name_plural = "therapists who run this room"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("therapist")


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "program", "kind", "capacity", "media_preference", "therapist_list"]
    list_filter = ["program", "kind", "media_preference"]
    search_fields = ["name", "program__name"]
    list_select_related = ["program"]
    inlines = [RoomTherapistInline]
    fieldsets = [
        (None, {"fields": ["name", "program", "kind"]}),
        ("Capacity and media", {"fields": ["capacity", "media_preference"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch(
                    "facilitators",
                    queryset=RoomTherapist.objects.select_related("therapist").order_by(
                        "-role", "therapist__last_name"
                    ),
                )
            )
        )

    @admin.display(description="Therapists")
    def therapist_list(self, obj: Room) -> str:
        return facilitator_names(obj.facilitators.all())


# --- series ---------------------------------------------------------------------------------------


def report_generation(
    modeladmin: admin.ModelAdmin, request, series: SessionSeries, result: services.GenerationResult
) -> None:
    level = messages.WARNING if result.conflicts else messages.SUCCESS
    modeladmin.message_user(request, f"Occurrences of “{series.title}”: {result.summary()}.", level)


@admin.register(SessionSeries)
class SessionSeriesAdmin(SchedulingFieldsMixin, admin.ModelAdmin):
    form = SessionSeriesForm
    list_display = ["title", "room", "track", "schedule", "starts_on", "until", "upcoming"]
    list_filter = ["room__program", "room__kind"]
    search_fields = ["title"]
    list_select_related = ["room__program", "track__program"]
    actions = ["generate"]
    readonly_fields = ["rrule_text", "next_occurrences", "sessions_link"]
    fieldsets = [
        (None, {"fields": ["title", "room", "track"]}),
        (
            "Recurrence, in the program's time zone",
            {"fields": ["weekdays", "start_time", "duration", "starts_on", "until", "exception_dates"]},
        ),
        ("Entry", {"fields": ["lobby_opens_before", "late_join_minutes", "admission_policy"]}),
        ("Preview", {"fields": ["rrule_text", "next_occurrences", "sessions_link"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                upcoming_count=Count(
                    "sessions",
                    filter=Q(sessions__starts_at__gte=timezone.now(), sessions__status=SessionStatus.SCHEDULED),
                )
            )
        )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Saving is what admins expect to "apply" the schedule: materialise it at once.
        report_generation(self, request, obj, services.generate_occurrences(obj))

    @admin.action(description="Generate occurrences", permissions=["change"])
    def generate(self, request, queryset):
        for series in queryset.select_related("room__program", "track"):
            report_generation(self, request, series, services.generate_occurrences(series))

    @admin.display(description="Schedule")
    def schedule(self, obj: SessionSeries) -> str:
        return f"{obj.weekdays} {obj.start_time:%H:%M} ({obj.room.program.time_zone}), {obj.duration}"

    @admin.display(description="Upcoming sessions", ordering="upcoming_count")
    def upcoming(self, obj: SessionSeries) -> int:
        return obj.upcoming_count

    @admin.display(description="Recurrence rule (RFC 5545)")
    def rrule_text(self, obj: SessionSeries) -> str:
        if obj._state.adding:
            return "Shown after saving."
        rule = SeriesRule.from_series(obj)
        detail = f"from {obj.starts_on} at {obj.start_time:%H:%M} {obj.time_zone}, lasting {obj.duration}"
        if obj.excluded:
            detail += "; except " + ", ".join(day.isoformat() for day in sorted(obj.excluded))
        return format_html("<code>RRULE:{}</code><br>{}", rule.to_rrule_text(), detail)

    @admin.display(description="Next occurrences")
    def next_occurrences(self, obj: SessionSeries) -> str:
        if obj._state.adding:
            return "Shown after saving."
        upcoming = services.preview_occurrences(obj)
        if not upcoming:
            return "No upcoming occurrences."
        zone = obj.time_zone
        rows = (
            (in_zone(o.starts_at, zone, "%a %d %b %Y, %H:%M"), in_zone(o.ends_at, zone, "%H:%M %Z")) for o in upcoming
        )
        return format_html("<ol>{}</ol>Times in {}.", format_html_join("", "<li>{}–{}</li>", rows), zone)

    @admin.display(description="Sessions")
    def sessions_link(self, obj: SessionSeries) -> str:
        if obj._state.adding:
            return "—"
        url = reverse("admin:rooms_session_changelist") + "?" + urlencode({"series__id__exact": str(obj.pk)})
        return format_html('<a href="{}">The sessions of this series</a>', url)


# --- sessions -------------------------------------------------------------------------------------


class RosterEntryInline(admin.TabularInline):
    model = RosterEntry
    formset = RosterFormSet
    fields = ["participant"]
    autocomplete_fields = ["participant"]
    extra = 1
    verbose_name = "participant"
    verbose_name_plural = "roster (individual, family and medication sessions)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("participant")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "participant":
            kwargs.setdefault("error_messages", {"invalid_choice": NOT_A_PARTICIPANT})
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


# The fields rooms.services.generate_occurrences keeps in line with the series.
SERIES_FIELDS = frozenset(
    {"room", "track", "title", "starts_at", "ends_at", "lobby_opens_before", "late_join_minutes", "admission_policy"}
)


@admin.register(Session)
class SessionAdmin(SchedulingFieldsMixin, admin.ModelAdmin):
    form = SessionForm
    list_display = ["title", "room", "track", "local_start", "status", "detached"]
    list_filter = ["status", "room__kind", "room__program", "detached"]
    date_hierarchy = "starts_at"
    search_fields = ["title"]
    list_select_related = ["room__program", "track__program"]
    actions = ["cancel_sessions"]
    readonly_fields = ["series", "occurrence_date", "status", "time_zone"]
    fieldsets = [
        (None, {"fields": ["title", "room", "track", "status"]}),
        (
            "Time, in the program's time zone",
            {
                "fields": ["time_zone", "starts_at", "ends_at"],
                "description": "Changing the times of an occurrence moves it: it is checked against the room's "
                "other sessions, detached from its series and recorded in the audit log.",
            },
        ),
        ("Entry", {"fields": ["lobby_opens_before", "late_join_minutes", "admission_policy", "locked"]}),
        ("Series", {"fields": ["series", "occurrence_date", "detached"]}),
    ]

    def get_inlines(self, request, obj):
        # Group kinds take their roster from the track's enrollments; an explicit roster would be ignored.
        if obj is not None and obj.room.kind in TRACK_ROSTER_KINDS:
            return []
        return [RosterEntryInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("room__program", "track__program", "series")

    # Times are typed and shown in the program's zone, not the admin's own: "18:00" on a
    # New York group's page means 18:00 in New York whoever edits it.
    def _program_zone(self, request, object_id) -> str | None:
        room_id = request.POST.get("room") if request.method == "POST" else None
        if room_id and _is_uuid(room_id):
            room = Room.objects.select_related("program").filter(pk=room_id).first()
            if room is not None:
                return room.program.time_zone
        if object_id and _is_uuid(unquote(object_id)):
            session = Session.objects.select_related("room__program").filter(pk=unquote(object_id)).first()
            if session is not None:
                return session.room.program.time_zone
        return None

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        zone = self._program_zone(request, object_id)
        with timezone.override(zoneinfo.ZoneInfo(zone)) if zone else nullcontext():
            response = super().changeform_view(request, object_id, form_url, extra_context)
            # Render inside the zone: a TemplateResponse would otherwise render after we return.
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.method == "GET" and response.status_code == 200 and _is_uuid(object_id):
            session = Session.objects.select_related("room").filter(pk=object_id).first()
            if session is not None and session.room.kind not in TRACK_ROSTER_KINDS:
                # The page shows an explicit roster: protected health information, so the view is logged.
                services.record_roster_view(request.user, session)
        return response

    def save_model(self, request, obj, form, change):
        changed = set(form.changed_data)
        if change and obj.series_id and changed & SERIES_FIELDS and "detached" not in changed:
            # Edited by hand: regenerating the series must not overwrite this occurrence. (Unticking
            # "detached" is how an admin hands it back to the series.)
            obj.detached = True
        if change and changed & {"starts_at", "ends_at"}:
            services.move_session(obj, starts_at=obj.starts_at, ends_at=obj.ends_at, by=request.user)
        else:
            super().save_model(request, obj, form, change)

    @admin.display(description="Time zone")
    def time_zone(self, obj: Session) -> str:
        if obj._state.adding or not obj.room_id:
            return "The time zone of the room's program."
        return obj.room.program.time_zone

    @admin.display(description="Starts (program time)", ordering="starts_at")
    def local_start(self, obj: Session) -> str:
        return in_zone(obj.starts_at, obj.room.program.time_zone)

    @admin.action(description="Cancel selected sessions", permissions=["change"])
    def cancel_sessions(self, request, queryset):
        cancelled = skipped = 0
        for session in queryset.select_related("room__program"):
            if session.status in {SessionStatus.ENDED, SessionStatus.CANCELLED, SessionStatus.LIVE}:
                skipped += 1
                continue
            services.cancel_session(session, by=request.user)
            cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} session{'s' if cancelled != 1 else ''}.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} left as they were: already live, ended or cancelled.", messages.WARNING
            )


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# --- family consent -------------------------------------------------------------------------------


class ConsentStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(FamilyConsent)
class FamilyConsentAdmin(admin.ModelAdmin):
    list_display = ["contact", "participant", "program", "consented_by", "consented_at", "revoked_at", "active"]
    list_filter = [ConsentStateFilter, "program"]
    search_fields = ["contact__name", "contact__participant__first_name", "contact__participant__last_name"]
    autocomplete_fields = ["contact", "consented_by"]
    list_select_related = ["contact__participant", "program", "consented_by"]
    date_hierarchy = "consented_at"
    actions = ["revoke"]
    fields = ["contact", "program", "consented_by", "consented_at", "recorded_by", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        # A consent is a record of something that happened: it is revoked, never rewritten.
        if obj is not None:
            return self.fields
        return ["recorded_by", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.recorded_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="Participant", ordering="contact__participant__last_name")
    def participant(self, obj: FamilyConsent) -> str:
        return str(obj.contact.participant)

    @admin.display(description="Active", boolean=True)
    def active(self, obj: FamilyConsent) -> bool:
        return obj.is_active

    @admin.action(description="Revoke consent", permissions=["change"])
    def revoke(self, request, queryset):
        count = services.revoke_consents(queryset, by=request.user)
        self.message_user(request, f"Revoked {count} consent{'s' if count != 1 else ''}.", messages.SUCCESS)


class FamilyConsentInline(admin.TabularInline):
    model = FamilyConsent
    fields = ["program", "consented_by", "consented_at", "revoked_at"]
    readonly_fields = ["revoked_at"]
    autocomplete_fields = ["consented_by"]
    extra = 0
    can_delete = False
    verbose_name_plural = "consents (revoke them from the family consents list)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("program", "consented_by")

    def has_change_permission(self, request, obj=None):
        return False  # recorded consents are read-only here; new ones can be added


# FamilyContact lives in accounts, which never imports rooms: this app extends its admin with the
# per-program consents instead.
admin.site.unregister(FamilyContact)


@admin.register(FamilyContact)
class FamilyContactAdmin(AccountsFamilyContactAdmin):
    inlines = [FamilyConsentInline]
    list_display = [*AccountsFamilyContactAdmin.list_display, "active_consents"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(active_consent_count=Count("consents", filter=Q(consents__revoked_at__isnull=True)))
        )

    def save_formset(self, request, form, formset, change):
        for consent in formset.save(commit=False):
            if consent._state.adding:
                consent.recorded_by = request.user
            consent.save()
        formset.save_m2m()

    @admin.display(description="Active consents", ordering="active_consent_count")
    def active_consents(self, obj: FamilyContact) -> int:
        return obj.active_consent_count


# --- audit ------------------------------------------------------------------------------------------


class AuditActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return AuditAction.choices

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The append-only log, readable by staff who may see it, writable by nobody through the admin."""

    list_display = ["at", "action_label", "code", "actor_label", "subject_label", "session_label"]
    list_filter = [AuditActionFilter]
    date_hierarchy = "at"
    search_fields = ["code", "actor__last_name", "actor__username", "subject__last_name", "subject__username"]
    list_select_related = ["actor", "subject", "session"]
    fields = ["at", "action", "code", "actor", "subject", "session"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Action", ordering="action")
    def action_label(self, obj: AuditEvent) -> str:
        try:
            return AuditAction(obj.action).label
        except ValueError:
            return obj.action

    # Staff screens may show full names (IOP.md); contact details stay on the user's own page.
    @admin.display(description="By", ordering="actor__last_name")
    def actor_label(self, obj: AuditEvent) -> str:
        return _person(obj.actor)

    @admin.display(description="About", ordering="subject__last_name")
    def subject_label(self, obj: AuditEvent) -> str:
        return _person(obj.subject)

    def get_list_display(self, request):
        # Link to the session only for staff who may open it; the others see its title and time.
        if request.user.has_perm("rooms.view_session"):
            return [*self.list_display[:-1], "session_link"]
        return self.list_display

    @admin.display(description="Session")
    def session_label(self, obj: AuditEvent) -> str:
        return "—" if obj.session is None else str(obj.session)

    @admin.display(description="Session")
    def session_link(self, obj: AuditEvent):
        if obj.session is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:rooms_session_change", args=[obj.session_id]), obj.session
        )


def _person(user) -> str:
    if user is None:
        return "—"
    return f"{user} ({Role(user.role).label.lower()})" if user.role in Role.values else str(user)
