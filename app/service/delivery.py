"""Deliver a send: to the caller's backend, or to its failover backend when the first provably got nothing.

A failover happens only after an error that proves nothing reached the first backend (refused, DNS,
connect timeout, TLS handshake): never after a timeout or a broken answer, which may have sent the
SMS. A circuit breaker per backend (per worker process) counts such failures in a row; after
SMSBRIDGE_BREAKER_FAILURES of them the backend is skipped for SMSBRIDGE_BREAKER_COOLDOWN seconds, then
one send probes it again. Every way a send can end is judged, so the breaker never stays open or
probing by accident:

- it succeeded, or the backend answered with an error (a refused number or key, its own rate limit,
  a 5xx, an answer the bridge cannot read): the backend is reachable, so the breaker closes and the
  count starts again;
- it may have been sent but no answer came (a read timeout, the connection lost after the request was
  written): the backend accepted the connection and the request, which is what the breaker measures,
  so it closes too; the caller is told the outcome is unknown;
- nothing reached the backend (BackendUnreachable): counted; a probe that ends so re-opens the breaker
  for another cool-down;
- the caller's error found before anything was sent (a message too long, say), or an exception the
  bridge did not expect: no verdict; a probe is released, and the next send probes again.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from app.access.resolution import Principal
from app.backends import Backend
from app.errors import BackendError, BackendUnreachable, BridgeError
from app.service.context import current_or_none
from app.vocabulary import SendReceipt, SendRequest


class CircuitBreaker:
    """Skip a backend that keeps failing before anything reaches it, for a cool-down."""

    def __init__(self, failures: int, cooldown: float) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._in_a_row: dict[str, int] = {}
        self._open_until: dict[str, float] = {}
        self._probing: set[str] = set()

    def allows(self, backend: str) -> bool:
        """Say whether a send may go to `backend` now (one probe at a time once the cool-down is over)."""
        with self._lock:
            until = self._open_until.get(backend)
            if until is None:
                return True
            if time.monotonic() < until or backend in self._probing:
                return False
            self._probing.add(backend)
            return True

    def succeeded(self, backend: str) -> None:
        """Close the breaker: the backend answered."""
        with self._lock:
            self._in_a_row.pop(backend, None)
            self._open_until.pop(backend, None)
            self._probing.discard(backend)

    def failed(self, backend: str) -> None:
        """Count a failure that reached nothing; open the breaker after enough in a row."""
        with self._lock:
            self._in_a_row[backend] = self._in_a_row.get(backend, 0) + 1
            if backend in self._probing or self._in_a_row[backend] >= self.failures:
                self._open_until[backend] = time.monotonic() + self.cooldown
            self._probing.discard(backend)

    def released(self, backend: str) -> None:
        """End a probe without a verdict (the send never got as far as the backend): the next send probes."""
        with self._lock:
            self._probing.discard(backend)

    def state(self, backend: str) -> str:
        """Return "closed", "open" or "probing", for logs and health checks."""
        with self._lock:
            if backend in self._probing:
                return "probing"
            return "open" if backend in self._open_until else "closed"


def deliver(caller: Principal, send: SendRequest, breaker: CircuitBreaker) -> SendReceipt:
    """Send through the caller's backend, failing over when it provably received nothing."""
    primary = caller.backend
    if breaker.allows(primary.name):
        verdict = breaker.released
        calls_before = _upstream_calls()
        try:
            receipt = primary.send(send)
            verdict = breaker.succeeded
            return receipt
        except BackendUnreachable as error:
            verdict = breaker.failed
            if caller.failover is None:
                raise
            _note_failover(primary, error.name)
        except BackendError:
            # It answered badly, or took the request and gave no answer: reached either way.
            verdict = breaker.succeeded
            raise
        except BridgeError:
            # The caller's error: the backend's answer (a refused number) when one came, else found first.
            if _upstream_calls() > calls_before and _last_upstream_status() is not None:
                verdict = breaker.succeeded
            raise
        finally:
            verdict(primary.name)
    elif caller.failover is None:
        raise BackendUnreachable(
            f"the {primary.name} backend failed {breaker.failures} times in a row without being reached; "
            f"it is skipped for up to {breaker.cooldown:g} s; nothing was sent"
        )
    else:
        _note_failover(primary, "circuit_open")
    backend, credential = caller.failover
    # The whole send, with only the credential changed: a field added to SendRequest later is never lost.
    return backend.send(dataclasses.replace(send, credential=credential))


def _upstream_calls() -> int:
    """Return how many upstream calls this request made so far (app/fronts/request_log.py counts them)."""
    context = current_or_none()
    return context.upstream_calls if context is not None else 0


def _last_upstream_status() -> int | None:
    context = current_or_none()
    return context.upstream_status if context is not None else None


def _note_failover(primary: Backend, why: str) -> None:
    context = current_or_none()
    if context is not None:
        context.failover = {"from": primary.name, "why": why}
