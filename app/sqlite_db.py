"""One SQLite connection per thread to a database file, in WAL mode: what every store here shares."""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path


def _os_thread_local() -> type:
    """Return threading.local as it is per OS thread, even once gevent has monkey-patched it.

    Under gevent each request is a greenlet, and a patched threading.local is per greenlet: a
    connection (and a file descriptor) per client connection. Greenlets of one thread can share one
    sqlite3 connection: each use here runs to its end without yielding (no I/O but SQLite's own).
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("threading", "local")
    return threading.local


class ThreadConnections:
    """Open `path` once per thread (sqlite3 connections must not cross threads), schema applied once."""

    def __init__(self, path: Path, schema: str, *, autocommit: bool = False, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._autocommit = autocommit
        # NORMAL: a commit survives a crash of the process, not always of the machine. OFF (`durable`
        # false): never an fsync, for what may be lost with the machine, such as rate-limit counts.
        self._synchronous = "NORMAL" if durable else "OFF"
        self._local = _os_thread_local()()
        with self.get() as db:
            db.executescript(schema)

    def get(self) -> sqlite3.Connection:
        """Return this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None if self._autocommit else "")
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
