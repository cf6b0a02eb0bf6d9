"""The bridge's own state: one interface per kind (app.state.base), an implementation per engine.

Each function below returns the store of one kind for the configured engine; today SQLite files in
SMSBRIDGE_DATA_DIR (app/state/sqlite/). Rate-limit counts are flask-limiter storages, by URL scheme
(app/state/limits.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.state.base import IdempotencyStore, MobsmsState, Outbox, Record

if TYPE_CHECKING:
    from app.config import Settings


def idempotency_store(settings: Settings) -> IdempotencyStore:
    """Return the store of idempotency keys."""
    from app.state.sqlite.idempotency import SqliteIdempotency

    return SqliteIdempotency(settings.data_dir)


def mobsms_state(settings: Settings) -> MobsmsState:
    """Return the store of mobsms's read flags, aliases and resends."""
    from app.state.sqlite.mobsms import SqliteMobsmsState

    return SqliteMobsmsState(settings.data_dir)


def outbox(settings: Settings) -> Outbox:
    """Return the webhook outbox."""
    from app.state.sqlite.outbox import SqliteOutbox

    return SqliteOutbox(settings.data_dir)


__all__ = [
    "IdempotencyStore",
    "MobsmsState",
    "Outbox",
    "Record",
    "idempotency_store",
    "mobsms_state",
    "outbox",
]
