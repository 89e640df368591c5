"""Time-limited TURN credentials for coturn's ``use-auth-secret`` mode (the "TURN REST API").

coturn and this server share one secret. We mint, per admitted member, a username
``"<unix expiry>:<pseudonym>"`` and the password ``base64(HMAC-SHA1(secret, username))``;
coturn recomputes the password from the username and refuses it after the expiry. Nothing
is stored and nothing is sent to coturn.

coturn writes usernames to its log, so the part after the colon is a pseudonym: an HMAC of
the caller's subject (for example a seat's member id) under a key derived from the secret.
Without the secret nobody can tell which member (let alone which person) a log line is about;
with it an operator can check a suspected subject against the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The longest credential we hand out, whatever the caller asks: a 3.5-hour group plus margin
# fits easily, while a leaked credential cannot be used for days.
MAX_LIFETIME = timedelta(hours=12)
_PSEUDONYM_CONTEXT = b"telehealth turn pseudonym v1"


class TurnNotConfigured(RuntimeError):
    """TURN_URLS / TURN_SECRET are not set: hand out no TURN server."""


@dataclass(frozen=True)
class TurnCredential:
    username: str
    password: str
    expires_at: datetime

    def ice_server(self, urls: list[str]) -> dict:
        """An RTCIceServer dict in the shape the welcome message's ``ice_servers`` carries."""
        return {"urls": list(urls), "username": self.username, "credential": self.password}


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def pseudonym(secret: str | bytes, subject: str) -> str:
    """A stable, opaque name for ``subject`` that only the secret's holder can link back to it.

    The pseudonym key is derived from the TURN secret (never the secret itself), so the value
    that lands in coturn's log cannot help anyone forge passwords either.
    """
    pseudonym_key = hmac.new(_key(secret), _PSEUDONYM_CONTEXT, hashlib.sha256).digest()
    digest = hmac.new(pseudonym_key, subject.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def turn_password(secret: str | bytes, username: str) -> str:
    """coturn's use-auth-secret password: base64 of HMAC-SHA1(secret, username)."""
    return base64.b64encode(hmac.new(_key(secret), username.encode(), hashlib.sha1).digest()).decode()


def mint(
    secret: str | bytes,
    subject: str,
    *,
    valid_until: datetime,
    now: datetime,
    margin: timedelta,
    max_lifetime: timedelta = MAX_LIFETIME,
) -> TurnCredential:
    """A credential for ``subject`` valid until ``valid_until + margin`` (at most ``now + max_lifetime``).

    ``valid_until`` is normally the session's end: the credential must outlive the session, since
    an ICE restart in the last minute still needs the relay. Expiry is whole seconds, rounded up.
    """
    if not secret:
        raise TurnNotConfigured("no TURN secret")
    if now.tzinfo is None or valid_until.tzinfo is None:
        raise ValueError("now and valid_until must be aware datetimes")
    if margin < timedelta(0):
        raise ValueError("margin must not be negative")
    expires = min(max(valid_until, now) + margin, now + max_lifetime)
    expiry = int(expires.timestamp())
    if expiry < expires.timestamp():
        expiry += 1
    username = f"{expiry}:{pseudonym(secret, subject)}"
    return TurnCredential(username, turn_password(secret, username), datetime.fromtimestamp(expiry, tz=UTC))


def ice_servers_for(subject: str, *, valid_until: datetime, now: datetime) -> list[dict]:
    """The TURN entry for the welcome message's ``ice_servers``, from settings; [] without TURN.

    The consumer calls this at join and on ICE restart for an admitted member only.
    """
    from django.conf import settings

    if not settings.TURN_URLS:
        return []
    credential = mint(
        settings.TURN_SECRET,
        subject,
        valid_until=valid_until,
        now=now,
        margin=timedelta(seconds=settings.TURN_TTL_MARGIN),
    )
    return [credential.ice_server(settings.TURN_URLS)]
