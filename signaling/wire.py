"""Text frames written straight to the client's socket, below the ASGI ``send``.

A chat message to a room of 12 is written to 11 or 12 sockets. Through ASGI each write passed
Channels' session and cookie wrappers, daphne's ``handle_reply`` and autobahn's ``sendMessage``
(which builds the same unmasked frame again for every receiver), and then sat in Twisted's
buffer until the next turn of the loop, which registered the socket for writing, wrote it and
unregistered it again: two ``epoll_ctl`` calls and a loop callback per frame. Measured with
py-spy under chat load, that path was about a quarter of the server's event-loop time
(docs/performance.md). Here a frame is built once per message (``text_frame``) and each
receiver's socket gets the bytes directly when nothing is queued before them, exactly what the
socket would have received anyway.

Only daphne's plain-TCP WebSocket protocol without compression qualifies (``Socket.of`` finds it
behind the ``send`` daphne hands the application); anything else (Channels' test communicator,
another server, TLS terminated in daphne, a connection still in its handshake or closing, data
still queued in Twisted) goes the ordinary way. Both ways write synchronously to the same
transport, so frames keep their order whichever way each one goes.

Reading has the same shortcut (``whole_client_frames``, installed by ``read_text_frames_directly``):
what a browser sends almost always arrives as whole, small, final text frames, one TCP read each,
and pongs answering daphne's keepalive pings (one per connection every 20 s: at 1,200 quiet
connections, as many frames as the chat). autobahn takes each through its general state machine
(header parsing into its buffer, a native unmasking object built per frame, a UTF-8 validator,
message assembly, per-frame debug-log arguments) before daphne's ``onMessage`` puts the text in
the application's queue. When a read holds nothing but such frames and autobahn holds nothing
from earlier reads, they are unmasked and decoded here and handed to the same ``onMessage``, in
order, with autobahn's own bookkeeping for each (its traffic counts; a frame counts as a sign of
life while a pong is awaited); a pong goes to autobahn's own ``processControlFrame`` without the
parsing around it. Anything else (a frame split across reads, a fragment, a ping or close,
binary, invalid UTF-8, a size over the limits, any protocol error) goes to autobahn untouched,
so it answers exactly as before.

Closing goes this way too when the code is one autobahn's public ``sendClose`` refuses: it takes
only 1000 and 3000-4999, while the response contract's 1003, 1008, 1009 and 1013 are codes RFC 6455
(7.4.1) has a server send. Through ASGI those raised inside daphne and the connection ended as a
1011 instead (``Socket.close``).
"""

from __future__ import annotations

import functools
import struct

try:  # daphne's WebSocket protocol is autobahn's on Twisted; neither is needed to import this module
    from autobahn.websocket.protocol import FrameHeader
    from autobahn.websocket.protocol import WebSocketProtocol as _Autobahn
    from twisted.internet import tcp as _tcp
except ImportError:  # pragma: no cover - daphne always brings both
    FrameHeader = None
    _Autobahn = None
    _tcp = None

# Key of the scope entry telehealth.asgi adds to every WebSocket scope.
SCOPE_KEY = "telehealth.socket"
# A read takes the shortcut only with frames of a 7- or 16-bit payload length (under 64 KiB).
SHORT_FRAME_LIMIT = 0xFFFF


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 5.2): what a server sends."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 5.3: XOR with the 4-byte mask repeated (mask[0] applies to payload[0])."""
    size = len(payload)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


TEXT = 0x1
PONG = 0xA


def whole_client_frames(data: bytes, limit: int = SHORT_FRAME_LIMIT) -> list[tuple[int, bytes, bytes]] | None:
    """``(opcode, payload, mask)`` of each frame when ``data`` is nothing but whole, final, masked
    frames without extension bits in minimal length encoding: text frames of at most ``limit``
    bytes of valid UTF-8, and pongs (a control frame carries at most 125 bytes); None for anything
    else (it then goes to autobahn, which parses, answers or fails it as it always did)."""
    frames = []
    end = len(data)
    at = 0
    limit = min(limit, SHORT_FRAME_LIMIT)
    while at < end:
        if end - at < 6:
            return None
        first, size = data[at], data[at + 1]
        if first == 0x80 | TEXT:  # FIN, no RSV bits, text
            opcode = TEXT
        elif first == 0x80 | PONG:
            opcode = PONG
        else:
            return None
        if not size & 0x80:  # a client must mask
            return None
        size &= 0x7F
        at += 2
        if size == 126 and opcode == TEXT:
            size = int.from_bytes(data[at : at + 2], "big")
            if size < 126:  # not the minimal encoding: a protocol error autobahn reports
                return None
            at += 2
        elif size >= 126:
            return None
        if size > limit or end - at < 4 + size:
            return None
        mask = data[at : at + 4]
        payload = unmask(data[at + 4 : at + 4 + size], mask)
        if opcode == TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return None
        frames.append((opcode, payload, mask))
        at += 4 + size
    return frames


def _payload_limit(protocol) -> int:
    limits = [n for n in (protocol.maxFramePayloadSize, protocol.maxMessagePayloadSize) if n > 0]
    return min(limits, default=SHORT_FRAME_LIMIT)


def read_text_frames_directly() -> None:
    """Give daphne's WebSocket protocol the read shortcut described in the module docstring."""
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol.dataReceived, "reads_text_frames_directly", False):
        return
    general = WebSocketProtocol.dataReceived

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if (
            self.state == _Autobahn.STATE_OPEN
            and not self.data
            and self.current_frame is None
            and not self.inside_message
            and self._perMessageCompress is None
            and not self.logOctets
            and not self.logFrames
            and not self.trackedTimings
            and not self._listeners  # nobody observes autobahn's "message" event (daphne does not)
        ):
            frames = whole_client_frames(data, _payload_limit(self))
            if frames is not None:
                stats = self.trafficStats
                stats.incomingOctetsWireLevel += len(data)
                for opcode, payload, mask in frames:
                    if self.state != _Autobahn.STATE_OPEN:
                        return  # closed by what came before (as autobahn stops reading then)
                    if opcode == PONG:
                        # autobahn's own handling of a whole control frame (the awaited auto-ping's
                        # answer ends its timeout), without the parsing around it.
                        self.current_frame = FrameHeader(opcode, True, 0, len(payload), mask)
                        self.control_frame_data = [payload]
                        self.processControlFrame()
                        self.current_frame = None
                        continue
                    # What autobahn does at the end of each text frame: count it, and take it as a
                    # sign of life in place of an awaited pong (its autoPingRestartOnAnyTraffic).
                    stats.incomingWebSocketFrames += 1
                    stats.incomingWebSocketMessages += 1
                    if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                        self._cancelAutoPingTimeoutCall()
                    self.onMessage(payload, False)
                return
        general(self, data)

    dataReceived.reads_text_frames_directly = True
    WebSocketProtocol.dataReceived = dataReceived


class Socket:
    """One daphne connection's way to its socket; ``write`` says whether it could take a frame."""

    __slots__ = ("protocol",)

    def __init__(self, protocol) -> None:
        self.protocol = protocol

    @classmethod
    def of(cls, send) -> Socket | None:
        """The socket behind daphne's ``send`` (``partial(Server.handle_reply, protocol)``), or None."""
        if _Autobahn is None or not isinstance(send, functools.partial) or len(send.args) != 1:
            return None
        protocol = send.args[0]
        if getattr(send.func, "__name__", "") != "handle_reply" or not isinstance(protocol, _Autobahn):
            return None
        return cls(protocol)

    def close(self, code: int) -> bool:
        """Start the closing handshake with ``code``; False when it must go through ASGI instead.

        autobahn's ``sendCloseFrame`` is the call its own protocol errors use; it takes any code
        and moves the connection to closing exactly as ``sendClose`` does, so daphne then reports
        the disconnect to the application the usual way.
        """
        protocol = self.protocol
        if protocol.state in (_Autobahn.STATE_CLOSING, _Autobahn.STATE_CLOSED):
            return True  # already closing: nothing more to send
        if protocol.state != _Autobahn.STATE_OPEN:
            return False  # still in its handshake: ASGI rejects it with an HTTP answer
        protocol.sendCloseFrame(code=code, isReply=False)
        return True

    def write(self, frame: bytes) -> bool:
        """Write a frame from ``text_frame``; False when it must go through ASGI instead."""
        protocol = self.protocol
        if (
            protocol.state != _Autobahn.STATE_OPEN
            or protocol.send_state != _Autobahn.SEND_STATE_GROUND
            or protocol.send_queue
            or protocol._perMessageCompress is not None
        ):
            return False
        transport = protocol.transport
        if type(transport) is not _tcp.Server or not transport.connected or transport.disconnecting:
            return False
        if transport._tempDataLen or len(transport.dataBuffer) != transport.offset:
            transport.write(frame)  # behind what Twisted still holds, in order
            return True
        try:
            sent = transport.socket.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            # A broken connection: let Twisted find out and close it the usual way.
            transport.write(frame)
            return True
        if sent < len(frame):
            transport.write(frame[sent:])
        return True
