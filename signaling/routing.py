"""WebSocket routes. The session endpoint (/ws/sessions/<uuid>/) arrives with the realtime service.

Until then the router has no routes, so every WebSocket handshake is refused
(see tests/signaling/test_asgi.py).
"""

websocket_urlpatterns: list = []
