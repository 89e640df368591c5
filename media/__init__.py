"""Group media (issue 5): Janus SFU rooms brokered by the server, TURN credentials, aiortc peers.

Imports go one way: media may use accounts and rooms, never signaling; signaling uses media.
"""
