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

import itertools
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from flask import Flask, Request, Response, g, has_request_context, request
from werkzeug.middleware.proxy_fix import ProxyFix

from app import redaction

log = logging.getLogger("smsbridge.request")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
    g.log_recipients = [mask_number(r) for r in recipients[:20]]


def note_outcome(outcome: str) -> None:
    """Say how the request ended (an error's name), for its log line."""
    g.log_outcome = outcome


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
    if not has_request_context():
        return
    g.upstream_calls = g.get("upstream_calls", 0) + 1
    g.upstream_status = status
    g.upstream_seconds = g.get("upstream_seconds", 0.0) + seconds


def _start() -> None:
    g.log_started = time.perf_counter()
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _REQUEST_ID.fullmatch(given) else new_request_id()


def new_request_id() -> str:
    """Return an id no other request has: 32 hex digits, a random one per process then a count.

    Not uuid4: that reads 16 random bytes from the kernel on every request, and an id only has to be
    unique, not secret.
    """
    pid = os.getpid()
    if _ids[0] != pid:
        _ids[:] = [pid, uuid.uuid4().hex[:16], itertools.count()]
    return f"{_ids[1]}{next(_ids[2]):016x}"


#: the process the ids below were made for, its random half, and its count
_ids: list = [None, "", None]


def _finish(response: Response) -> Response:
    # One lookup of the request's context objects: each attribute read through the `g` and `request`
    # proxies would look them up again (this runs on every request).
    ctx = g._get_current_object()
    # Flask types `request` as the Request it stands for, not as the proxy it is.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    response.headers["X-Request-ID"] = getattr(ctx, "request_id", "")
    if req.path in _UNLOGGED_PATHS:
        return response
    principal = getattr(ctx, "principal", None)
    status = response.status_code
    upstream_seconds = getattr(ctx, "upstream_seconds", None)
    line = {
        "time": _timestamp(),
        "request_id": getattr(ctx, "request_id", None),
        "client_ip": req.remote_addr,
        "method": req.method,
        "path": req.path,
        "dialect": _DIALECTS.get(req.blueprint or "", "rest"),
        "operation": getattr(ctx, "soap_operation", None) or (req.endpoint or "").rpartition(".")[2] or None,
        "client": principal.client if principal else getattr(ctx, "limit_key", None),
        "backend": principal.backend.name if principal else getattr(ctx, "log_backend", None),
        "recipients": getattr(ctx, "log_recipients", None),
        "upstream_status": getattr(ctx, "upstream_status", None),
        "upstream_ms": None if upstream_seconds is None else round(upstream_seconds * 1000, 1),
        "upstream_calls": getattr(ctx, "upstream_calls", 0),
        "failover": getattr(ctx, "failover", None),
        "status": status,
        "outcome": getattr(ctx, "log_outcome", None) or ("ok" if status < 400 else f"http_{status}"),
        "ms": round((time.perf_counter() - getattr(ctx, "log_started", time.perf_counter())) * 1000, 1),
    }
    log.info(json.dumps(line, separators=(",", ":")))
    for observer in _request_observers:
        observer(line)
    return response


def _timestamp() -> str:
    """Return the time now as 2026-11-23T10:00:00.123Z (the part up to the second made once a second)."""
    now = time.time()
    second = int(now)
    return f"{_second_text(second)}.{int((now - second) * 1000):03d}Z"


@lru_cache(maxsize=1)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


_UNLOGGED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: the dialect of each blueprint's requests; every other one speaks REST
_DIALECTS = {"soap": "soap", "oauth": "oauth"}


def init_app(app: Flask, trusted_proxies: int) -> None:
    """Log every request, and trust X-Forwarded-For only from the configured number of proxies."""
    if trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies, x_proto=trusted_proxies)  # type: ignore[method-assign]
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    redaction.protect(logging.getLogger(), log)
