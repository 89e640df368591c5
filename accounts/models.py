"""People: users with a clinical role, their display-name policy, and family contacts.

Group confidentiality (IOP.md): peers see a display name only, first name and
last initial or an alias staff approved. E-mail, phone and full name are for
staff screens.
"""

from __future__ import annotations

import uuid
import zoneinfo

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError("%(value)s is not a known time zone.", params={"value": value}, code="invalid_tz")


def default_time_zone() -> str:
    return settings.CLINIC_TIME_ZONE


class Role(models.TextChoices):
    PARTICIPANT = "participant", "Participant"
    THERAPIST = "therapist", "Therapist"
    ADMIN = "admin", "Clinic admin"


class User(AbstractUser):
    # Opaque id for URLs, messages and logs; the integer pk never leaves the database.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PARTICIPANT)
    time_zone = models.CharField(max_length=64, default=default_time_zone, validators=[validate_time_zone])
    alias = models.CharField(
        max_length=40,
        blank=True,
        help_text="Name shown to other group members instead of first name + last initial, once approved.",
    )
    alias_approved = models.BooleanField(default=False, help_text="Staff approved the alias for use in groups.")
    phone = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=[r.value for r in Role]),
                name="accounts_user_role_valid",
            ),
        ]

    @property
    def display_name(self) -> str:
        """What peers see: an approved alias, else "First L.", else a neutral fallback."""
        if self.alias and self.alias_approved:
            return self.alias
        first = self.first_name.strip()
        last = self.last_name.strip()
        if first and last:
            return f"{first} {last[0].upper()}."
        if first:
            return first
        return "Participant" if self.role == Role.PARTICIPANT else "Staff member"

    @property
    def is_participant(self) -> bool:
        return self.role == Role.PARTICIPANT

    @property
    def is_therapist(self) -> bool:
        return self.role == Role.THERAPIST

    @property
    def is_clinic_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_clinic_staff(self) -> bool:
        """Therapists and clinic admins may see rosters with full names."""
        return self.role in {Role.THERAPIST, Role.ADMIN}

    def __str__(self) -> str:
        full = self.get_full_name()
        return full or self.username


class FamilyContact(models.Model):
    """A participant's family member, recorded by staff. No account: invites come by link.

    Consent to involve them is recorded per program in rooms.FamilyConsent
    (rooms owns programs; accounts never imports rooms).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    participant = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="family_contacts", limit_choices_to={"role": Role.PARTICIPANT}
    )
    name = models.CharField(max_length=120)
    relationship = models.CharField(max_length=60, help_text="e.g. spouse, parent, sibling")
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=32, blank=True)
    recorded_by = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="+", null=True, blank=True, editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(email="") | ~models.Q(phone=""),
                name="accounts_familycontact_has_email_or_phone",
                violation_error_message="A family contact needs an e-mail address or a phone number.",
            ),
        ]

    def clean(self) -> None:
        if not self.email and not self.phone:
            raise ValidationError("A family contact needs an e-mail address or a phone number.")
        if self.participant_id and self.participant.role != Role.PARTICIPANT:
            raise ValidationError({"participant": "Family contacts belong to participants."})

    def __str__(self) -> str:
        return f"{self.name} ({self.relationship})"
