from django.apps import AppConfig


class MediaConfig(AppConfig):
    """Group media: Janus SFU rooms, TURN credentials, aiortc peers (synthetic participants, pre-call check)."""

    name = "media"
    default_auto_field = "django.db.models.BigAutoField"
