import json

import pytest
from pydantic import ValidationError

from rooms import live
from signaling import protocol, protocol_docs
from signaling.handlers import HANDLERS, WAITING_ROOM_TYPES
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
        (frame(data={"text": "x" * 2001}), "protocol.too_large"),
        (frame(type="signal.description", to="m1", data={"kind": "offer", "sdp": "x" * 40_000}), "protocol.too_large"),
        (frame(type="signal.candidate", to="m1", data={"candidate": "x" * 2000}), "protocol.too_large"),
        (frame(type="chat.history", data={"after_seq": 10**40}), "protocol.bad_payload"),
        (frame(type="mod.mute", data={"member": "m1", "hard": "yes please"}), "protocol.bad_payload"),
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


def test_depth_is_counted_in_structure_not_in_brackets_inside_strings():
    # The bracket count only decides whether the structure needs walking.
    brackets = frame(data={"text": "{[" * 50})
    assert parse_client_frame(brackets).data == ChatSend(text="{[" * 50)
    six_deep = frame(data={"a": {"b": {"c": {"d": {"e": 1}}}}})  # envelope, data, a, b, c, d
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(six_deep)
    assert caught.value.code == "protocol.bad_payload"  # deep enough to be read, then refused as a payload
    seven_deep = frame(data={"text": "{" * 10, "a": {"b": {"c": {"d": {"e": {"f": 1}}}}}})
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(seven_deep)
    assert caught.value.code == "protocol.too_deep"


def test_parse_client_frame_echoes_client_id_on_payload_error():
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(frame(data={"text": 3}))
    assert caught.value.re == "c-1"


def test_client_types_has_no_internal_looking_names():
    assert all("." in t or t in {"ping", "resume"} for t in CLIENT_TYPES)
    assert not any(t.startswith(("websocket", "_")) for t in CLIENT_TYPES)


def test_handler_table_covers_exactly_the_client_types():
    assert set(HANDLERS) == CLIENT_TYPES
    assert WAITING_ROOM_TYPES <= CLIENT_TYPES


def test_server_frames_are_registered_by_their_type():
    assert all(model.model_fields["type"].default == type_ for type_, model in protocol.SERVER_MESSAGES.items())
    assert not CLIENT_TYPES & {"deliver", "tick"}  # the consumer's internal event types


def test_build_stamps_time_and_sender_and_validates_fields():
    frame = protocol.build(protocol.ChatDeleted, sender="m-1", seq=3)

    assert frame == {"v": 1, "type": "chat.deleted", "ts": frame["ts"], "from": "m-1", "re": None, "seq": 3}
    with pytest.raises(ValidationError):
        protocol.build(protocol.ChatDeleted, sender="m-1", seq=3, text="smuggled")
    with pytest.raises(ValidationError):
        protocol.build(protocol.ChatDeleted, sender="not a member id!", seq=3)


def test_timestamp_is_utc_with_milliseconds():
    from datetime import UTC, datetime, timedelta, timezone

    moment = datetime(2026, 3, 2, 18, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5)))

    assert protocol.timestamp(moment) == "2026-03-02T23:00:00.123Z"
    assert protocol.timestamp(datetime(2026, 3, 2, tzinfo=UTC)) == "2026-03-02T00:00:00.000Z"
    # Milliseconds are truncated, never rounded up into the next second.
    assert protocol.timestamp(datetime(2026, 3, 2, 0, 0, 59, 999999, tzinfo=UTC)) == "2026-03-02T00:00:59.999Z"
    assert protocol.timestamp(datetime(2026, 3, 2, 0, 0, 0, 999, tzinfo=UTC)) == "2026-03-02T00:00:00.000Z"
    assert protocol.timestamp(datetime(2026, 3, 2, 0, 0, 0, 1000, tzinfo=UTC)) == "2026-03-02T00:00:00.001Z"
    from zoneinfo import ZoneInfo  # what a database driver may hand back

    assert protocol.timestamp(datetime(2026, 3, 2, 1, 2, 3, 4000, tzinfo=ZoneInfo("UTC"))) == "2026-03-02T01:02:03.004Z"
    now = protocol.timestamp()
    assert now.endswith("Z") and datetime.fromisoformat(now[:-1] + "+00:00").tzinfo is not None


def test_ice_server_drops_unset_credentials():
    server = protocol.IceServer(urls=["stun:stun.example.org:3478"])

    assert server.model_dump() == {"urls": ["stun:stun.example.org:3478"]}


def test_error_codes_document_every_domain_code():
    assert set(live.CODES) <= set(protocol.ERROR_CODES)


def test_docs_are_generated_from_the_protocol_module():
    # Regenerate with: python -m signaling.protocol
    for path, text in protocol_docs.render().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is out of date"


def test_schema_lists_every_message_both_ways():
    schema = protocol_docs.schema()
    client, server = schema["anyOf"]

    assert len(client["oneOf"]) == len(protocol.CLIENT_MESSAGES)
    assert len(server["oneOf"]) == len(protocol.SERVER_MESSAGES)
    assert schema["$defs"]["Welcome"]["properties"]["from"]["anyOf"][1] == {"type": "null"}
