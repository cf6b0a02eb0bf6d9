"""The bridge's own state, for what an upstream has no notion of: read flags, aliases, resend attempts.

SQLite in SMSBRIDGE_DATA_DIR, so every worker process on the host shares it. Rows are keyed by an
account name derived from the client's credential (a hash, never the key) and the message's id.

Every use waits for a lock cooperatively (app.sqlite_db.ThreadConnections.run), at most BUSY_TIMEOUT
seconds in all; a database still locked then, or a full disk, is raised as StorageUnavailable, which
the fronts answer in the caller's dialect (503, retry, nothing was sent).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.sqlite_db import BUSY_SLICE, Database, ThreadConnections

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS received_flags (
    account TEXT NOT NULL,
    guid TEXT NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    alias TEXT,
    PRIMARY KEY (account, guid)
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    content_type TEXT,
    body BLOB,
    headers TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS resends (
    account TEXT NOT NULL,
    guid TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    new_guid TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account, guid, attempt)
);
"""
#: expired idempotency keys are swept by age, with an index, not by a full scan per keyed send
IDEMPOTENCY_BY_AGE = "CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at);"
#: a claim says until when its holder may still be sending (a claim past it whose answer never came is
#: a holder that died: its outcome is unknown); a resend is claimed before it calls the upstream
HOLDERS = """
ALTER TABLE idempotency ADD COLUMN holder_until REAL;
CREATE TABLE IF NOT EXISTS resend_claims (
    account TEXT NOT NULL,
    guid TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (account, guid)
);
"""
#: the file and its migrations, oldest first: append, never edit (its user_version counts those applied)
DATABASE = Database("state.sqlite3", (SCHEMA, IDEMPOTENCY_BY_AGE, HOLDERS))
#: how often a process sweeps expired idempotency keys (a key past its TTL is reclaimable at once)
SWEEP_SECONDS = 60


class StateStore:
    """Small per-account facts kept by the bridge itself."""

    def __init__(self, data_dir: Path) -> None:
        self._connections = ThreadConnections(
            data_dir / DATABASE.file_name, DATABASE.migrations, busy_slice=BUSY_SLICE
        )
        self._next_sweep = 0.0

    def received_flags(self, account: str) -> dict[str, tuple[bool, str | None]]:
        """Return {guid: (read, alias)} for an account's received messages that have any."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT guid, read, alias FROM received_flags WHERE account = ?", (account,)
            ).fetchall()
        )
        return {guid: (bool(read), alias) for guid, read, alias in rows}

    def mark_read(self, account: str, guid: str) -> None:
        """Remember that a received message was read."""
        self._run(
            lambda db: db.execute(
                "INSERT INTO received_flags (account, guid, read) VALUES (?, ?, 1)"
                " ON CONFLICT (account, guid) DO UPDATE SET read = 1",
                (account, guid),
            )
        )

    def set_alias(self, account: str, guid: str, alias: str | None) -> None:
        """Remember (or, with None, forget) a received message's alias."""
        self._run(
            lambda db: db.execute(
                "INSERT INTO received_flags (account, guid, alias) VALUES (?, ?, ?)"
                " ON CONFLICT (account, guid) DO UPDATE SET alias = excluded.alias",
                (account, guid, alias),
            )
        )

    def resends(self, account: str, guid: str) -> list[str]:
        """Return the ids of the copies sent for each resend of `guid`, first attempt first."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT new_guid FROM resends WHERE account = ? AND guid = ? ORDER BY attempt",
                (account, guid),
            ).fetchall()
        )
        return [new_guid for (new_guid,) in rows]

    def claim_resend(self, account: str, guid: str, hold: float) -> bool:
        """Claim the next resend of `guid` for `hold` seconds; False when another holds it still."""
        now = time.time()
        return bool(
            self._run(
                lambda db: (
                    db.execute(
                        "INSERT INTO resend_claims (account, guid, until) VALUES (?, ?, ?)"
                        " ON CONFLICT (account, guid) DO UPDATE SET until = excluded.until"
                        " WHERE resend_claims.until < ?",
                        (account, guid, now + hold, now),
                    ).rowcount
                )
            )
        )

    def release_resend(self, account: str, guid: str) -> None:
        """Give up a resend claim (its resend is recorded, or provably sent nothing)."""
        self._run(
            lambda db: db.execute("DELETE FROM resend_claims WHERE account = ? AND guid = ?", (account, guid))
        )

    def add_resend(self, account: str, guid: str, new_guid: str) -> int:
        """Record a resend of `guid` as `new_guid` and end its claim; return its attempt number."""

        def add(db: sqlite3.Connection) -> int:
            (attempt,) = db.execute(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM resends WHERE account = ? AND guid = ?",
                (account, guid),
            ).fetchone()
            db.execute(
                "INSERT INTO resends (account, guid, attempt, new_guid, created_at) VALUES (?, ?, ?, ?, ?)",
                (account, guid, attempt, new_guid, int(time.time())),
            )
            db.execute("DELETE FROM resend_claims WHERE account = ? AND guid = ?", (account, guid))
            return attempt

        return self._run(add)

    def claim(self, scope: str, fingerprint: str, ttl: int, hold: float) -> sqlite3.Row | None:
        """Claim `scope` for a new request, or return the row of the request that holds it.

        `hold` is how long the new holder may take (its whole send): a repeat that finds the claim
        unanswered after that knows the holder died.
        """
        now = time.time()
        created = int(now)

        def claim(db: sqlite3.Connection) -> sqlite3.Row | None:
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

    def idempotent(self, scope: str) -> sqlite3.Row | None:
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
        self._connections.close()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._connections.run_or_unavailable(
            work, store="smsbridge's state store", undone="nothing was sent or changed"
        )
