"""Read-only admin pages for the media side: where each session's Janus room lives, and the nodes.

Nothing here can be edited: placement and health are decided by the server (media.sfu). The room
secret is not shown.
"""

from __future__ import annotations

from django.contrib import admin

from media.models import JanusNode, SfuRoom


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(JanusNode)
class JanusNodeAdmin(ReadOnly):
    list_display = ("url", "state", "down_since", "checked_at", "moved_rooms", "live_rooms")
    ordering = ("url",)

    @admin.display(description="state")
    def state(self, node: JanusNode) -> str:
        return "down" if node.down_since else "up"

    @admin.display(description="live rooms")
    def live_rooms(self, node: JanusNode) -> int:
        return SfuRoom.objects.filter(node=node.url, destroyed_at__isnull=True).count()


@admin.register(SfuRoom)
class SfuRoomAdmin(ReadOnly):
    list_display = ("session", "node", "created_at", "opened_at", "destroyed_at")
    list_filter = ("node",)
    fields = ("session", "node", "publishers", "created_at", "opened_at", "destroyed_at")
    list_select_related = ("session",)
