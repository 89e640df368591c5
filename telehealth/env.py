"""Typed readers for environment variables.

Every setting comes from the environment. A bad value must stop the process at
start with a message that names the variable, never fall back silently: a
typo in production should be loud. ``NAME_FILE`` is honoured for secrets
(Docker/Kubernetes secrets are mounted as files).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

# URL schemes DATABASE_URL accepts for PostgreSQL.
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")


class ImproperlyConfiguredEnv(ValueError):
    """Raised when an environment variable holds a value we cannot use."""


def _raw(name: str, environ: dict[str, str]) -> str | None:
    file_name = environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfiguredEnv(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    return environ.get(name)


@dataclass
class Env:
    environ: dict[str, str]

    @classmethod
    def from_os(cls) -> Env:
        return cls(dict(os.environ))

    def str(self, name: str, default: str | None = None) -> str | None:
        value = _raw(name, self.environ)
        if value is None or value == "":
            return default
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self.str(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")

    def int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.str(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} is not an integer") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfiguredEnv(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfiguredEnv(f"{name}={number} is above the maximum {maximum}")
        return number

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self.str(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: str, default: str, choices: set[str]) -> str:
        value = self.str(name, default)
        assert value is not None
        if value not in choices:
            raise ImproperlyConfiguredEnv(f"{name}={value!r} is not one of {sorted(choices)}")
        return value


# The embedded default serves several threads at once (daphne's database thread, the HTTP views,
# a management command beside it). In SQLite's default (deferred) mode a transaction that read
# first and then writes fails at once with "database is locked" when another writer holds the
# file (waiting could deadlock), whatever the timeout. Taking the write lock when the transaction
# begins makes every writer wait its turn instead, up to `timeout` seconds; WAL lets readers go on
# meanwhile.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def parse_database_url(url: str, *, base_dir: Path) -> dict:
    """Turn ``DATABASE_URL`` into a Django ``DATABASES['default']`` dict.

    Supported: ``sqlite:///relative/or/absolute.sqlite3`` and
    ``postgres://user:password@host:port/name?sslmode=require``.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path)
        if path.startswith("//"):  # sqlite:////abs/path
            path = path[1:]
        elif path.startswith("/"):
            path = path[1:]
        if not path:
            raise ImproperlyConfiguredEnv("DATABASE_URL=sqlite:/// needs a file name")
        name = path if path == ":memory:" or Path(path).is_absolute() else str(base_dir / path)
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "OPTIONS": SQLITE_OPTIONS}
    if parsed.scheme in POSTGRES_SCHEMES:
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ImproperlyConfiguredEnv("DATABASE_URL has no database name (postgres://user@host:5432/NAME)")
        try:
            port = parsed.port
        except ValueError:
            raise ImproperlyConfiguredEnv("DATABASE_URL has an invalid port") from None
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(port or ""),
            "OPTIONS": options,
            # Keep connections for a minute; ASGI code paths close stale ones.
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    raise ImproperlyConfiguredEnv(
        f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use sqlite:/// or postgres://)"
    )


def parse_redis_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfiguredEnv(
            f"REDIS_URL scheme {parsed.scheme!r} is not supported (use redis:// or rediss://)"
        )
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ImproperlyConfiguredEnv("REDIS_URL has no host (redis://127.0.0.1:6379/0)")
    return url


ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def parse_ice_servers(value: str | None) -> list[dict]:
    """Turn ``ICE_SERVERS`` into RTCIceServer dicts for the browser.

    Either JSON (one or a list of ``{"urls": ..., "username": ..., "credential": ...}``)
    or a comma-separated list of ``stun:``/``turn:`` URLs. Empty means none
    (peers on one network still connect through host candidates).
    """
    if value is None or not value.strip():
        return []
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ImproperlyConfiguredEnv(f"ICE_SERVERS is not valid JSON: {exc}") from None
        raw = [raw] if isinstance(raw, dict) else raw
    else:
        raw = [{"urls": [url.strip()]} for url in text.split(",") if url.strip()]
    if not isinstance(raw, list):
        raise ImproperlyConfiguredEnv("ICE_SERVERS must be a JSON list of servers or a comma-separated list of URLs")
    servers = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) - {"urls", "username", "credential"}:
            raise ImproperlyConfiguredEnv(
                "ICE_SERVERS entries must be objects with urls and optionally username and credential"
            )
        urls = entry.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ImproperlyConfiguredEnv("ICE_SERVERS entries need urls (a string or a list of strings)")
        bad = [u for u in urls if not u.startswith(ICE_SCHEMES)]
        if bad:
            raise ImproperlyConfiguredEnv(f"ICE_SERVERS URL {bad[0]!r} is not a stun:, stuns:, turn: or turns: URL")
        server: dict = {"urls": urls}
        for key in ("username", "credential"):
            if key in entry:
                if not isinstance(entry[key], str):
                    raise ImproperlyConfiguredEnv(f"ICE_SERVERS {key} must be a string")
                server[key] = entry[key]
        servers.append(server)
    return servers
