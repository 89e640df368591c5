"""autobahn's per-connection settings dump is formatted only when its debug line is written."""

from __future__ import annotations

import pprint


def test_autobahn_formats_its_per_connection_config_dump_only_when_it_is_written():
    from autobahn.websocket import protocol

    import telehealth.asgi  # noqa: F401 - the ASGI module applies it, as daphne loads it

    settings_dump = [("autoPingInterval", 20, "WebSocketServerFactory"), ("utf8validateIncoming", True, "X")]
    deferred = protocol.pformat(settings_dump)

    assert not isinstance(deferred, str)  # nothing formatted yet
    assert str(deferred) == f"{deferred}" == pprint.pformat(settings_dump)  # the log line is unchanged
