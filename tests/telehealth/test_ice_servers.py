"""ICE_SERVERS: STUN/TURN servers handed to browsers, from JSON or a list of URLs; bad values fail loudly."""

from __future__ import annotations

import pytest

from telehealth.env import ImproperlyConfiguredEnv, parse_ice_servers


@pytest.mark.parametrize("value", [None, "", "   "])
def test_ice_servers_unset_means_none(value):
    assert parse_ice_servers(value) == []


def test_ice_servers_comma_separated_urls():
    assert parse_ice_servers("stun:stun.example.org:3478, turns:turn.example.org:5349") == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turns:turn.example.org:5349"]},
    ]


def test_ice_servers_json_with_credentials():
    value = '[{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]'

    assert parse_ice_servers(value) == [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]


def test_ice_servers_json_single_server():
    assert parse_ice_servers('{"urls": ["stun:a:3478", "stun:b:3478"]}') == [{"urls": ["stun:a:3478", "stun:b:3478"]}]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[not json", "ICE_SERVERS is not valid JSON"),
        ("https://stun.example.org", "is not a stun:"),
        ('[{"urls": []}]', "need urls"),
        ('[{"urls": "stun:x", "password": "p"}]', "must be objects with urls"),
        ('[{"urls": "turn:x", "username": 5}]', "username must be a string"),
    ],
)
def test_ice_servers_bad_values_name_the_variable(value, message):
    with pytest.raises(ImproperlyConfiguredEnv, match=message):
        parse_ice_servers(value)
