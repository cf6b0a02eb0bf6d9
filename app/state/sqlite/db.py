"""SQLite files in the data directory: prepared once (WAL, versioned schema), then one connection per thread.

A database's schema is an ordered list of migrations (SQL scripts); its `PRAGMA user_version` says how
many have been applied. Migrations are only ever appended: the first is each store's original schema,
written with CREATE ... IF NOT EXISTS so that it also applies to files made before versions existed.
The migrations a file lacks run in one transaction with the new version number, so a migration must
not hold BEGIN or COMMIT itself.

Preparing a file (creating it readable by its owner only, switching it to WAL, applying the migrations
it lacks) is done once, before gunicorn forks (`app.startup.prepare`), under an exclusive lock on a file
in the data directory, so that any number of processes preparing at once take turns. Workers then only
open connections. A store opened on a file nobody prepared (a command-line tool, a test) prepares it
itself, under the same lock.

Waiting for a lock. SQLite waits for another connection's lock inside its own C code, which under
gevent holds the whole worker: every other request (even `/healthz`) stood still for as long as the
lock was held. A store made with `busy_slice` lets SQLite wait that long at most (a few ms), and runs
its units of work through `ThreadConnections.run`, which on "database is locked" rolls back, gives the
event loop back (time.sleep, gevent's once patched) and tries again until BUSY_TIMEOUT is over, then
lets the error go: the caller answers "database is locked, nothing was sent" rather than hang.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.errors import StorageUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

#: the lock file, in the data directory, that processes preparing it take turns on
LOCK_FILE = "prepare.lock"
#: how long preparing waits for a lock another process holds on a database before giving up
PREPARE_TIMEOUT = 30.0
#: how long a worker's unit of work waits in all for another connection's write to finish
BUSY_TIMEOUT = 5.0
#: how long SQLite itself may hold the thread (the worker's event loop, under gevent) waiting for a lock,
#: for stores that wait through `ThreadConnections.run`
BUSY_SLICE = 0.01
#: the longest pause between two tries of a unit of work that found the database locked
_MOST_PAUSE = 0.1


#: the least free space the data directory must have for the bridge to call itself ready
MIN_FREE_BYTES = 1 << 20
#: the size of the file the readiness probe writes (and removes) in the data directory
PROBE_BYTES = 64 << 10
#: how long a disk probe's verdict is reused: /readyz may be asked often, the probe writes
PROBE_EVERY = 2.0
_probed: dict[Path, tuple[float, str | None]] = {}


def disk_trouble(data_dir: Path) -> str | None:
    """Say what keeps the data directory from taking writes (full, read-only...), or None if it can.

    Free space under MIN_FREE_BYTES, or a PROBE_BYTES file that cannot be allocated, is trouble. The
    verdict is kept for PROBE_EVERY seconds.
    """
    now = time.monotonic()
    kept = _probed.get(data_dir)
    if kept is not None and now - kept[0] < PROBE_EVERY:
        return kept[1]
    verdict: str | None = None
    probe = data_dir / f".write-probe-{os.getpid()}"
    try:
        found = os.statvfs(data_dir)
        free = found.f_bavail * found.f_frsize
        if free < MIN_FREE_BYTES:
            verdict = f"full ({free // 1024} KiB free)"
        else:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, PROBE_BYTES)
                except OSError as error:
                    if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    os.write(fd, bytes(PROBE_BYTES))  # a file system without fallocate: write zeros
            finally:
                os.close(fd)
                os.unlink(probe)
    except OSError as error:
        verdict = f"not writable ({os.strerror(error.errno or 0)})"
    _probed[data_dir] = (now, verdict)
    return verdict


class UnusableDatabase(RuntimeError):
    """A database in the data directory cannot be used by this version of smsbridge."""


def is_busy(error: sqlite3.Error) -> bool:
    """Say whether `error` is SQLite's "database is locked" (another connection holds the lock)."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_full(error: sqlite3.Error) -> bool:
    """Say whether `error` is SQLite's "database or disk is full"."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def trouble(error: sqlite3.Error, data_dir: Path | None = None) -> str:
    """Say in a few words what went wrong with a database (no path, no data): for answers and logs.

    On a full disk SQLite says "disk I/O error" as often as "database or disk is full": with
    `data_dir`, its disk is probed to tell.
    """
    if is_busy(error):
        return f"its database is locked by another process (waited {BUSY_TIMEOUT:g} s)"
    disk = disk_trouble(data_dir) if data_dir is not None else None
    if disk is not None:
        return f"its data disk is {disk}"
    if is_full(error):
        return "its data disk is full"
    return f"its database failed ({type(error).__name__}: {error})"


@dataclass(frozen=True)
class Database:
    """A SQLite file in the data directory and the migrations that make its schema, oldest first."""

    file_name: str
    migrations: tuple[str, ...]


@contextmanager
def preparing(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's start-up lock (created with the directory if need be) until the end."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def prepare(path: Path, migrations: Sequence[str], *, timeout: float = PREPARE_TIMEOUT) -> None:
    """Create `path` if need be, switch it to WAL and apply the migrations it lacks; hold `preparing`.

    A file that exists but cannot even be read because the data disk is full is left as it is, with a
    log line: the bridge starts, and what needs the file answers "nothing was sent" until there is
    space (a file that needs a migration is migrated at the next start with space).
    """
    try:
        _prepare(path, migrations, timeout)
    except sqlite3.OperationalError as error:
        disk = disk_trouble(path.parent) if path.exists() else None
        if disk is None:
            raise
        log.error(
            "smsbridge: %s could not be checked: the data disk is %s (%s); starting anyway, and what "
            "needs it answers 503 (nothing sent) until there is space",
            path,
            disk,
            error,
        )


def _prepare(path: Path, migrations: Sequence[str], timeout: float) -> None:
    if not path.exists():
        # Made here rather than by sqlite3 so that it is never readable by others; SQLite gives its
        # -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    with closing(sqlite3.connect(path, timeout=timeout, isolation_level=None)) as db:
        # Switched only when it is not WAL yet: the switch needs the file to itself.
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        if mode != "wal":
            _switch_to_wal(db, path, timeout)
        version = _version(db, path, migrations)
        if version == len(migrations):
            return
        # One transaction for every migration missing and the new version: all or nothing.
        pending = ";\n".join(migrations[version:])  # an empty statement (;;) is no harm
        script = f"BEGIN IMMEDIATE;\n{pending}\nPRAGMA user_version = {len(migrations)};\nCOMMIT;"
        try:
            db.executescript(script)
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise


def _switch_to_wal(db: sqlite3.Connection, path: Path, timeout: float) -> None:
    # SQLite answers "database is locked" at once, without waiting its busy timeout, when another
    # connection holds a lock while this one changes the journal mode: wait here instead.
    deadline = time.monotonic() + timeout
    while True:
        try:
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            if time.monotonic() >= deadline:
                raise UnusableDatabase(
                    f"{path} stayed locked by another process for {timeout:g} s while smsbridge "
                    "was preparing it: stop what holds it (another smsbridge? a backup?) and start again"
                ) from error
            time.sleep(0.05)
            continue
        if mode != "wal":
            raise UnusableDatabase(
                f"{path}: SQLite cannot use WAL mode here ({mode}); use a local file system"
            )
        return


def _version(db: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> int:
    """Return the number of migrations `db` has had; refuse a database newer than `migrations`."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(migrations):
        raise UnusableDatabase(
            f"{path} has schema version {version}, and this smsbridge knows versions up to "
            f"{len(migrations)}: it was made by a newer smsbridge. Run that version, or give this one "
            "another SMSBRIDGE_DATA_DIR"
        )
    return version


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


def _close_all(opened: set[sqlite3.Connection]) -> None:
    """Close every connection still in `opened`."""
    for db in list(opened):
        db.close()
    opened.clear()


class _ThreadsConnection:
    """Hold a thread's connection in its thread-local slot, and close it when the thread ends."""

    __slots__ = ("db", "opened")

    def __init__(self, db: sqlite3.Connection, opened: set[sqlite3.Connection]) -> None:
        self.db = db
        self.opened = opened

    def __del__(self) -> None:
        self.db.close()
        self.opened.discard(self.db)


class ThreadConnections:
    """Open `path` once per thread (sqlite3 connections must not cross threads), preparing it if no one has.

    `migrations` is the ordered list of the database's migrations (a single string is one migration).
    """

    def __init__(
        self,
        path: Path,
        migrations: str | Sequence[str],
        *,
        autocommit: bool = False,
        durable: bool = True,
        busy_slice: float | None = None,
    ) -> None:
        self.path = path
        # SQLite's own wait for a lock: all of BUSY_TIMEOUT for stores that use get() as they please, a
        # slice for those that go through run(), which waits the rest cooperatively.
        self._busy_timeout = BUSY_TIMEOUT if busy_slice is None else busy_slice
        self.migrations = (migrations,) if isinstance(migrations, str) else tuple(migrations)
        self._autocommit = autocommit
        # NORMAL: a commit survives a crash of the process, not always of the machine. OFF (`durable`
        # false): never an fsync, for what may be lost with the machine, such as rate-limit counts.
        self._synchronous = "NORMAL" if durable else "OFF"
        self._local = _os_thread_local()()
        # Python 3.13 warns (ResourceWarning) about each connection the garbage collector closes: close
        # each when its thread ends (_ThreadsConnection), and those left when this object goes. A
        # finalizer, not __del__: the collector runs it before the connections' own finalizers.
        self._opened: set[sqlite3.Connection] = set()
        weakref.finalize(self, _close_all, self._opened)
        try:
            prepared = self._is_prepared()
        except sqlite3.OperationalError:
            self.close()
            if not path.exists() or disk_trouble(path.parent) is None:
                raise
            # Unreadable for now (the disk is full): each use fails and says so until there is space.
            prepared = True
        except BaseException:
            self.close()
            raise
        if not prepared:
            self.close()
            with preparing(path.parent):
                prepare(path, self.migrations)

    def _is_prepared(self) -> bool:
        """Say whether the file is in WAL mode with every migration applied (reads only, takes no lock)."""
        if not self.path.exists():
            return False
        db = self.get()
        version = _version(db, self.path, self.migrations)
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        return version == len(self.migrations) and mode == "wal"

    def get(self) -> sqlite3.Connection:
        """Return this thread's connection."""
        held = getattr(self._local, "held", None)
        if held is None:
            # The journal mode is the file's, set once when it was prepared: setting it here again
            # would need the file to itself, and fail while a sibling writes.
            db = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                # DEFERRED: SQLite's own default for a plain BEGIN, which sqlite3 issues for "".
                isolation_level=None if self._autocommit else "DEFERRED",
                # Only its own thread uses it; whichever thread ends it or collects this object closes it.
                check_same_thread=False,
            )
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            self._opened.add(db)
            held = self._local.held = _ThreadsConnection(db, self._opened)
        return held.db

    def run(self, work: Callable[[sqlite3.Connection], T], *, timeout: float = BUSY_TIMEOUT) -> T:
        """Return `work(db)` run in one transaction, tried again while the database is locked.

        Between two tries the transaction is rolled back and the thread sleeps (under gevent, other
        greenlets run, and may use this thread's connection: it is idle then). After `timeout` seconds
        the "database is locked" error is raised; any other error at once.
        """
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            db = self.get()
            try:
                with db:  # commits, or rolls back on an error
                    return work(db)
            except sqlite3.OperationalError as error:
                if db.in_transaction:
                    db.rollback()
                if not is_busy(error) or time.monotonic() + pause >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _MOST_PAUSE)

    def run_or_unavailable(self, work: Callable[[sqlite3.Connection], T], *, store: str, undone: str) -> T:
        """Return `run(work)`; a database still locked after the wait, or a full disk, is StorageUnavailable.

        The answer's note says which `store` failed, what went wrong (no path, no data) and what was
        therefore `undone` ("nothing was sent or changed"), so that the caller knows to try again.
        """
        try:
            return self.run(work)
        except sqlite3.OperationalError as error:
            what = trouble(error, self.path.parent)
            note = f"{store} cannot be used now: {what}; {undone}; try again in a moment"
            raise StorageUnavailable(note, trouble=what) from error

    def close(self) -> None:
        """Close this thread's connection."""
        self._local.held = None  # its __del__ closes the connection
