"""What a running bridge holds: its settings, backends and access rules, reachable from any request."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading

from flask import Flask, current_app

from app import state
from app.access.resolution import Access
from app.access.tokens import TokenSigner
from app.backends import Backend, build_backend
from app.config import Settings
from app.errors import StorageUnavailable
from app.service.delivery import CircuitBreaker
from app.service.idempotency import Idempotency
from app.state.sqlite.db import disk_trouble
from app.webhooks.delivery import Deliverer

EXTENSION = "smsbridge"

log = logging.getLogger(__name__)


class Runtime:
    """The bridge's state for one Flask app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        self.backend = self.backend_for(settings.backend)
        self.tokens = TokenSigner.from_settings(settings.token_secrets, settings.data_dir, settings.token_ttl)
        self.access = Access(settings, self.backend_for, self.tokens)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown)
        self.events = state.outbox(settings)
        self.deliverer = Deliverer(
            self.events,
            timeout=settings.webhook_timeout,
            retry_window=settings.webhook_retry_hours * 3600,
            allow_private=settings.webhook_allow_private,
            settings=settings,
            targets=self.access.webhook_for,
        )
        if settings.webhook_url or self.access.any_webhook() or self._events_left():
            # Events left by a previous run, or replayed from the command line, go on being delivered.
            self.deliverer.start()
        self.idempotency = Idempotency(
            state.idempotency_store(settings),
            settings.idempotency_ttl,
            wait=settings.connect_timeout + settings.read_timeout + 1,
            # A send that fails over: the first backend's whole deadline, then the failover's.
            failover_wait=2 * (settings.connect_timeout + settings.read_timeout) + 1,
        )

    def _events_left(self) -> bool:
        """Say whether events wait in the store; True when it cannot be read now (a full disk, a lock)."""
        try:
            return bool(self.events.counts())
        except (sqlite3.Error, StorageUnavailable) as error:
            log.error("webhook events cannot be counted at start (%s): the deliverer starts anyway", error)
            return True

    def state_check(self) -> str:
        """Return "ok" when the state stores answer, else what fails (for /readyz; no path, no data)."""
        # A full disk may fail only writes, and the reads below still answer: probed (cached) on its own.
        trouble = disk_trouble(self.settings.data_dir)
        try:
            self.idempotency.store.idempotent("readyz")
            self.events.counts()
        except (sqlite3.Error, StorageUnavailable) as exc:
            return (
                f"failing: {exc.trouble if isinstance(exc, StorageUnavailable) else type(exc).__name__}"
                if trouble is None
                else f"failing: the data disk is {trouble}"
            )
        return "ok" if trouble is None else f"failing: the data disk is {trouble}"

    def backend_for(self, name: str) -> Backend:
        """Return the backend called `name`, made once (the default one, and any a client names)."""
        backend = self._backends.get(name)
        if backend is None:
            with self._lock:
                backend = self._backends.get(name)
                if backend is None:
                    backend = build_backend(dataclasses.replace(self.settings, backend=name))
                    self._backends[name] = backend
        return backend

    def emit(self, client: str, event_type: str, data: dict, *, event_id: str | None = None) -> str | None:
        """Store an event for the client's webhook and wake the deliverer; None when it has none."""
        if self.access.webhook_for(client) is None:
            return None
        event_id = self.events.add(client, event_type, data, event_id=event_id)
        self.deliverer.start()
        self.deliverer.wake()
        return event_id

    @property
    def backends(self) -> list[Backend]:
        """Return every backend made so far."""
        return list(self._backends.values())

    def backends_in_use(self) -> list[Backend]:
        """Return every backend the configuration names: the default, the failover, and each client's.

        Not only those made so far (a backend is made at its first call): whether the inbox is served, and
        whether the console may open without a password, must not depend on which clients called first.
        """
        names = {self.settings.backend, self.settings.failover_backend}
        if self.access.managed:
            for entry in self.access.entries():
                names.update((entry.backend, entry.failover_backend))
        return [self.backend_for(name) for name in sorted(n for n in names if n)]


def init_app(app: Flask, settings: Settings) -> Runtime:
    """Attach the runtime to `app`."""
    state = Runtime(settings)
    app.extensions[EXTENSION] = state
    return state


def runtime() -> Runtime:
    """Return the runtime of the app handling the current request."""
    return current_app.extensions[EXTENSION]
