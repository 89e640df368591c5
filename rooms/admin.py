from django.contrib import admin

from rooms.models import (AuditEvent, Enrollment, FamilyConsent, Program, Room, Session, SessionSeries, Track)

for model in (Program, Track, Enrollment, Room, SessionSeries, Session, FamilyConsent):
    admin.site.register(model)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "action", "code", "actor", "subject", "session"]
