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
    list_display = ["name", "relationship", "participant"]
    search_fields = ["name", "participant__first_name", "participant__last_name"]
    list_select_related = ["participant"]
    autocomplete_fields = ["participant"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.recorded_by = request.user
        super().save_model(request, obj, form, change)
