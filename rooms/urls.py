from django.urls import path

from rooms import views

urlpatterns = [
    path("", views.home, name="home"),
    path("sessions/<uuid:session_id>/", views.session_detail, name="session_detail"),
    path("sessions/<uuid:session_id>/join/", views.join, name="session_join"),
    path("healthz", views.healthz, name="healthz"),
]
