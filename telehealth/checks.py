"""Deploy checks: refuse settings that are fine for the demo and unsafe for a clinic.

Run by ``manage.py check --deploy`` (and by daphne start-up scripts in
production). Each check has a stable id so operators can look it up.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def check_production_settings(app_configs, **kwargs) -> list[Error]:
    errors: list[Error] = []
    layer = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    if not settings.DEBUG and layer.endswith("InMemoryChannelLayer"):
        errors.append(
            Error(
                "DEBUG is off but the channel layer is in-memory: messages will not cross processes.",
                hint="Set REDIS_URL so every daphne process shares one channel layer.",
                id="telehealth.E001",
            )
        )
    if "*" in settings.ALLOWED_HOSTS:
        errors.append(
            Error(
                "ALLOWED_HOSTS contains '*': any Host header (and WebSocket origin) is accepted.",
                hint="List the clinic's host names in ALLOWED_HOSTS.",
                id="telehealth.E002",
            )
        )
    if settings.SECRET_KEY == settings.DEMO_SECRET_KEY or len(settings.SECRET_KEY) < 50:
        errors.append(
            Error(
                "SECRET_KEY is the public demo key or too short.",
                hint="Set SECRET_KEY (or SECRET_KEY_FILE) to 50+ random characters.",
                id="telehealth.E003",
            )
        )
    return errors
