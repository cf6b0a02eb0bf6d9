"""Per-thread SQLite connections are closed, not left to the garbage collector (Python 3.13 warns)."""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path

import pytest

from app.state.sqlite.db import ThreadConnections

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER);"


def test_a_threads_connection_is_closed_when_the_thread_ends(tmp_path: Path) -> None:
    connections = ThreadConnections(tmp_path / "t.sqlite3", SCHEMA)
    opened: list[sqlite3.Connection] = []
    worker = threading.Thread(target=lambda: opened.append(connections.get()))
    worker.start()
    worker.join()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].execute("SELECT 1")
    assert connections.get().execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_connections_are_closed_when_their_owner_is_collected(tmp_path: Path) -> None:
    connections = ThreadConnections(tmp_path / "t.sqlite3", SCHEMA)
    db = connections.get()
    connections.cycle = connections  # type: ignore[attr-defined]  # as an app's objects refer to each other
    del connections
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.execute("SELECT 1")
