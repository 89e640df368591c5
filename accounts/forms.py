import zoneinfo

from django import forms

from accounts.models import User

# The zones people actually pick first; the full IANA list follows.
_COMMON = ["America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
           "America/Anchorage", "Pacific/Honolulu", "UTC"]


def time_zone_choices() -> list[tuple[str, str]]:
    rest = sorted(z for z in zoneinfo.available_timezones() if z not in _COMMON and "/" in z)
    return [(z, z.replace("_", " ")) for z in _COMMON + rest]


class ProfileForm(forms.ModelForm):
    time_zone = forms.ChoiceField(choices=time_zone_choices, label="Your time zone",
                                  help_text="Session times are shown in this zone.")

    class Meta:
        model = User
        fields = ["time_zone"]
