from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Telehealth IOP administration"
admin.site.site_title = "Telehealth admin"
admin.site.index_title = "Programs, schedules and people"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("media/", include("media.urls")),
    path("", include("rooms.urls")),
]
