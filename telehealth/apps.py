from django.apps import AppConfig


class TelehealthConfig(AppConfig):
    name = "telehealth"
    verbose_name = "Telehealth platform wiring"

    def ready(self) -> None:
        from telehealth import checks  # noqa: F401  (registers the system checks)
