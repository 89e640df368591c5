"""One measured inefficiency in autobahn (daphne's WebSocket layer), worked around.

On every new WebSocket, ``WebSocketProtocol._connectionMade`` builds a pretty-printed dump of the
protocol's ~50 settings with ``pprint.pformat`` for a debug log line, whether or not debug
logging is on: about 5 % of the server's CPU in a join storm (py-spy, docs/performance.md). Here
that module's ``pformat`` returns a value that formats only when the line is really written, so
the log output is unchanged when debug logging is on and nothing is spent when it is off.
"""

from __future__ import annotations

import pprint


class LazyFormat:
    """``pprint.pformat(value)``, computed when (and each time) it is turned into text."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __str__(self) -> str:  # "{attrs}".format(attrs=...) ends here too (object.__format__)
        return pprint.pformat(self.value)


def defer_connection_config_dump() -> None:
    from autobahn.websocket import protocol

    protocol.pformat = LazyFormat
