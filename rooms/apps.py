from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _fast_timestamps(sender, connection, **kwargs) -> None:
    if connection.vendor == "postgresql":
        from rooms import pg

        pg.load_timestamps_fast(connection.connection.adapters, connection.timezone)


class RoomsConfig(AppConfig):
    name = "rooms"
    verbose_name = "Programs, rooms and sessions"

    def ready(self) -> None:
        # Every PostgreSQL connection of the project loads timestamps with psycopg's C loader (rooms.pg).
        connection_created.connect(_fast_timestamps, dispatch_uid="rooms.fast_timestamps")
