"""Idempotency keys: a send repeated with the same key returns the first answer and sends nothing.

The key comes in the `Idempotency-Key` header or, for legacy clients that cannot set headers, the
`idempotency_key` parameter. It is scoped to the client, kept in the state store (shared by every
worker on the host) for SMSBRIDGE_IDEMPOTENCY_TTL seconds (24 h by default), and bound to the
request's parameters: the same key with other parameters is refused (422). A repeat that arrives while
the first is still in flight waits for its answer. A first attempt that provably sent nothing (a
refused key, an unreachable backend...) releases the key, so that the repeat can really try again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping

from flask import Response, g, request

from app.errors import IdempotencyInFlight, IdempotencyKeyReused, InvalidParameter
from app.store import StateStore

HEADER = "Idempotency-Key"
PARAMETER = "idempotency_key"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: how often a repeat looks whether the first request has finished
POLL_SECONDS = 0.05


def requested_key(params: Mapping[str, str] | None = None) -> str | None:
    """Return the request's idempotency key (header, else parameter), or None; refuse a malformed one."""
    key = request.headers.get(HEADER) or (params or {}).get(PARAMETER) or None
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidParameter(f"{HEADER} must be 1 to 255 visible ASCII characters")
    if key is not None:
        g.idempotency_key = key
    return key


def fingerprint(params: Mapping[str, str]) -> str:
    """Return a digest of what a send asks for (its parameters but the credential and the key)."""
    kept = sorted((k, v) for k, v in params.items() if k not in ("apikey", PARAMETER))
    return hashlib.sha256(json.dumps(kept, ensure_ascii=False).encode()).hexdigest()


class Idempotency:
    """Run sends at most once per (client, key)."""

    def __init__(self, store: StateStore, ttl: int, wait: float) -> None:
        self.store = store
        self.ttl = ttl
        self.wait = wait

    def run(self, client: str, key: str, digest: str, send: Callable[[], Response]) -> Response:
        """Return the first answer given for (client, key), calling `send` only if there is none."""
        scope = hashlib.sha256(f"{client}\0{key}".encode()).hexdigest()
        held = self.store.claim(scope, digest, self.ttl)
        if held is None:
            return self._first(scope, send)
        if held["fingerprint"] != digest:
            raise IdempotencyKeyReused(
                f"this {HEADER} was used before with other parameters: use a new key for a new message"
            )
        deadline = time.monotonic() + self.wait
        while not held["done"] and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            held = self.store.idempotent(scope) or held
        if not held["done"]:
            error = IdempotencyInFlight(
                f"the first request with this {HEADER} has not finished; ask again in a moment"
            )
            error.retry_after = 1
            raise error
        response = Response(held["body"], status=held["status"], content_type=held["content_type"])
        for name, value in json.loads(held["headers"] or "[]"):
            response.headers[name] = value
        response.headers["Idempotent-Replayed"] = "true"
        return response

    def _first(self, scope: str, send: Callable[[], Response]) -> Response:
        g.nothing_sent = False
        response = send()
        if g.get("nothing_sent"):
            self.store.release(scope)
        else:
            kept = [(k, v) for k, v in response.headers.items() if k in ("Retry-After",)]
            self.store.complete(
                scope,
                response.status_code,
                response.content_type or "",
                response.get_data(),
                json.dumps(kept),
            )
        return response
