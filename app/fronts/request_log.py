"""One structured JSON line per request, written to stderr by the `smsbridge.request` logger.

    {"time": "2026-11-23T10:00:00.123Z", "request_id": "...", "client_ip": "203.0.113.7",
     "method": "POST", "path": "/sendsms/", "dialect": "rest", "operation": "sendsms",
     "client": "acme-shop", "backend": "mobsms", "recipients": ["+32*******001"],
     "upstream_status": 201, "upstream_ms": 41.2, "upstream_calls": 1,
     "status": 200, "outcome": "ok", "ms": 45.9}

Never a key, token, secret or message text; recipients keep only their last three digits. The request
id is the caller's X-Request-ID when it is a sane one, else a new one, and is echoed in the answer.
The client IP is the peer's, or, behind SMSBRIDGE_TRUSTED_PROXIES proxies, the address those proxies
saw, so a client cannot choose its own by sending X-Forwarded-For.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from flask import Flask, Request, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from app import redaction
from app.service import current, current_or_none

log = logging.getLogger("smsbridge.request")


def mask_number(number: str) -> str:
    """Return a phone number with every digit but the last three hidden."""
    digits = sum(c.isdigit() for c in number)
    seen = 0
    masked = []
    for c in number:
        if c.isdigit():
            seen += 1
            masked.append(c if seen > digits - 3 else "*")
        elif c == "+":
            masked.append(c)
    return "".join(masked)


def note_recipients(recipients: tuple[str, ...]) -> None:
    """Remember the request's recipients, masked, for its log line."""
    current().recipients = [mask_number(r) for r in recipients[:20]]


def note_outcome(outcome: str) -> None:
    """Say how the request ended (an error's name), for its log line."""
    current().outcome = outcome


_request_observers: list[Callable[[dict], None]] = []
_upstream_observers: list[Callable[[str, float], None]] = []


def on_request(observer: Callable[[dict], None]) -> None:
    """Call `observer` with each request's log line (metrics count them)."""
    if observer not in _request_observers:
        _request_observers.append(observer)


def on_upstream(observer: Callable[[str, float], None]) -> None:
    """Call `observer` with each upstream call's backend and seconds."""
    if observer not in _upstream_observers:
        _upstream_observers.append(observer)


def note_upstream(backend: str, status: int | None, seconds: float) -> None:
    """Count an upstream call, its status (None when no answer came) and its time."""
    for observer in _upstream_observers:
        observer(backend, seconds)
    context = current_or_none()
    if context is None:
        return
    context.upstream_calls += 1
    context.upstream_status = status
    context.upstream_seconds = (context.upstream_seconds or 0.0) + seconds


def finish(response: Response) -> Response:
    """Echo the request id and write the request's log line (an after-request hook)."""
    ctx = current()
    # Flask types `request` as the Request it stands for, not as the proxy it is; one lookup of it.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    response.headers["X-Request-ID"] = ctx.request_id
    if req.path in _UNLOGGED_PATHS:
        return response
    principal = ctx.principal
    status = response.status_code
    upstream_seconds = ctx.upstream_seconds
    line = {
        "time": _timestamp(),
        "request_id": ctx.request_id,
        "client_ip": req.remote_addr,
        "method": req.method,
        "path": _logged_path(req),
        "dialect": _DIALECTS.get(req.blueprint or "", "rest"),
        "operation": ctx.soap_operation or (req.endpoint or "").rpartition(".")[2] or None,
        "client": principal.client if principal else ctx.limit_key,
        "backend": principal.backend.name if principal else ctx.backend_name,
        "recipients": ctx.recipients,
        "upstream_status": ctx.upstream_status,
        "upstream_ms": None if upstream_seconds is None else round(upstream_seconds * 1000, 1),
        "upstream_calls": ctx.upstream_calls,
        "failover": ctx.failover,
        "status": status,
        "outcome": ctx.outcome or ("ok" if status < 400 else f"http_{status}"),
        "ms": round((time.perf_counter() - ctx.started) * 1000, 1),
    }
    log.info(json.dumps(line, separators=(",", ":")))
    for observer in _request_observers:
        observer(line)
    return response


def _logged_path(req: Request) -> str:
    """Return the request's path, a phone number in it (the inbox's phone pages) masked as recipients are."""
    number = (req.view_args or {}).get("number")
    if not isinstance(number, str) or not number or req.url_rule is None:
        return req.path
    masked = mask_number(number) or "-"
    return req.url_rule.rule.replace("<number>", masked).replace(
        "<account>", str((req.view_args or {}).get("account", ""))
    )


def _timestamp(now: float | None = None) -> str:
    """Return the time (now by default) as 2026-11-23T10:00:00.123Z (the second's part made once a second)."""
    now = time.time() if now is None else now
    second = int(now)
    return f"{_second_text(second)}.{int((now - second) * 1000):03d}Z"


@lru_cache(maxsize=1)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


_UNLOGGED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: the dialect of each blueprint's requests; every other one speaks REST
_DIALECTS = {"soap": "soap", "oauth": "oauth"}


def init_app(app: Flask, trusted_proxies: int) -> None:
    """Trust X-Forwarded-For only from the configured number of proxies; set up the request logger.

    The line itself is written by `finish`, an after-request hook create_app registers.
    """
    if trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies, x_proto=trusted_proxies)  # type: ignore[method-assign]
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    redaction.protect(logging.getLogger(), log)
