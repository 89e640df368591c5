"""What loading the ASGI application does to the server process itself."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.telehealth.names import ROOT


def test_loading_the_application_freezes_what_the_process_keeps_for_life():
    # Run in a fresh interpreter: what daphne does when it imports telehealth.asgi.
    probe = (
        "import gc; before = gc.get_freeze_count(); import telehealth.asgi; "
        "print(before, gc.get_freeze_count(), len(gc.get_objects()))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "telehealth.settings"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    before, frozen, still_tracked = map(int, done.stdout.split())
    # Django and the apps' modules are out of the collector's sight; it walks next to nothing.
    assert before == 0
    assert frozen > 50_000
    assert still_tracked < frozen / 10
