"""A real server and a real browser for the screen tests.

The server is daphne (the production server) in a subprocess, on a free port,
against a throw-away SQLite database that ``seed_demo`` filled. The browser is
Debian's chromium driven by Playwright's sync API; ``playwright install`` is
never needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytest

from telehealth import serve

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
DEMO_PASSWORD = "calm-harbor-demo"
CLINIC_ZONE = "America/New_York"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@dataclass
class DemoServer:
    url: str
    env: dict
    seed_output: str

    def manage(self, *args: str) -> str:
        """Run a management command against the server's database and return its output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout


# What a child process inherits; everything else (DATABASE_URL, REDIS_URL, DEBUG...) is set here,
# so the server never touches the developer's or CI's database.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")


def _start_daphne(env: dict, log: Path, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start daphne on a port the kernel picks (-p 0, no race) and wait for /healthz."""
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            serve.command("127.0.0.1", 0),
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"daphne exited with {proc.returncode}:\n{log.read_text()}")
        if url is None:
            found = re.search(r"Listening on TCP address 127\.0\.0\.1:(\d+)", log.read_text())
            url = f"http://127.0.0.1:{found.group(1)}" if found else None
        if url is not None:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200 and b'"ok"' in response.read():
                        return proc, url
            except OSError:
                pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"daphne did not answer /healthz within {timeout:.0f}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory) -> DemoServer:
    tmp = tmp_path_factory.mktemp("e2e")
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ} | {
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "telehealth.settings",
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "CLINIC_TIME_ZONE": CLINIC_ZONE,
        "DEBUG": "true",  # whitenoise serves static files from the finders, no collectstatic
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    server = DemoServer(url="", env=env, seed_output="")
    server.manage("migrate", "--no-input", "-v", "0")
    server.seed_output = server.manage("seed_demo", "--password", DEMO_PASSWORD)
    log = tmp / "daphne.log"
    proc, server.url = _start_daphne(env, log)
    try:
        yield server
    finally:
        _stop(proc)
    # Whatever the screens showed, an unhandled exception in the server is a bug.
    assert "Traceback" not in log.read_text(), log.read_text()


# Module scope, not session: while sync Playwright runs it owns an asyncio loop on this thread,
# and the async tests that follow (pytest-asyncio) need the thread back.
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class CspWatch:
    """Collects the browser's Content-Security-Policy complaints (the strict policy must hold)
    and the page's uncaught JavaScript errors (a broken module must fail the test, not hide)."""

    def __init__(self, page):
        self.violations: list[str] = []
        self.errors: list[str] = []
        self.console: list[str] = []  # warnings and errors, for a failing test's message
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        WATCHES[page] = self

    def _on_console(self, message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.violations.append(message.text)
        if message.type in ("warning", "error"):
            self.console.append(f"{message.type}: {message.text}")


WATCHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def console_of(page) -> list[str]:
    """The warnings and errors the page has logged (say what went wrong when a wait fails)."""
    watch = WATCHES.get(page)
    return watch.console if watch else []


def new_page(browser, **context_options):
    """A fresh browser profile (a new user: no cookies) and its page, with a CSP watch attached."""
    # A clinic-side browser: its clock and zone agree with the people it shows (and the admin's hints).
    defaults = {"viewport": DESKTOP, "timezone_id": CLINIC_ZONE, "locale": "en-US"}
    context = browser.new_context(**(defaults | context_options))
    page = context.new_page()
    page.set_default_timeout(10_000)
    return context, page, CspWatch(page)


def media_page(browser, server: DemoServer, username: str, **context_options):
    """``new_page`` for someone in a room: logged in, camera and microphone allowed, and the longer
    timeout pages encoding and decoding each other's video need on two shared cores."""
    context, page, watch = new_page(browser, **context_options)
    page.set_default_timeout(20_000)
    context.grant_permissions(["camera", "microphone"], origin=server.url)
    log_in(page, server, username)
    return context, page, watch


def log_in(page, server: DemoServer, username: str, password: str = DEMO_PASSWORD) -> None:
    page.goto(f"{server.url}/")
    # Anonymous visitors land on the login page.
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")


def screenshot(page, name: str, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


@pytest.fixture(scope="module")
def media_browser():
    """Chromium that plays remote audio without a click first (the tests' stand-in for the Join click)."""
    yield from launch_media_browser()


def launch_media_browser(*extra_args: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required", *extra_args],
            headless=True,
        )
        try:
            yield browser
        finally:
            browser.close()


def write_tone(path: Path, seconds: int = 4, frequency: int = 440) -> Path:
    """A loud, steady 16-bit mono WAV tone: a fake microphone that talks all the time (chromium's own
    fake device only beeps, too briefly for the SFU to call it talking)."""
    import math
    import struct
    import wave

    rate = 48_000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (int(16_000 * math.sin(2 * math.pi * frequency * n / rate)) for n in range(rate * seconds))
        out.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))
    return path


AXE = ROOT / "tests" / "e2e" / "vendor" / "axe.min.js"


def axe_violations(page, impacts=("serious", "critical")) -> list[dict]:
    """Run axe-core (vendored, injected by the test only) on the page; the serious and critical findings."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through devtools, so the page's strict CSP does not apply to the test's own script
        # (a <script> tag would be refused, as it should be).
        page.evaluate(AXE.read_text() + "\n;true")
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map((v) => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' '))}))"
    )
    return [v for v in result if v["impact"] in impacts]


def make_server(tmp_path_factory, name: str, arrange: str = "", **extra_env):
    """A daphne of its own on a freshly seeded database, for tests that change or end sessions."""
    tmp = tmp_path_factory.mktemp(name)
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ} | {
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "telehealth.settings",
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "CLINIC_TIME_ZONE": CLINIC_ZONE,
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        **extra_env,
    }
    server = DemoServer(url="", env=env, seed_output="")
    server.manage("migrate", "--no-input", "-v", "0")
    server.seed_output = server.manage("seed_demo", "--password", DEMO_PASSWORD)
    arranged = server.manage("shell", "-c", arrange).strip() if arrange else ""
    log = tmp / "daphne.log"
    proc, server.url = _start_daphne(env, log)
    return server, proc, log, arranged
