"""Rate-limit counters as `limits` storages, registered by scheme so flask-limiter's strategies use them.

- `sqlite://PATH`: a SQLite file, one exact count for every worker of a host, with no server. No fsync:
  after a crash of the machine, windows start again.
- `postgresql://USER@HOST:PORT/DB`: a table in PostgreSQL, one exact count for every worker of every host
  (app/state/postgres/limits.py, imported when a URI names it: psycopg is imported in the worker only).
  Bare `postgresql://` is SMSBRIDGE_STATE_URL's database.
- `fallback+<scheme>://...` (sqlite, postgresql, redis, rediss, redis+sentinel): that storage, and this
  worker's memory while it fails. A failing storage costs one short timeout (the Redis client's, 100 ms;
  PostgreSQL's WAIT_SECONDS, 500 ms), then is tried again about once a second; limits go on in memory
  meanwhile, never switched off.

`memory://` is `limits`' own MemoryStorage. Neither scheme here is one that `limits` 5 ships (memory,
redis, rediss, redis+unix, redis+cluster, redis+sentinel, valkey*, memcached, mongodb*, async+*); a
test fails if a release of `limits` starts shipping one.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from limits.storage import MemoryStorage, Storage, storage_from_string

from app.state.sqlite.db import BUSY_SLICE, Database, ThreadConnections

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)

#: how often a worker counting in memory tries its storage again
PROBE_SECONDS = 1.0
#: how often expired windows are deleted from the SQLite file
SWEEP_SECONDS = 60.0
#: how long a count waits in all, cooperatively, for a SQLite file another process holds locked before
#: its error goes to the fallback (memory); SQLite itself holds the event loop BUSY_SLICE at most
LOCKED_WAIT = 1.0
#: the schemes a fallback can stand in front of
LASTING_SCHEMES = ("sqlite", "postgresql", "redis", "rediss", "redis+sentinel")
#: the scheme of app/state/postgres/limits.py's storage, registered when that module is imported
POSTGRES_SCHEME = "postgresql"
FALLBACK_PREFIX = "fallback+"

T = TypeVar("T")


#: the counts file of sqlite://, in the data directory
COUNTS_FILE = "ratelimits.sqlite3"


def sqlite_uri(path: Path) -> str:
    """Return the `sqlite://` URI of the counts file at `path`."""
    return "sqlite://" + quote(str(path.resolve()))


class SqliteStorage(Storage):
    """Fixed windows counted in a SQLite file, shared by every process that opens it.

    A hit is one statement (an upsert that starts a new window when the last one ended and returns the
    count); the workers take turns at the file's write lock, held for microseconds.
    """

    STORAGE_SCHEME = ["sqlite"]  # noqa: RUF012 (limits' registry reads a list)

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS windows (
        key TEXT PRIMARY KEY,
        ends REAL NOT NULL,
        count INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS windows_by_end ON windows (ends);
    """
    _INCR = """
    INSERT INTO windows (key, ends, count) VALUES (:key, :now + :expiry, :amount)
    ON CONFLICT (key) DO UPDATE SET
        count = CASE WHEN ends <= :now THEN :amount ELSE count + :amount END,
        ends = CASE WHEN ends <= :now THEN :now + :expiry ELSE ends END
    RETURNING count, ends
    """

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        path = unquote(urlsplit(uri).path)
        if not path.startswith("/"):
            raise ValueError(f"{uri!r}: expected sqlite:///absolute/path/to/file")
        #: the wall clock windows are counted by (a test gives its own: the `clock` storage option)
        self.clock: Callable[[], float] = options.pop("clock", time.time)
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.connections = ThreadConnections(
            Path(path), self.SCHEMA, autocommit=True, durable=False, busy_slice=BUSY_SLICE
        )
        self._next_sweep = 0.0
        #: the last hit of this thread, or of this greenlet under gevent (key, count, window end): the
        #: answer's X-RateLimit-* headers ask for them right after it, and get them with no query
        self._last_hit = threading.local()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = self.clock()

        def hit(db: sqlite3.Connection) -> tuple[int, float]:
            if now >= self._next_sweep:
                self._next_sweep = now + SWEEP_SECONDS
                db.execute("DELETE FROM windows WHERE ends <= ?", (now,))
            return db.execute(
                self._INCR, {"key": key, "now": now, "expiry": expiry, "amount": amount}
            ).fetchone()

        count, ends = self._run(hit)
        self._last_hit.window = (key, count, ends)
        return count

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` waiting for a lock cooperatively (never holding the event loop), LOCKED_WAIT at most."""
        return self.connections.run(work, timeout=LOCKED_WAIT)

    def get(self, key: str) -> int:
        return self._window(key)[0]

    def get_expiry(self, key: str) -> float:
        return self._window(key)[1]

    def _window(self, key: str) -> tuple[int, float]:
        """Return the count and end of `key`'s window (0 and now when none is running)."""
        now = self.clock()
        last = getattr(self._last_hit, "window", None)
        if last is not None and last[0] == key and last[2] > now:
            return last[1], last[2]
        row = self._run(
            lambda db: db.execute(
                "SELECT count, ends FROM windows WHERE key = ? AND ends > ?", (key, now)
            ).fetchone()
        )
        return (row[0], row[1]) if row else (0, now)

    def check(self) -> bool:
        self._run(lambda db: db.execute("SELECT 1 FROM windows LIMIT 1").fetchall())
        return True

    def reset(self) -> int | None:
        self._last_hit.window = None
        return self._run(lambda db: db.execute("DELETE FROM windows").rowcount)

    def clear(self, key: str) -> None:
        self._last_hit.window = None
        self._run(lambda db: db.execute("DELETE FROM windows WHERE key = ?", (key,)))


class FallbackStorage(Storage):
    """A storage that counts in this process's memory while the storage it stands in front of fails."""

    STORAGE_SCHEME = [FALLBACK_PREFIX + scheme for scheme in LASTING_SCHEMES]  # noqa: RUF012

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        primary_uri = uri.removeprefix(FALLBACK_PREFIX)
        if primary_uri.startswith(POSTGRES_SCHEME + "://"):
            register_postgres()
        primary = storage_from_string(primary_uri, **options)
        assert isinstance(primary, Storage)  # a lasting scheme, never an async+ one
        self.primary = primary
        self.memory = MemoryStorage()
        #: the last hit of this thread, or of this greenlet under gevent: key and count
        self._last_hit = threading.local()
        #: when to try the primary storage again; None while it answers
        self._retry_at: float | None = None
        self._lock = threading.Lock()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count = self._call(lambda storage: storage.incr(key, expiry, amount))
        self._last_hit.count = (key, count)
        return count

    def get(self, key: str) -> int:
        # The answer's X-RateLimit-Remaining asks for the count its own hit just returned: with Redis,
        # one round trip fewer per request. Read once; any later read asks the storage.
        last = getattr(self._last_hit, "count", None)
        self._last_hit.count = None
        if last is not None and last[0] == key:
            return last[1]
        return self._call(lambda storage: storage.get(key))

    def get_expiry(self, key: str) -> float:
        return self._call(lambda storage: storage.get_expiry(key))

    def check(self) -> bool:
        """Say whether the primary storage answers (memory always does)."""
        try:
            return bool(self.primary.check())
        except self.primary.base_exceptions:
            return False

    def reset(self) -> int | None:
        self._last_hit.count = None
        self.memory.reset()
        return self._call(lambda storage: storage.reset())

    def clear(self, key: str) -> None:
        self._last_hit.count = None
        self.memory.clear(key)
        self._call(lambda storage: storage.clear(key))

    def _call(self, operation: Callable[[Storage], T]) -> T:
        if self._retry_at is not None and not self._take_probe():
            return operation(self.memory)
        try:
            result = operation(self.primary)
        except self.primary.base_exceptions as exc:
            self._failed(exc)
            return operation(self.memory)
        if self._retry_at is not None:
            self._retry_at = None
            log.warning("rate-limit storage answers again: counting there")
        return result

    def _take_probe(self) -> bool:
        """Say whether this call is the one that tries the primary storage again (one a second)."""
        now = time.monotonic()
        with self._lock:
            if self._retry_at is None or now < self._retry_at:
                return self._retry_at is None
            # The other calls meanwhile stay in memory: one request, not all, pays the timeout.
            self._retry_at = now + PROBE_SECONDS
            return True

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._retry_at is None
            self._retry_at = time.monotonic() + PROBE_SECONDS
        if first:
            log.warning(
                "rate-limit storage unreachable (%s): counting in this worker's memory until it answers",
                type(exc).__name__,
            )


#: the counts file and its migrations, for start-up (app/startup.py) to prepare before the workers start
DATABASE = Database(COUNTS_FILE, (SqliteStorage.SCHEMA,))

#: Redis answers within this or the limits fall back to memory: a send never waits on a counter
REDIS_TIMEOUT_SECONDS = 0.1


def register_postgres() -> None:
    """Register the `postgresql://` storage with `limits` (importing psycopg: call it in the worker)."""
    import app.state.postgres.limits  # noqa: F401 (defining the class registers its scheme)


def limiter_storage(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Return the `limits` storage URI and options SMSBRIDGE_RATELIMIT_STORAGE stands for."""
    uri = settings.ratelimit_storage
    if uri.startswith("memory://"):
        return uri, {}
    if uri.startswith("sqlite://"):
        return FALLBACK_PREFIX + sqlite_uri(settings.data_dir / COUNTS_FILE), {}
    if uri.startswith(POSTGRES_SCHEME + "://"):
        if uri == POSTGRES_SCHEME + "://":
            # Bare, as sqlite:// is: the database of the shared state (SMSBRIDGE_STATE_URL), named once.
            scheme, _, rest = settings.state_url.partition("://")
            uri = f"{POSTGRES_SCHEME}://{rest}" if scheme in ("postgresql", "postgres") else uri
        return FALLBACK_PREFIX + uri, {}
    return FALLBACK_PREFIX + uri, {
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "retry_on_timeout": False,
    }
