"""The Janus room of a session (SFU sessions only): which node, which room, its secret, its life.

Django owns the lifecycle (docs/media.md): the row is made under the session's row lock when the
first member of an SFU session is admitted, so every server process uses the same Janus room; the
room is destroyed at Janus when the session ends and ``destroyed_at`` says so. The secret never
leaves the server (it is not in ``__str__``, frames or logs).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from rooms.models import Session


class SfuRoom(models.Model):
    session = models.OneToOneField(Session, on_delete=models.CASCADE, related_name="sfu_room")
    node = models.CharField(max_length=200, help_text="The Janus node's WebSocket API URL (one of JANUS_URLS).")
    janus_room = models.CharField(max_length=64, help_text="Random room id at Janus (string ids).")
    secret = models.CharField(max_length=64, editable=False, help_text="The room's secret at Janus; server-side only.")
    publishers = models.PositiveSmallIntegerField(help_text="Publishers the room allows (capacity plus staff).")
    created_at = models.DateTimeField()
    opened_at = models.DateTimeField(null=True, blank=True, help_text="When Janus confirmed the room.")
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session"], name="media_sfuroom_one_per_session"),
            models.UniqueConstraint(fields=["janus_room"], name="media_sfuroom_unique_janus_room"),
            models.CheckConstraint(condition=Q(publishers__gte=2), name="media_sfuroom_publishers_min"),
        ]
        indexes = [models.Index(fields=["node", "destroyed_at"], name="media_sfuroom_node_live")]

    def __str__(self) -> str:
        return f"sfu room of session {self.session_id}"


class JanusNode(models.Model):
    """What the server processes last concluded about one Janus node (one of JANUS_URLS).

    A process marks a node down after it failed ``JANUS_HEALTH_FAILURES`` health checks in a row
    (media.sfu.note_health); a down node gets no new sessions, and the first process to mark it
    down moves its live rooms to another node. The first check that passes marks it up again.
    """

    url = models.CharField(max_length=200, unique=True)
    down_since = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField()
    moved_rooms = models.PositiveIntegerField(default=0, help_text="Live rooms moved off this node so far.")

    def __str__(self) -> str:
        return f"janus node {self.pk} ({'down' if self.down_since else 'up'})"
