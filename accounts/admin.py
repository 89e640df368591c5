from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import FamilyContact, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "first_name", "last_name", "role", "display_name", "is_active"]
    list_filter = ["role", "is_active", "alias_approved", "is_staff"]
    search_fields = ["username", "first_name", "last_name", "email", "alias"]
    fieldsets = DjangoUserAdmin.fieldsets + (
        ("Clinic", {"fields": ("role", "time_zone", "phone", "alias", "alias_approved")}),
    )
    add_fieldsets = DjangoUserAdmin.add_fieldsets + (
        ("Clinic", {"fields": ("first_name", "last_name", "email", "role", "time_zone")}),
    )


@admin.register(FamilyContact)
class FamilyContactAdmin(admin.ModelAdmin):
    # Family members have no account; staff reach them by e-mail or phone to send a session link.
    # rooms.admin extends this admin with the per-program consents (accounts never imports rooms).
    list_display = ["name", "relationship", "participant", "email", "phone", "created_at"]
    search_fields = ["name", "participant__first_name", "participant__last_name"]
    list_select_related = ["participant"]
    autocomplete_fields = ["participant"]
    fields = ["participant", "name", "relationship", "email", "phone", "recorded_by", "created_at"]
    readonly_fields = ["recorded_by", "created_at"]
    date_hierarchy = "created_at"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "participant":
            kwargs.setdefault(
                "error_messages", {"invalid_choice": "Family contacts belong to participants: choose a participant."}
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.recorded_by = request.user
        super().save_model(request, obj, form, change)
