import zoneinfo

from django import forms
from django.contrib.auth import forms as auth_forms

from accounts.models import User


class _PlainLabels:
    """Labels without Django's trailing colon: the label sits above its field."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class LoginForm(_PlainLabels, auth_forms.AuthenticationForm):
    pass


class PasswordResetForm(_PlainLabels, auth_forms.PasswordResetForm):
    pass


class SetPasswordForm(_PlainLabels, auth_forms.SetPasswordForm):
    pass


# The zones people actually pick first, with names a person recognises; the full IANA list follows.
_COMMON = [
    ("America/New_York", "US Eastern (New York)"),
    ("America/Chicago", "US Central (Chicago)"),
    ("America/Denver", "US Mountain (Denver)"),
    ("America/Phoenix", "US Mountain, no daylight saving (Phoenix)"),
    ("America/Los_Angeles", "US Pacific (Los Angeles)"),
    ("America/Anchorage", "Alaska (Anchorage)"),
    ("Pacific/Honolulu", "Hawaii (Honolulu)"),
    ("UTC", "UTC"),
]


def time_zone_choices() -> list:
    common = {zone for zone, _ in _COMMON}
    rest = sorted(z for z in zoneinfo.available_timezones() if z not in common and "/" in z)
    return [
        ("Common", _COMMON),
        ("All time zones", [(z, z.replace("_", " ")) for z in rest]),
    ]


class ProfileForm(_PlainLabels, forms.ModelForm):
    time_zone = forms.ChoiceField(
        choices=time_zone_choices, label="Your time zone", help_text="Session times are shown in this zone."
    )

    class Meta:
        model = User
        fields = ["time_zone"]
