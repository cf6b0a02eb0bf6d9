"""Idempotency keys: a send repeated with the same key returns the first answer and sends nothing.

The key comes in the `Idempotency-Key` header or, for legacy clients that cannot set headers, the
`idempotency_key` parameter. It is scoped to the client, kept in the state store (shared by every
worker on the host) for SMSBRIDGE_IDEMPOTENCY_TTL seconds (24 h by default), and bound to the
request's parameters: the same key with other parameters is refused (422). A repeat that arrives while
the first is still in flight waits for its answer, REPEAT_WAIT seconds at most (under the PHP SDK's
10 s timeout), then answers 409 `idempotency_in_flight`. A first attempt that provably sent nothing (a
refused key, an unreachable backend...) releases the key, so that the repeat can really try again.

A claim carries its holder's deadline: the claim time plus the send's whole time, connect + read
timeouts + 1 s; for a caller with a failover backend (SMSBRIDGE_FAILOVER_BACKEND, or the client's
failover_backend), twice connect + read, + 1 s: the first backend may take its whole deadline before it
proves unreachable, then the failover backend its own. A caller not known yet when the key is claimed
gets the longer hold. A claim still unanswered past it belongs to a holder that died (its worker was killed
mid-send): it may have sent, so a repeat is never sent again; it answers `idempotency_outcome_unknown`
with the key as the reference to check (on mobsms, the message's my_id), for the key's whole TTL.

An answer that cannot be kept (a locked database, a full disk) still reaches its caller, and a log
line says so; a repeat then finds the claim unanswered, as above.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping

from flask import Response, request

from app.errors import (
    IdempotencyInFlight,
    IdempotencyKeyReused,
    IdempotencyOutcomeUnknown,
    InvalidParameter,
    StorageUnavailable,
)
from app.service.context import current
from app.state import IdempotencyStore, Record

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
PARAMETER = "idempotency_key"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: how often a repeat looks whether the first request has finished
POLL_SECONDS = 0.05
#: the longest a repeat waits for the first request's answer: its own answer must reach a client whose
#: timeout is 10 s (the PHP SDK's) in time
REPEAT_WAIT = 8.0


def requested_key(params: Mapping[str, str] | None = None) -> str | None:
    """Return the request's idempotency key (header, else parameter), or None; refuse a malformed one."""
    key = request.headers.get(HEADER) or (params or {}).get(PARAMETER) or None
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidParameter(f"{HEADER} must be 1 to 255 visible ASCII characters")
    if key is not None:
        current().idempotency_key = key
    return key


def fingerprint(params: Mapping[str, str]) -> str:
    """Return a digest of what a send asks for (its parameters but the credential and the key)."""
    kept = sorted((k, v) for k, v in params.items() if k not in ("apikey", PARAMETER))
    return hashlib.sha256(json.dumps(kept, ensure_ascii=False).encode()).hexdigest()


class Idempotency:
    """Run sends at most once per (client, key)."""

    def __init__(
        self, store: IdempotencyStore, ttl: int, wait: float, failover_wait: float | None = None
    ) -> None:
        self.store = store
        self.ttl = ttl
        #: the longest a send takes (connect + read timeouts + 1 s): a holder's deadline
        self.wait = wait
        #: the longest a send that fails over takes (twice connect + read, + 1 s)
        self.failover_wait = wait if failover_wait is None else max(wait, failover_wait)

    def hold(self) -> float:
        """Return how long this request's send may take: longer when its caller has a failover backend.

        The caller is the request context's resolved principal; one not resolved yet may have a failover,
        and gets the longer hold.
        """
        caller = current().principal
        if caller is not None and getattr(caller, "failover", None) is None:
            return self.wait
        return self.failover_wait

    def run(self, client: str, key: str, digest: str, send: Callable[[], Response]) -> Response:
        """Return the first answer given for (client, key), calling `send` only if there is none."""
        scope = hashlib.sha256(f"{client}\0{key}".encode()).hexdigest()
        hold = self.hold()
        held = self.store.claim(scope, digest, self.ttl, hold)
        if held is None:
            return self._first(scope, send)
        if held["fingerprint"] != digest:
            raise _key_reused()
        waited_until = time.monotonic() + min(hold, REPEAT_WAIT)
        while not held["done"] and not self._holder_gone(held) and time.monotonic() < waited_until:
            time.sleep(POLL_SECONDS)
            current = self.store.idempotent(scope)
            if current is None:
                # The first request sent nothing and gave the key up: this one may send, if it claims first.
                held = self.store.claim(scope, digest, self.ttl, hold)
                if held is None:
                    return self._first(scope, send)
                if held["fingerprint"] != digest:
                    raise _key_reused()
            else:
                held = current
        if held["done"]:
            return self._replay(held)
        if self._holder_gone(held):
            raise IdempotencyOutcomeUnknown(
                f"the first request with this {HEADER} stopped before its answer was kept (the bridge "
                "was restarted, or could not store it): it may have sent the message, so it is not "
                "sent again under this key; check the message by its reference (this "
                f"{HEADER}; on mobsms, the message's my_id) before sending it with a new key"
            )
        error = IdempotencyInFlight(
            f"the first request with this {HEADER} has not finished; ask again in a moment"
        )
        error.retry_after = 1
        raise error

    def _holder_gone(self, held: Record) -> bool:
        """Say whether the claim's holder is past its deadline without an answer (it died)."""
        until = held["holder_until"]
        if until is None:  # a claim made before deadlines were kept
            until = held["created_at"] + self.wait
        return time.time() > until

    @staticmethod
    def _replay(held: Record) -> Response:
        response = Response(held["body"], status=held["status"], content_type=held["content_type"])
        for name, value in json.loads(held["headers"] or "[]"):
            response.headers[name] = value
        response.headers["Idempotent-Replayed"] = "true"
        return response

    def _first(self, scope: str, send: Callable[[], Response]) -> Response:
        context = current()
        context.nothing_sent = False
        response = send()
        try:
            if context.nothing_sent:
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
        except StorageUnavailable as error:
            # The send is over (it may have gone out): its caller gets its answer whatever the store says.
            # A repeat finds the claim unanswered and, past its deadline, answers "outcome unknown".
            log.error(
                "the idempotency record of this send could not be stored (%s); its answer (HTTP %s) "
                "was given anyway, and a repeat with its key will answer idempotency_outcome_unknown",
                error.trouble,
                response.status_code,
            )
        return response


def _key_reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"this {HEADER} was used before with other parameters: use a new key for a new message"
    )
