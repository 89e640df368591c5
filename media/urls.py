from django.urls import path

from media import views

app_name = "media"

urlpatterns = [
    path("precall/", views.precall_check, name="precall"),
]
