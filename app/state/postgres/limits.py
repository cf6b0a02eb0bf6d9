"""Rate-limit counts in PostgreSQL (`postgresql://...`): one exact count for every worker of every host.

A `limits` storage, registered by scheme when this module is imported (app/state/limits.py imports it for
a `postgresql://` URI, in the worker: psycopg picks its gevent-friendly wait at import). Fixed windows, as
the sqlite:// storage counts them:

- a hit is one statement, `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`, that starts a new window when
  the last one ended (by the server's clock, the same for every host) and returns the count: exact
  however many processes and hosts hit the same key at once (the row lock orders them);
- the table is UNLOGGED: no WAL, nothing replicated; after a crash of the server, windows start again
  (as the SQLite file's, which is never synced);
- expired windows are deleted at most once a minute per process, in a transaction that first takes
  pg_try_advisory_xact_lock: while another process sweeps, this one skips its turn;
- the table is made at a process's first use, under the migration advisory lock (CREATE ... IF NOT
  EXISTS, so hosts starting together take turns). It is not one of the state's numbered migrations: the
  counts may live in a database of their own. Counts are disposable: a new shape is a new table name.

Bounds: a hit waits at most WAIT_SECONDS for a connection and its statement; a frozen server is cut by
app.state.postgres.db's watchdog. Any failure raises a psycopg error (or TimedOut), `base_exceptions`:
behind `fallback+postgresql://` (what SMSBRIDGE_RATELIMIT_STORAGE=postgresql://... becomes), the worker
counts in memory meanwhile and tries PostgreSQL again about once a second.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from limits.storage import Storage
from psycopg_pool import ConnectionPool

from app.state.postgres.db import CONNECT_TIMEOUT, MIGRATION_LOCK, TimedOut, watchdog

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

#: the longest a count waits for PostgreSQL (a connection, then its statement) before the fallback counts
WAIT_SECONDS = 0.5
#: how often, at most, a process deletes expired windows
SWEEP_SECONDS = 60.0
#: the advisory lock of the sweep (distinct from the state's housekeeping: they never wait on each other)
SWEEP_LOCK = 0x736D_7362_0003
#: connections per process: a hit holds one for one statement
POOL_MAX = 4

SCHEMA = """
CREATE UNLOGGED TABLE IF NOT EXISTS ratelimit_windows (
    key text PRIMARY KEY,
    ends double precision NOT NULL,
    count bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS ratelimit_windows_by_end ON ratelimit_windows (ends);
"""
#: the server's clock, one reading per statement: every host's windows end by the same clock
_NOW = "extract(epoch FROM statement_timestamp())::double precision"
_INCR = f"""
INSERT INTO ratelimit_windows AS w (key, ends, count) VALUES (%(key)s, {_NOW} + %(expiry)s, %(amount)s)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN w.ends <= {_NOW} THEN excluded.count ELSE w.count + excluded.count END,
    ends = CASE WHEN w.ends <= {_NOW} THEN excluded.ends ELSE w.ends END
RETURNING count, ends, {_NOW} AS now
"""  # noqa: S608 (fixed SQL)
_WINDOW = f"SELECT count, ends, {_NOW} AS now FROM ratelimit_windows WHERE key = %s AND ends > {_NOW}"  # noqa: S608
_SWEEP = f"DELETE FROM ratelimit_windows WHERE ends <= {_NOW}"  # noqa: S608


class PostgresStorage(Storage):
    """Fixed windows counted in a PostgreSQL table, shared by every process and host using the database."""

    STORAGE_SCHEME = ["postgresql"]  # noqa: RUF012 (limits' registry reads a list)

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.url = uri
        self._pool: ConnectionPool[Connection] | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        #: the last hit of this thread, or of this greenlet under gevent (key, count, window end): the
        #: answer's X-RateLimit-* headers ask for them right after it, and get them with no query
        self._last_hit = threading.local()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (psycopg.Error, TimedOut)

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        def hit(connection: Connection) -> tuple[int, float]:
            self._sweep(connection)
            row = connection.execute(_INCR, {"key": key, "expiry": expiry, "amount": amount}).fetchone()
            assert row is not None  # an upsert ... RETURNING writes one row
            count, ends, now = row
            # A window as this host's clock reads it, for the headers' reset time.
            return int(count), time.time() + (ends - now)

        count, ends = self._run(hit)
        self._last_hit.window = (key, count, ends)
        return count

    def get(self, key: str) -> int:
        return self._window(key)[0]

    def get_expiry(self, key: str) -> float:
        return self._window(key)[1]

    def _window(self, key: str) -> tuple[int, float]:
        """Return the count and end of `key`'s window (0 and now when none is running)."""
        last = getattr(self._last_hit, "window", None)
        if last is not None and last[0] == key and last[2] > time.time():
            return last[1], last[2]
        row = self._run(lambda connection: connection.execute(_WINDOW, (key,)).fetchone())
        return (int(row[0]), time.time() + (row[1] - row[2])) if row else (0, time.time())

    def check(self) -> bool:
        self._run(lambda connection: connection.execute("SELECT 1").fetchone())
        return True

    def reset(self) -> int | None:
        self._last_hit.window = None
        return self._run(lambda connection: connection.execute("DELETE FROM ratelimit_windows").rowcount)

    def clear(self, key: str) -> None:
        self._last_hit.window = None
        self._run(
            lambda connection: connection.execute("DELETE FROM ratelimit_windows WHERE key = %s", (key,))
        )

    def close(self) -> None:
        """Close this process's pool (the next use makes another)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=1.0)

    # --- helpers -------------------------------------------------------------------------------------

    def _sweep(self, connection: Connection) -> None:
        """Delete expired windows, at most once per SWEEP_SECONDS here, and only if no one else is."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        with connection.transaction():
            row = connection.execute("SELECT pg_try_advisory_xact_lock(%s)", (SWEEP_LOCK,)).fetchone()
            if row and row[0]:
                connection.execute(_SWEEP)

    def _run(self, work: Callable[[Connection], T]) -> T:
        """Return `work(connection)` within WAIT_SECONDS; a failure raises one of `base_exceptions`."""
        deadline = time.monotonic() + WAIT_SECONDS
        pool = self._pool_of_this_process()
        connection = pool.getconn(timeout=WAIT_SECONDS)
        try:
            with watchdog(connection, max(deadline - time.monotonic(), 0.05)):
                return work(connection)
        finally:
            pool.putconn(connection)  # a connection lost or cut is discarded by the pool

    def _pool_of_this_process(self) -> ConnectionPool[Connection]:
        """Return this process's pool, made (with the table) at its first use; one made before a fork is
        the parent's, and left alone."""
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._make_table()
                pool = ConnectionPool(
                    self.url,
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": CONNECT_TIMEOUT,
                        "options": f"-c statement_timeout={int(WAIT_SECONDS * 1000)}",
                        "application_name": "smsbridge-limits",
                    },
                    min_size=1,
                    max_size=POOL_MAX,
                    timeout=WAIT_SECONDS,
                    # Not psycopg_pool's backoff without end (see app.state.postgres.db): a new try starts
                    # with the next probe once these have failed for this long.
                    reconnect_timeout=4 * WAIT_SECONDS,
                    name="smsbridge-limits",
                    open=False,
                )
                pool.open(wait=False)
                self._pool, self._pid = pool, os.getpid()
            return self._pool

    def _make_table(self) -> None:
        connect = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        with connect as connection, watchdog(connection, WAIT_SECONDS * 4), connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            connection.execute(SCHEMA)
