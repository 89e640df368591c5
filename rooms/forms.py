"""Forms of the scheduling admin.

Validation that needs more than one row lives here: a model's clean() sees one
instance, but "at most one lead" or "no more people on the roster than the room
holds" are questions about a whole inline formset. Single-row rules stay in the
models' clean(), so every interface gets them.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from accounts.models import Role, User
from rooms.models import (
    TRACK_ROSTER_KINDS,
    WEEKDAY_CODES,
    FacilitatorRole,
    Room,
    Session,
    SessionSeries,
    SessionStatus,
)

WEEKDAY_CHOICES = [
    ("MO", "Monday"),
    ("TU", "Tuesday"),
    ("WE", "Wednesday"),
    ("TH", "Thursday"),
    ("FR", "Friday"),
    ("SA", "Saturday"),
    ("SU", "Sunday"),
]

NOT_A_THERAPIST = "Only users with the therapist role can be assigned: choose a therapist."
NOT_A_PARTICIPANT = "Only users with the participant role can be chosen here: choose a participant."


def therapist_choice_field(**kwargs) -> forms.ModelChoiceField:
    """A therapist picker that cannot offer (or accept) anyone without the therapist role."""
    kwargs.setdefault(
        "queryset", User.objects.filter(role=Role.THERAPIST, is_active=True).order_by("last_name", "first_name")
    )
    kwargs.setdefault("error_messages", {"invalid_choice": NOT_A_THERAPIST})
    return forms.ModelChoiceField(**kwargs)


def active_forms(formset: BaseInlineFormSet) -> list[forms.Form]:
    """The inline rows that will exist after saving: filled in and not marked for deletion."""
    rows = []
    for form in formset.forms:
        if not hasattr(form, "cleaned_data") or not form.cleaned_data:
            continue
        if formset.can_delete and formset._should_delete_form(form):
            continue
        rows.append(form)
    return rows


class TrackFacilitatorFormSet(BaseInlineFormSet):
    """A track has one lead therapist (the database enforces it too; this says so before saving)."""

    def clean(self) -> None:
        super().clean()
        leads = [f for f in active_forms(self) if f.cleaned_data.get("role") == FacilitatorRole.LEAD]
        if len(leads) > 1:
            raise ValidationError(
                "A track has one lead therapist; make the others co-facilitators.", code="track.one_lead"
            )


class RosterFormSet(BaseInlineFormSet):
    """The explicit roster of an individual, family or medication session."""

    def clean(self) -> None:
        super().clean()
        session: Session = self.instance
        if not session.room_id:
            return  # the session form reports the missing room
        room = Room.objects.get(pk=session.room_id)
        rows = active_forms(self)
        if rows and room.kind in TRACK_ROSTER_KINDS:
            raise ValidationError(
                f"A {room.get_kind_display().lower()} session takes its roster from the track's enrollments; "
                f"remove the explicit roster lines.",
                code="roster.track_kind",
            )
        if len(rows) > room.capacity:
            raise ValidationError(
                f"The room “{room.name}” holds {room.capacity} participant{'s' if room.capacity != 1 else ''}; "
                f"the roster lists {len(rows)}. Remove someone or choose a larger room.",
                code="room.over_capacity",
            )


class SessionSeriesForm(forms.ModelForm):
    """Weekdays as checkboxes; stored as the RRULE's BYDAY codes (MO,WE,FR) in week order."""

    weekdays = forms.MultipleChoiceField(
        choices=WEEKDAY_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one weekday."},
    )

    class Meta:
        model = SessionSeries
        fields = [
            "title",
            "room",
            "track",
            "weekdays",
            "start_time",
            "duration",
            "starts_on",
            "until",
            "exception_dates",
            "lobby_opens_before",
            "late_join_minutes",
            "admission_policy",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.weekdays and not self.is_bound:
            self.initial["weekdays"] = self.instance.weekday_codes

    def clean_weekdays(self) -> str:
        chosen = set(self.cleaned_data["weekdays"])
        return ",".join(code for code in WEEKDAY_CODES if code in chosen)


class SessionForm(forms.ModelForm):
    class Meta:
        model = Session
        fields = [
            "title",
            "room",
            "track",
            "starts_at",
            "ends_at",
            "lobby_opens_before",
            "late_join_minutes",
            "admission_policy",
            "locked",
            "detached",
        ]

    def clean(self):
        cleaned = super().clean()
        moved = {"starts_at", "ends_at"} & set(self.changed_data)
        if self.instance.pk and moved and self.instance.status in {SessionStatus.LIVE, SessionStatus.ENDED}:
            raise ValidationError("A session that has started cannot be moved.", code="session.started")
        return cleaned
