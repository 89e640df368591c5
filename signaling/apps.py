from django.apps import AppConfig


class SignalingConfig(AppConfig):
    name = "signaling"
    verbose_name = "Realtime signaling"
