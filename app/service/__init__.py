"""The service the fronts call: the one door from a dialect into the bridge.

A front (app/fronts/) imports from here, from app.vocabulary, app.errors and app.config, and nothing else
of the bridge's (an import-linter contract says so): the runtime (settings, backends, access rules, the
stores, the webhook deliverer), sending with failover, idempotency keys, and the few words of the layers
below that a front must name (a resolved caller, a backend's interface, a limiter's storage).
"""

from __future__ import annotations

import sqlite3

from app.access.resolution import Principal, hash_key
from app.access.tokens import is_token
from app.backends import Backend, backend_class, webhook_source_names
from app.errors import StorageUnavailable
from app.service import phone_events
from app.service.bridge import Runtime, runtime
from app.service.context import current, current_or_none
from app.service.delivery import deliver
from app.service.idempotency import PARAMETER as IDEMPOTENCY_PARAMETER
from app.service.idempotency import fingerprint, requested_key
from app.service.inbox import Inbox
from app.state.limits import limiter_storage
from app.state.sqlite.db import trouble


def storage_unavailable(error: sqlite3.OperationalError) -> StorageUnavailable:
    """Return the retryable StorageUnavailable for a database left locked, or a data disk that is full."""
    what = trouble(error, runtime().settings.data_dir)
    return StorageUnavailable(
        f"smsbridge cannot use its data now: {what}; nothing was sent or changed; try again in a moment",
        trouble=what,
    )


__all__ = [
    "IDEMPOTENCY_PARAMETER",
    "Backend",
    "Inbox",
    "Principal",
    "Runtime",
    "backend_class",
    "current",
    "current_or_none",
    "deliver",
    "fingerprint",
    "hash_key",
    "is_token",
    "limiter_storage",
    "phone_events",
    "requested_key",
    "runtime",
    "storage_unavailable",
    "webhook_source_names",
]
