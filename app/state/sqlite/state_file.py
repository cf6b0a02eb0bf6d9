"""state.sqlite3 in SMSBRIDGE_DATA_DIR: idempotency keys and mobsms's flags and resends, one file per host.

Every use waits for a lock cooperatively (app.state.sqlite.db.ThreadConnections.run), at most BUSY_TIMEOUT
seconds in all; a database still locked then, or a full disk, is raised as StorageUnavailable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.state.sqlite.db import BUSY_SLICE, Database, ThreadConnections

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


class StateFile:
    """This thread's connection to state.sqlite3, shared by the stores kept in it."""

    def __init__(self, data_dir: Path, name: str, undone: str) -> None:
        self.name = name
        self.undone = undone
        self._connections = ThreadConnections(
            data_dir / DATABASE.file_name, DATABASE.migrations, busy_slice=BUSY_SLICE
        )

    def close(self) -> None:
        """Close this thread's database connection."""
        self._connections.close()

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._connections.run_or_unavailable(work, store=self.name, undone=self.undone)
