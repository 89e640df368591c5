"""Render every page in the viewer's own time zone (storage stays UTC)."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.utils import timezone


class UserTimezoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        zone_name = getattr(user, "time_zone", None) if user is not None and user.is_authenticated else None
        try:
            timezone.activate(zoneinfo.ZoneInfo(zone_name or settings.CLINIC_TIME_ZONE))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            timezone.activate(zoneinfo.ZoneInfo(settings.CLINIC_TIME_ZONE))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
