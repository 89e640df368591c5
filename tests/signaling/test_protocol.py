import json

import pytest

from signaling.protocol import CLIENT_TYPES, ChatSend, ProtocolError, parse_client_frame


def frame(**overrides) -> str:
    body = {"v": 1, "type": "chat.send", "id": "c-1", "data": {"text": "hello"}}
    body.update(overrides)
    return json.dumps(body)


def test_parse_client_frame_valid_chat():
    message = parse_client_frame(frame())
    assert (message.type, message.id, message.to, message.data) == ("chat.send", "c-1", None, ChatSend(text="hello"))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", "protocol.bad_json"),
        ("[]", "protocol.bad_envelope"),
        (frame(v=2), "protocol.bad_version"),
        (frame(type="websocket.disconnect"), "protocol.unknown_type"),
        (frame(type="__init__"), "protocol.unknown_type"),
        (frame(id=7), "protocol.bad_envelope"),
        (frame(extra=1), "protocol.bad_envelope"),
        (frame(data={"text": ""}), "protocol.bad_payload"),
        (frame(data={"text": "x" * 2001}), "protocol.bad_payload"),
        (frame(data={"text": "hi", "from": "someone-else"}), "protocol.bad_payload"),
        (frame(data={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}), "protocol.too_deep"),
        (frame(to="m1"), "protocol.target_unexpected"),
        (frame(type="signal.candidate", data={"candidate": ""}), "protocol.target_required"),
    ],
)
def test_parse_client_frame_refuses_bad_input(text, code):
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(text)
    assert caught.value.code == code


def test_parse_client_frame_echoes_client_id_on_payload_error():
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(frame(data={"text": 3}))
    assert caught.value.re == "c-1"


def test_client_types_has_no_internal_looking_names():
    assert all("." in t or t in {"ping", "resume"} for t in CLIENT_TYPES)
    assert not any(t.startswith(("websocket", "_")) for t in CLIENT_TYPES)
