"""WebSocket routes: the session endpoint. telehealth/asgi.py adds the catch-all refusal after these."""

from django.urls import path

from signaling.consumers import SessionConsumer

websocket_urlpatterns: list = [
    path("ws/sessions/<uuid:session_id>/", SessionConsumer.as_asgi(), name="ws-session"),
]
