"""HTTP endpoints of the media app: the pre-call check (media.precall).

``GET  /media/precall/``  what the browser needs to start a check: ICE servers (with TURN
                          credentials minted for this check only, valid for minutes) and a CSRF token.
``POST /media/precall/``  ``{"sdp": <offer>, "relay": bool}`` -> ``{"sdp": <answer>, "seconds": N}``;
                          the report then arrives over the browser's data channel.

Errors are JSON with a stable ``error`` code and a ``detail`` a person can read; nothing here ever
answers with a traceback.
"""

from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.middleware.csrf import get_token
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from media import precall, turn


def _error(status: int, code: str, detail: str, **extra) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)


def _stun_only(servers: list[dict]) -> list[dict]:
    """ICE_SERVERS without TURN entries (those carry long-lived credentials or none that fit)."""

    def urls(server: dict) -> list[str]:
        value = server.get("urls", [])
        return [value] if isinstance(value, str) else list(value)

    return [s for s in servers if not any(u.startswith(("turn:", "turns:")) for u in urls(s))]


def _ice_servers(request) -> list[dict]:
    """The server's STUN entries, plus a TURN credential for this check only (10 minutes)."""
    now = timezone.now()
    subject = f"precall:{request.user.pk}:{request.session.session_key or ''}"
    return _stun_only(settings.ICE_SERVERS) + turn.ice_servers_for(
        subject, valid_until=now + timedelta(minutes=10), now=now
    )


def _refusal(raw: bytes) -> JsonResponse | None:
    """Why this request body is not a check we can run, or None."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return _error(400, "precall.bad_request", "The request is not valid JSON.")
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
        return _error(400, "precall.bad_request", 'Send {"sdp": <your offer>, "relay": true|false}.')
    sdp = body["sdp"]
    if not sdp.startswith("v=0") or len(sdp) > precall.MAX_SDP_CHARS:
        return _error(400, "precall.bad_sdp", "The offer is not a session description this check accepts.")
    if "\nm=audio " not in sdp and "\nm=video " not in sdp:
        return _error(400, "precall.bad_sdp", "The offer has no audio or video to check.")
    return None


@login_required
@require_http_methods(["GET", "POST"])
async def precall_check(request):
    if request.method == "GET":
        return JsonResponse(
            {
                "iceServers": _ice_servers(request),
                "relayAvailable": bool(settings.TURN_URLS),
                "csrfToken": get_token(request),
                "seconds": precall.MEASURE_SECONDS,
            }
        )
    # Every attempt counts against the person's checks a minute, malformed ones too.
    wait = precall.LIMITER.admit(str(request.user.pk))
    if wait:
        return _error(429, "precall.rate_limited", "Too many checks: try again in a minute.", retry_after_s=round(wait))
    refusal = _refusal(request.body)
    if refusal is not None:
        precall.LIMITER.done()
        return refusal
    body = json.loads(request.body)
    probe = precall.Probe(_stun_only(settings.ICE_SERVERS), relay=body.get("relay") is True)
    try:
        answer = await probe.answer(body["sdp"])
    except Exception:  # aiortc refuses what it cannot parse or negotiate
        precall.LIMITER.done()
        await probe.pc.close()
        return _error(400, "precall.bad_sdp", "The offer could not be negotiated (no audio or video we can receive).")
    precall.start(probe)
    return JsonResponse({"sdp": answer, "seconds": precall.MEASURE_SECONDS})
