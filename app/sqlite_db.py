"""One SQLite connection per thread to a database file, in WAL mode: what every store here shares."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class ThreadConnections:
    """Open `path` once per thread (sqlite3 connections must not cross threads), schema applied once."""

    def __init__(self, path: Path, schema: str, *, autocommit: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._autocommit = autocommit
        self._local = threading.local()
        with self.get() as db:
            db.executescript(schema)

    def get(self) -> sqlite3.Connection:
        """Return this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None if self._autocommit else "")
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
