"""Media tests never pass by skipping in CI: a missing binary fails them under TELEHEALTH_REQUIRE_SERVICES=1."""

from __future__ import annotations

import pytest

from tests.media.conftest import require_binary

pytestmark = pytest.mark.media


def test_require_binary_missing_fails_when_services_are_required(monkeypatch):
    monkeypatch.setenv("TELEHEALTH_REQUIRE_SERVICES", "1")

    with pytest.raises(pytest.fail.Exception, match="TELEHEALTH_REQUIRE_SERVICES=1 but no-such-janus-xyz"):
        require_binary("no-such-janus-xyz")


def test_require_binary_missing_skips_for_developers(monkeypatch):
    monkeypatch.delenv("TELEHEALTH_REQUIRE_SERVICES", raising=False)

    with pytest.raises(pytest.skip.Exception, match="no-such-turnserver-xyz is not installed"):
        require_binary("no-such-turnserver-xyz")


def test_require_binary_present_returns_its_path():
    assert require_binary("sh").endswith("/sh")
