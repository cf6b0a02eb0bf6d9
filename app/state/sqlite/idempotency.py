"""Idempotency keys in SQLite (state.sqlite3): the rules are app.state.base.IdempotencyStore's."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.state.base import SWEEP_SECONDS, IdempotencyStore, Record
from app.state.sqlite.state_file import StateFile

T = TypeVar("T")


class SqliteIdempotency(IdempotencyStore):
    """Idempotency store in state.sqlite3."""

    def __init__(self, data_dir: Path) -> None:
        self._file = StateFile(data_dir, "smsbridge's idempotency store", "nothing was sent or changed")
        self._next_sweep = 0.0

    def claim(self, scope: str, fingerprint: str, ttl: int, hold: float) -> Record | None:
        """Claim `scope` for a new request, or return the row of the request that holds it.

        `hold` is how long the new holder may take (its whole send): a repeat that finds the claim
        unanswered after that knows the holder died.
        """
        now = time.time()
        created = int(now)

        def claim(db: sqlite3.Connection) -> Record | None:
            if created >= self._next_sweep:
                # Once a minute, with the index: deleting on every keyed send scanned the whole table,
                # and a send slowed as the keys held grew (3.8 ms to 6.9 ms with 10,000 held).
                self._next_sweep = created + SWEEP_SECONDS
                db.execute("DELETE FROM idempotency WHERE created_at < ?", (created - ttl,))
            # A row past its TTL that no sweep has removed yet is claimed over, as if it were gone.
            claimed = db.execute(
                "INSERT INTO idempotency (scope, fingerprint, created_at, holder_until) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (scope) DO UPDATE SET fingerprint = excluded.fingerprint, done = 0,"
                " status = NULL, content_type = NULL, body = NULL, headers = NULL,"
                " created_at = excluded.created_at, holder_until = excluded.holder_until"
                " WHERE idempotency.created_at < ?",
                (scope, fingerprint, created, now + hold, created - ttl),
            ).rowcount
            if claimed:
                return None
            return db.execute("SELECT * FROM idempotency WHERE scope = ?", (scope,)).fetchone()

        return self._run(claim)

    def idempotent(self, scope: str) -> Record | None:
        """Return what is kept for an idempotency scope."""
        return self._run(
            lambda db: db.execute("SELECT * FROM idempotency WHERE scope = ?", (scope,)).fetchone()
        )

    def complete(self, scope: str, status: int, content_type: str, body: bytes, headers: str) -> None:
        """Keep the answer of the request that claimed `scope`, for its repeats."""
        self._run(
            lambda db: db.execute(
                "UPDATE idempotency SET done = 1, status = ?, content_type = ?, body = ?, headers = ?"
                " WHERE scope = ?",
                (status, content_type, body, headers, scope),
            )
        )

    def release(self, scope: str) -> None:
        """Give up a claim whose request sent nothing, so that a repeat may try again."""
        self._run(lambda db: db.execute("DELETE FROM idempotency WHERE scope = ? AND done = 0", (scope,)))

    def close(self) -> None:
        """Close this thread's database connection."""
        self._file.close()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._file.run(work)
