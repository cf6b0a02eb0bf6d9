"""The webhook outbox in SQLite (webhooks.sqlite3 in SMSBRIDGE_DATA_DIR): one host's events.

Each claim is a single UPDATE ... RETURNING, so however many workers share the host each attempt has one
deliverer; the rules every outbox keeps are app.state.base.Outbox's.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.state.base import (
    FIRST_RETRY_SECONDS,
    JITTER,
    LEASE_SECONDS,
    LONGEST_RETRY_SECONDS,
    SWEEP_SECONDS,
    Outbox,
    Record,
)
from app.state.sqlite.db import BUSY_SLICE, Database, ThreadConnections

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    url TEXT NOT NULL,
    format TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (status, next_attempt_at);
"""
#: events no longer carry their target: it is resolved at delivery. The copies already stored are
#: blanked, then their columns dropped; secure_delete overwrites the freed bytes rather than leave
#: receivers' secrets in the file's free pages. Delivered events get an index to purge them by age.
WITHOUT_TARGETS = """
PRAGMA secure_delete = ON;
UPDATE webhook_events SET url = '', secret = '';
ALTER TABLE webhook_events DROP COLUMN url;
ALTER TABLE webhook_events DROP COLUMN secret;
ALTER TABLE webhook_events DROP COLUMN format;
CREATE INDEX IF NOT EXISTS webhook_events_delivered ON webhook_events (delivered_at)
    WHERE status = 'delivered';
"""
#: the web inbox's message page asks for a message's events every few seconds: an index on the guid their
#: data names (the very expression ABOUT_SQL filters on, else SQLite cannot use it), then their age
BY_GUID = """
CREATE INDEX IF NOT EXISTS webhook_events_guid ON webhook_events (json_extract(data, '$.guid'), created_at);
"""
#: the file and its migrations, oldest first: append, never edit (its user_version counts those applied)
DATABASE = Database("webhooks.sqlite3", (SCHEMA, WITHOUT_TARGETS, BY_GUID))

#: the statements whose cost must not grow with the events delivered (tests read their query plans)
COUNT_SQL = "SELECT status, COUNT(*) FROM webhook_events WHERE status IN ('pending', 'dead') GROUP BY status"
PURGE_SQL = "DELETE FROM webhook_events WHERE status = 'delivered' AND delivered_at < ?"
CLAIM_SQL = (
    "UPDATE webhook_events SET lease_until = ?, attempts = attempts + 1 WHERE id = ("
    " SELECT id FROM webhook_events WHERE status = 'pending' AND next_attempt_at <= ?"
    " AND lease_until <= ? AND client NOT IN (SELECT value FROM json_each(?))"
    " ORDER BY next_attempt_at LIMIT 1) RETURNING *"
)
ABOUT_SQL = "SELECT * FROM webhook_events WHERE json_extract(data, '$.guid') = ? ORDER BY created_at LIMIT ?"
#: a dead event's columns but its data (the console lists them; it never shows a message)
DEAD_SQL = (
    "SELECT id, client, type, created_at, next_attempt_at, lease_until, attempts, status, last_error,"
    " delivered_at FROM webhook_events WHERE status = 'dead' ORDER BY created_at LIMIT ?"
)


_DELIVERED = (
    "UPDATE webhook_events SET status = 'delivered', delivered_at = ?, lease_until = 0, last_error = ''"
    " WHERE id = ?"
)
_DELIVERED_ON_ATTEMPT = _DELIVERED + " AND attempts = ? AND status = 'pending'"


class SqliteOutbox(Outbox):
    """The events waiting, delivered and dead, in webhooks.sqlite3."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._connections = ThreadConnections(
            data_dir / DATABASE.file_name, DATABASE.migrations, autocommit=True, busy_slice=BUSY_SLICE
        )
        self._next_sweep = 0.0

    def add(
        self,
        client: str,
        event_type: str,
        data: dict,
        *,
        event_id: str | None = None,
    ) -> str:
        """Store an event for delivery now and return its id; an id already stored is not stored again.

        No target is stored: where the event goes, and with what secret, is looked up when it is delivered.
        """
        event_id = event_id or str(uuid.uuid4())
        now = time.time()
        row = (event_id, client, event_type, json.dumps(data), now, now)
        self._run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO webhook_events (id, client, type, data, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
        )
        return event_id

    def claim(self, now: float | None = None, *, skip_clients: frozenset[str] = frozenset()) -> Record | None:
        """Take the next due event for one attempt (no other deliverer can take it meanwhile).

        Events of `skip_clients` (whose targets have no free slot) are left for later.
        """
        now = time.time() if now is None else now
        args = (now + LEASE_SECONDS, now, now, json.dumps(sorted(skip_clients)))
        return self._run(lambda db: db.execute(CLAIM_SQL, args).fetchone())

    def release(self, event_id: str) -> None:
        """Give back a claim that made no attempt (its target had no free slot)."""
        self._run(
            lambda db: db.execute(
                "UPDATE webhook_events SET lease_until = 0, attempts = attempts - 1 WHERE id = ?",
                (event_id,),
            )
        )

    def delivered(self, event_id: str, now: float | None = None, *, attempt: int | None = None) -> None:
        """Record a delivery; with `attempt`, only if the event is still on that attempt and pending.

        The fence: an outcome recorded late (the store was down past the lease) must not end a newer
        attempt another deliverer has claimed since.
        """
        when = time.time() if now is None else now
        args: tuple[object, ...]
        if attempt is None:
            sql, args = _DELIVERED, (when, event_id)
        else:
            sql, args = _DELIVERED_ON_ATTEMPT, (when, event_id, attempt)
        self._run(lambda db: db.execute(sql, args))

    def failed(self, event: Record, error: str, retry_window: float) -> None:
        """Record a failed attempt: retry later with backoff and jitter, or give up after the window."""
        now = time.time()
        wait = min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (event["attempts"] - 1))
        wait *= JITTER.uniform(0.5, 1.5)
        dead = now + wait - event["created_at"] > retry_window
        args = ("dead" if dead else "pending", now + wait, error[:300], event["id"], event["attempts"])
        # Fenced by the attempt: a late outcome never ends a newer attempt, nor undoes a delivery.
        self._run(
            lambda db: db.execute(
                "UPDATE webhook_events SET status = ?, next_attempt_at = ?, lease_until = 0, last_error = ?"
                " WHERE id = ? AND attempts = ? AND status = 'pending'",
                args,
            )
        )

    def dead(self, limit: int | None = None) -> list[Record]:
        """Return the events that exhausted their retries, oldest first (`limit` at most), without data."""
        args = (-1 if limit is None else limit,)  # SQLite: a negative LIMIT is none
        return self._run(lambda db: db.execute(DEAD_SQL, args).fetchall())

    def replay(self, event_id: str) -> bool:
        """Deliver a dead event again (same id), with a fresh retry window."""
        now = time.time()
        return bool(
            self._run(
                lambda db: (
                    db.execute(
                        "UPDATE webhook_events SET status = 'pending', next_attempt_at = ?, created_at = ?,"
                        " attempts = 0, lease_until = 0 WHERE id = ? AND status = 'dead'",
                        (now, now, event_id),
                    ).rowcount
                )
            )
        )

    def purge_dead(self) -> int:
        """Delete every dead event (the operator's decision: they are never purged on their own)."""
        return self._run(lambda db: db.execute("DELETE FROM webhook_events WHERE status = 'dead'").rowcount)

    def sweep(self, retention: float, now: float | None = None) -> int:
        """Purge events delivered over `retention` seconds ago, at most once per SWEEP_SECONDS."""
        now = time.time() if now is None else now
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_SECONDS
        return self._run(lambda db: db.execute(PURGE_SQL, (now - retention,)).rowcount)

    def counts(self) -> dict[str, int]:
        """Return how many events are pending and dead (those there are; delivered ones are not counted).

        Read on the (status, next_attempt_at) index: its cost grows with the events waiting, not with
        those delivered.
        """
        return {status: n for status, n in self._run(lambda db: db.execute(COUNT_SQL).fetchall())}

    def close(self) -> None:
        """Close this thread's database connection."""
        self._connections.close()

    def about(self, guid: str, limit: int = 50) -> list[Record]:
        """Return up to `limit` events whose data names message `guid`, oldest first (webhook_events_guid)."""
        return self._run(lambda db: db.execute(ABOUT_SQL, (guid, limit)).fetchall())

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Return `work(db)`, waiting for a lock cooperatively; raise StorageUnavailable when it cannot be."""
        return self._connections.run_or_unavailable(
            work, store="smsbridge's webhook event store", undone="nothing was stored or changed"
        )
