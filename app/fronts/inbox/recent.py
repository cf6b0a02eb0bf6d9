"""What the operator console shows of recent traffic: a ring of request log lines and rate-limit use.

Both are kept in this worker's memory (gunicorn runs one worker per core): the console shows the
requests and limits its own worker saw, which is said on the page. The lines are the request log's
(app/fronts/request_log.py): no key, token, secret or message text, recipients masked.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from flask import current_app, request

#: how many request log lines each worker keeps
RING_SIZE = 200
#: how many clients' rate-limit use each worker keeps (the most recently seen)
CLIENTS_KEPT = 500

_FIELDS = ("time", "method", "path", "client", "backend", "recipients", "status", "outcome", "ms")
_lock = threading.Lock()
_ring: deque[dict[str, Any]] = deque(maxlen=RING_SIZE)
_limits: dict[str, dict[str, Any]] = {}


def observe(line: dict) -> None:
    """Keep a request's log line and its client's rate-limit use (a request_log observer)."""
    if request.blueprint == "inbox":
        return  # the inbox's own pages and polls would push everything else out
    kept = {name: line.get(name) for name in _FIELDS}
    limits = current_app.extensions.get("smsbridge.limiter")
    counted = limits.limiter.current_limit if limits is not None else None
    with _lock:
        _ring.append(kept)
        if counted is not None and line.get("client"):
            reset, remaining = counted.window
            client = str(line["client"])
            _limits.pop(client, None)
            _limits[client] = {
                "client": client,
                "limit": str(counted.limit),
                "remaining": remaining,
                "reset": int(reset) + 1,
                "seen": time.time(),
            }
            while len(_limits) > CLIENTS_KEPT:
                _limits.pop(next(iter(_limits)))


def recent_requests() -> list[dict[str, Any]]:
    """Return this worker's recent request log lines, newest first."""
    with _lock:
        return list(reversed(_ring))


def limit_use() -> list[dict[str, Any]]:
    """Return each client's rate-limit use as this worker last counted it, most recently seen first."""
    now = time.time()
    with _lock:
        rows = [dict(row) for row in reversed(_limits.values())]
    for row in rows:
        row["window_over"] = row["reset"] <= now
    return rows
