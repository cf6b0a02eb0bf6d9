"""PostgreSQL, the store several hosts share: one pool per process, one schema made by numbered migrations.

The pool. psycopg 3's ConnectionPool, made on a process's first use of the database, never at import: a
pool's connections and threads do not survive gunicorn's fork, so each worker makes its own (a store
object made in the master finds, by the process id, that the pool is not its process's, and makes one).
psycopg cooperates with gevent once `select` is patched (3.1.14 and later), and the pool's threads are
then greenlets. All the stores of one database URL share its pool (`shared`).

Bounds. Every unit of work ends within OPERATION_SECONDS, whatever the server does:
- a connection is waited for at most that long (the pool's `timeout`); a new connection gives up
  after CONNECT_TIMEOUT (libpq's least: 2 s);
- statement_timeout is the server's own bound, and a frozen server (SIGSTOP, a stalled VM, a network
  path that drops packets) never applies it, nor answers a cancel request: the client bounds its own
  wait. A watchdog timer (a thread, or a greenlet under gevent) shuts the connection's socket down when
  the unit of work outlives its deadline; libpq then sees the connection closed, the work raises, and
  the broken connection is given back to the pool, which discards it. The pool's check of an idle
  connection (a connection left from before a restart is broken) is bounded the same way.
Any failure is StorageUnavailable ("... cannot be used now: postgresql unreachable; nothing was sent or
changed; try again"), never a psycopg error; the next unit of work takes a fresh connection, so the
stores recover by themselves when the server is back.

Migrations. The schema is an ordered list of SQL scripts (append, never edit); the table
smsbridge_migrations lists those applied. They run in one transaction that first takes
pg_advisory_xact_lock(MIGRATION_LOCK): hosts starting together take turns, and the second finds the work
done. `migrate(url)` runs them (app.startup.prepare, before the fork); a process that uses a database
nobody migrated (a command-line tool, a test) migrates it at its first use.

Housekeeping (expiry sweeps, purges) runs in a transaction that first takes pg_try_advisory_xact_lock:
when another host is sweeping, this one skips its turn (`run_housekeeping`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from app.errors import StorageUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

Connection = psycopg.Connection[DictRow]

#: seconds libpq waits to open a connection (its least is 2)
CONNECT_TIMEOUT = 2
#: seconds a unit of work may take in all, waiting for a connection included (plus at most one check
#: and MIN_WORK_SECONDS past it: about 5 s): the answer stays well inside the 10 s the PHP SDK waits
OPERATION_SECONDS = 3.5
#: seconds the pool's check of an idle connection may take (within OPERATION_SECONDS but for the last)
CHECK_SECONDS = 1.0
#: seconds the work itself may take however long the wait for its connection was
MIN_WORK_SECONDS = 1.0
#: the server's own bound on a statement, for a server that is slow but alive
STATEMENT_TIMEOUT_MS = 4000
#: how long the pool retries a connection it lost, before the next request that needs one starts afresh
RECONNECT_SECONDS = OPERATION_SECONDS
#: connections per process: under gevent a worker's requests take turns on them
POOL_MIN = 1
POOL_MAX = 10
#: the advisory lock keys (any two 64-bit numbers other applications sharing the database do not use)
MIGRATION_LOCK = 0x736D_7362_0001
HOUSEKEEPING_LOCK = 0x736D_7362_0002
#: how long migrating waits for another host's migration before giving up (start-up, not a request)
MIGRATION_TIMEOUT_MS = 60_000

TIMED_OUT = "postgresql timed out"
UNREACHABLE = "postgresql unreachable"
NEWER_SCHEMA = "the postgresql schema is a newer smsbridge's"
BUSY = f"postgresql busy (all {POOL_MAX} connections of this process in use)"

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS smsbridge_migrations (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class UnusableDatabase(RuntimeError):
    """The database was migrated by a newer smsbridge than this one."""


class TimedOut(Exception):
    """A unit of work outlived its deadline (its connection was cut)."""


def _cut(connection: psycopg.Connection[Any], fired: list[bool]) -> None:
    """Shut a connection's socket down under the work waiting on it: libpq then finds it closed.

    shutdown(), not close(): the descriptor stays libpq's (closing it could let another connection
    reuse its number under it); a duplicate is what this function closes.
    """
    fired.append(True)
    with contextlib.suppress(Exception):
        fd = connection.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as dup:
            dup.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def watchdog(connection: psycopg.Connection[Any], seconds: float) -> Iterator[list[bool]]:
    """Cut `connection` if the block outlives `seconds`; the list yielded is non-empty if it was."""
    fired: list[bool] = []
    # Looked up at each call: under gevent, threading is patched in the worker and the timer is a greenlet.
    timer = threading.Timer(max(seconds, 0.001), _cut, (connection, fired))
    timer.daemon = True
    timer.start()
    try:
        yield fired
    except Exception:
        if fired:
            raise TimedOut from None
        raise
    finally:
        timer.cancel()


def _check(connection: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection taken from it (one round trip), bounded by CHECK_SECONDS.

    Kept for every connection handed out, though it costs a round trip: a statement written to a server
    that froze is run when the server thaws, and a claim made then would stand although its caller was
    told nothing was stored. The check, cut by its watchdog, keeps the statement from being written.
    """
    with watchdog(connection, CHECK_SECONDS):
        ConnectionPool.check_connection(connection)


def _apply(connection: psycopg.Connection[Any], migrations: Sequence[str]) -> int:
    """Apply the migrations the database lacks, under the migration lock; return how many were applied."""
    with connection.transaction():
        connection.execute(f"SET LOCAL lock_timeout = {MIGRATION_TIMEOUT_MS}")
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute(MIGRATIONS_TABLE)
        row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM smsbridge_migrations").fetchone()
        version = int(row[0]) if row else 0
        if version > len(migrations):
            raise UnusableDatabase(
                f"the PostgreSQL database has schema version {version}, and this smsbridge knows versions "
                f"up to {len(migrations)}: it was migrated by a newer smsbridge. Run that version"
            )
        for number in range(version + 1, len(migrations) + 1):
            connection.execute(migrations[number - 1])
            connection.execute("INSERT INTO smsbridge_migrations (version) VALUES (%s)", (number,))
        return len(migrations) - version


def migrate(url: str, migrations: Sequence[str] | None = None) -> int:
    """Bring the database at `url` to the current schema, once whoever else does it at the same time.

    Return how many migrations this call applied (0 when another process had done them). Raises
    psycopg.Error (or TimedOut) when the server cannot be reached or does not answer; UnusableDatabase
    for a schema newer than this smsbridge's.
    """
    if migrations is None:
        from app.state.postgres import MIGRATIONS

        migrations = MIGRATIONS
    with (
        psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as connection,
        watchdog(connection, MIGRATION_TIMEOUT_MS / 1000 + OPERATION_SECONDS),
    ):
        return _apply(connection, migrations)


class PostgresDatabase:
    """One database URL's pool in this process, made at first use, and the bounded units of work on it."""

    def __init__(self, url: str, migrations: Sequence[str] | None = None) -> None:
        self.url = url
        self._migrations = migrations
        self._pool: ConnectionPool[Connection] | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def pool(self, deadline: float | None = None) -> ConnectionPool[Connection]:
        """Return this process's pool, made (and the schema checked) at its first use.

        While one caller makes it (the server may be down: that takes seconds), the others wait until
        their `deadline` (monotonic) at most, then are told the state is unavailable.
        """
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        wait = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._lock.acquire(timeout=wait):
            note = _note("smsbridge's shared state", UNREACHABLE, "nothing was sent or changed")
            raise StorageUnavailable(note, trouble=UNREACHABLE)
        try:
            if self._pool is None or self._pid != os.getpid():
                # A pool made before a fork is the parent's: its threads are not here. Left alone.
                self._pool = self._make_pool()
                self._pid = os.getpid()
            return self._pool
        finally:
            self._lock.release()

    def _make_pool(self) -> ConnectionPool[Connection]:
        self._migrate_bounded()
        pool: ConnectionPool[Connection] = ConnectionPool(
            self.url,
            connection_class=psycopg.Connection[DictRow],
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
                f" -c idle_in_transaction_session_timeout={STATEMENT_TIMEOUT_MS * 2}",
                "application_name": "smsbridge",
            },
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=OPERATION_SECONDS,
            # psycopg_pool retries a lost connection with a backoff that doubles without end (1, 2, 4... s):
            # after an outage of a minute, requests would wait for its next try about as long again. Given
            # up after OPERATION_SECONDS (tries 1 s and 2 s apart), a new try starts with the next request
            # that needs a connection: within that request's wait.
            reconnect_timeout=RECONNECT_SECONDS,
            check=_check,
            name="smsbridge-state",
            open=False,
        )
        pool.open(wait=False)
        return pool

    def _migrate_bounded(self) -> None:
        """Migrate at first use, within the bound of one unit of work (start-up migrated already, mostly)."""
        from app.state.postgres import MIGRATIONS

        migrations = self._migrations if self._migrations is not None else MIGRATIONS
        try:
            with (
                psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as connection,
                watchdog(connection, OPERATION_SECONDS),
            ):
                _apply(connection, migrations)
        except TimedOut:
            note = _note("smsbridge's shared state", TIMED_OUT, "nothing was sent or changed")
            raise StorageUnavailable(note, trouble=TIMED_OUT) from None
        except UnusableDatabase as error:
            # A newer smsbridge migrated the database after this one started (a rolling upgrade): this
            # worker cannot use it; said here, and as a retryable 503 rather than a 500 per request.
            log.error("smsbridge: %s", error)
            raise StorageUnavailable(
                _note("smsbridge's shared state", NEWER_SCHEMA, "nothing was sent or changed"),
                trouble=NEWER_SCHEMA,
            ) from error
        except psycopg.Error as error:
            what = trouble(error)
            raise StorageUnavailable(
                _note("smsbridge's shared state", what, "nothing was sent or changed"), trouble=what
            ) from error

    def run(
        self,
        work: Callable[[Connection], T],
        *,
        store: str,
        undone: str,
        atomic: bool = False,
    ) -> T:
        """Return `work(connection)` (in one transaction if `atomic`) within OPERATION_SECONDS.

        Any failure (no connection in time, a connection lost or cut, a server error) is raised as
        StorageUnavailable, whose note names the `store`, what went wrong and what was therefore `undone`.
        """
        deadline = time.monotonic() + OPERATION_SECONDS
        try:
            pool = self.pool(deadline)
            connection = pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
            try:
                with watchdog(connection, max(deadline - time.monotonic(), MIN_WORK_SECONDS)):
                    if atomic:
                        with connection.transaction():
                            return work(connection)
                    return work(connection)
            finally:
                # A connection lost or cut is closed by libpq's error; the pool discards it.
                pool.putconn(connection)
        except TimedOut:
            raise StorageUnavailable(_note(store, TIMED_OUT, undone), trouble=TIMED_OUT) from None
        except PoolTimeout as error:
            # No connection in time: the server refuses, or it froze (the check of an idle one was cut);
            # or every connection of the pool is in use (the server may well answer): not the same fault.
            stats = self._pool.get_stats() if self._pool is not None else {}
            full = stats.get("pool_size", 0) >= POOL_MAX and not stats.get("pool_available", 0)
            what = BUSY if full else UNREACHABLE
            raise StorageUnavailable(_note(store, what, undone), trouble=what) from error
        except psycopg.Error as error:
            what = trouble(error)
            raise StorageUnavailable(_note(store, what, undone), trouble=what) from error

    def housekeeping(
        self, work: Callable[[Connection], int], *, store: str, undone: str = "nothing was removed"
    ) -> int:
        """Run `work` unless another process runs housekeeping now (then return 0): one host at a time."""

        def guarded(connection: Connection) -> int:
            row = connection.execute(
                "SELECT pg_try_advisory_xact_lock(%s) AS mine", (HOUSEKEEPING_LOCK,)
            ).fetchone()
            return work(connection) if row and row["mine"] else 0

        return self.run(guarded, store=store, undone=undone, atomic=True)

    def close(self) -> None:
        """Close this process's pool (its connections and threads); the next use makes another."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=1.0)


def _note(store: str, what: str, undone: str) -> str:
    return f"{store} cannot be used now: {what}; {undone}; try again in a moment"


def trouble(error: psycopg.Error) -> str:
    """Say in a few words what went wrong (no URL, no data): for answers and log lines."""
    if isinstance(error, psycopg.OperationalError) and not isinstance(error, psycopg.errors.QueryCanceled):
        return UNREACHABLE
    if isinstance(error, psycopg.errors.QueryCanceled):
        return TIMED_OUT
    return f"postgresql failed ({type(error).__name__})"


_shared: dict[str, PostgresDatabase] = {}
_shared_lock = threading.Lock()


def shared(url: str) -> PostgresDatabase:
    """Return the PostgresDatabase of `url` that every store of this process uses."""
    with _shared_lock:
        database = _shared.get(url)
        if database is None:
            database = _shared[url] = PostgresDatabase(url)
        return database


def close_all() -> None:
    """Close every pool this process made (tests; a process that is done with its stores)."""
    with _shared_lock:
        databases = list(_shared.values())
        _shared.clear()
    for database in databases:
        database.close()
