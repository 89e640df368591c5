"""A peer-to-peer room past four people: the therapist is told (no SFU configured).

Four synthetic participants (aiortc, `manage.py drop_synthetic_participants`) wait in the demo's
group session through the running server, the therapist's browser lets them in, and the room now
holds five people connected as a mesh.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT, _stop, log_in, make_server, new_page
from tests.e2e.test_room_flow import ARRANGE, open_prejoin

pytestmark = [pytest.mark.e2e, pytest.mark.media]


def test_therapist_is_told_when_a_mesh_room_passes_four_people(tmp_path_factory, media_browser):
    server, proc, log, arranged = make_server(tmp_path_factory, "mesh-notice", ARRANGE)
    session_id = arranged.splitlines()[-1]
    join_path = f"/sessions/{session_id}/join/"
    synthetic_log = tmp_path_factory.mktemp("synthetic") / "synthetic.log"
    synthetic = subprocess.Popen(
        [sys.executable, "manage.py", "drop_synthetic_participants", "--session", session_id, "--count", "4"]
        + ["--url", server.url, "--seconds", "90"],
        cwd=ROOT,
        env=server.env,
        stdout=synthetic_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    context, page, watch = new_page(media_browser)
    try:
        page.set_default_timeout(30_000)
        log_in(page, server, "demo-lead")
        open_prejoin(page, server, join_path)
        page.get_by_role("button", name="Enter as therapist").click()
        try:
            page.locator("#waiting-list li").nth(3).wait_for(timeout=60_000)
        except Exception as exc:  # say what the synthetic participants did
            raise AssertionError(synthetic_log.read_text()[-3000:] + log.read_text()[-3000:]) from exc
        notice = page.locator("#mesh-notice")
        assert notice.is_hidden()  # the therapist alone in the room

        page.get_by_role("button", name="Admit all").click()

        notice.wait_for()
        assert notice.inner_text().startswith("5 people are connected peer to peer")
        assert page.evaluate("() => window.telehealth.mediaPath()") == "mesh"
        assert watch.violations == [] and watch.errors == []
    finally:
        context.close()
        synthetic.kill()
        synthetic.wait(10)
        _stop(proc)
