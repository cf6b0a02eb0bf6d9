"""Rate limits per client, checked in `before_request` for REST and SOAP alike.

A client is a managed client's name, else a fingerprint of the key it sends (for SOAP, read from the
envelope), else its IP address. Each has the default limit (SMSBRIDGE_RATE_LIMIT) or its own from the
clients file, one count across every endpoint, in fixed windows. Counts live in
SMSBRIDGE_RATELIMIT_STORAGE:

- sqlite:// (the default): a file in SMSBRIDGE_DATA_DIR, one exact count for every worker of the host;
- memory://: the worker's own memory, exact only with one worker (Settings refuses more);
- redis://: one count for several hosts. When Redis cannot be reached, limits go on in each worker's
  memory (a client gets at most its limit per worker), and Redis is tried again once a second: a dead
  Redis costs one short timeout, not seconds on every request, and never switches limits off.

Redis counting is the `limits` library's, the engine of flask-limiter, with the same URIs.
flask-limiter's own per-request check was about 80 us of CPU here, most of it resolving scopes,
exemptions and decorators this bridge does not have: a sixth of the CPU a whole send may take. What
the bridge needs of it, one limit per client and a fallback to memory, is this module.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from flask import Flask, g, request
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.access import hash_key
from app.config import Settings
from app.errors import BridgeError, RateLimited
from app.fronts import soap
from app.fronts.rest import optional_credential
from app.metrics import RATE_LIMITED
from app.runtime import runtime
from app.sqlite_db import ThreadConnections
from app.tokens import is_token

log = logging.getLogger(__name__)

#: how long a request may wait for Redis before its limit is counted in memory instead
REDIS_TIMEOUT_SECONDS = 0.1
#: how often a worker counting in memory looks whether its storage answers again
PROBE_SECONDS = 1.0
#: how often expired windows are dropped from memory
SWEEP_SECONDS = 60.0
#: the first part of every count's name in the storage
KEY_PREFIX = "smsbridge"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_SOAP_APIKEY = re.compile(rb"<(?:[\w.-]+:)?apikey(?:\s[^>]*)?>([^<]{1,512})</", re.IGNORECASE)


class ClientLimits:
    """Count requests per client in the configured storage, or in memory while it cannot be reached."""

    def __init__(self, storage_uri: str, data_dir: Path) -> None:
        self._in_memory: _Counter = _MemoryWindows()
        self.storage: Storage | None = None
        self._counted: _Counter
        if storage_uri.startswith("memory://"):
            self._counted = self._in_memory
        elif storage_uri.startswith("sqlite://"):
            self._counted = _SqliteWindows(data_dir / "ratelimits.sqlite3")
        else:
            options = {}
            if storage_uri.startswith("redis"):
                options = {
                    "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
                    "socket_timeout": REDIS_TIMEOUT_SECONDS,
                    "retry_on_timeout": False,
                }
            self.storage = storage_from_string(storage_uri, **options)
            self._counted = _StorageWindows(self.storage)
        #: when to look at the failed storage again; None while it answers
        self._next_probe: float | None = None
        self._lock = threading.Lock()

    def hit(self, client: str, limits: tuple[RateLimitItem, ...]) -> RateLimitItem | None:
        """Count one request of `client`; return the limit it goes over, or None when it may go on."""
        counter = self._counter()
        try:
            return _first_exceeded(counter, client, limits)
        except Exception as exc:  # a storage client raises what it likes when its server is gone
            if counter is self._in_memory:
                raise
            self._storage_failed(exc)
            return _first_exceeded(self._in_memory, client, limits)

    def seconds_until_reset(self, client: str, limit: RateLimitItem) -> int:
        """Return the whole seconds until `client`'s window of `limit` ends (at least 1)."""
        try:
            reset = self._counter().reset_time(limit, client)
        except Exception:
            return 1
        return max(1, int(reset - time.time()) + 1)

    def storage_answers(self) -> bool:
        """Tell whether the storage answers (memory always does)."""
        try:
            if isinstance(self._counted, _SqliteWindows):
                return self._counted.answers()
            return self.storage is None or bool(self.storage.check())
        except Exception:
            return False

    def _counter(self) -> _Counter:
        if self._next_probe is None:
            return self._counted
        with self._lock:
            probe = self._next_probe is not None and time.monotonic() >= self._next_probe
            if probe:
                self._next_probe = time.monotonic() + PROBE_SECONDS
        if probe and self.storage_answers():
            with self._lock:
                self._next_probe = None
            log.warning("rate-limit storage answers again: counting there")
            return self._counted
        return self._in_memory if self._next_probe is not None else self._counted

    def _storage_failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._next_probe is None
            self._next_probe = time.monotonic() + PROBE_SECONDS
        if first:
            log.warning(
                "rate-limit storage unreachable (%s): counting in this worker's memory until it answers",
                type(exc).__name__,
            )


class _Counter(Protocol):
    def hit(self, limit: RateLimitItem, client: str) -> bool: ...

    def reset_time(self, limit: RateLimitItem, client: str) -> float: ...


class _StorageWindows:
    """Fixed windows counted in a `limits` storage (Redis), shared by every worker that uses it."""

    def __init__(self, storage: Storage) -> None:
        self._strategy = FixedWindowRateLimiter(storage)

    def hit(self, limit: RateLimitItem, client: str) -> bool:
        return self._strategy.hit(limit, KEY_PREFIX, client)

    def reset_time(self, limit: RateLimitItem, client: str) -> float:
        return self._strategy.get_window_stats(limit, KEY_PREFIX, client).reset_time


class _SqliteWindows:
    """Fixed windows counted in a SQLite file: exact for every worker of one host, with no server.

    One statement per request (an upsert that starts a new window when the last one ended, and returns
    the count), about 30 us; the workers take turns at the file's write lock, held for microseconds.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS windows (
        key TEXT PRIMARY KEY,
        ends REAL NOT NULL,
        count INTEGER NOT NULL
    ) WITHOUT ROWID;
    """
    HIT = """
    INSERT INTO windows (key, ends, count) VALUES (:key, :now + :expiry, 1)
    ON CONFLICT (key) DO UPDATE SET
        count = CASE WHEN ends <= :now THEN 1 ELSE count + 1 END,
        ends = CASE WHEN ends <= :now THEN :now + :expiry ELSE ends END
    RETURNING count
    """

    def __init__(self, path: Path) -> None:
        # Counts need no fsync: after a crash of the machine, windows start again.
        self._connections = ThreadConnections(path, self.SCHEMA, autocommit=True, durable=False)
        self._next_sweep = 0.0

    def hit(self, limit: RateLimitItem, client: str) -> bool:
        now = time.time()
        db = self._connections.get()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            db.execute("DELETE FROM windows WHERE ends <= ?", (now,))
        key = limit.key_for(KEY_PREFIX, client)
        (count,) = db.execute(self.HIT, {"key": key, "now": now, "expiry": limit.get_expiry()}).fetchone()
        return count <= limit.amount

    def reset_time(self, limit: RateLimitItem, client: str) -> float:
        row = (
            self._connections.get()
            .execute("SELECT ends FROM windows WHERE key = ?", (limit.key_for(KEY_PREFIX, client),))
            .fetchone()
        )
        return row[0] if row else time.time()

    def answers(self) -> bool:
        self._connections.get().execute("SELECT 1 FROM windows LIMIT 1").fetchall()
        return True


class _MemoryWindows:
    """Fixed windows counted in this process's memory: what memory:// means.

    Not `limits`' MemoryStorage: that one starts a timer thread (a greenlet under gevent) every 10 ms
    to expire counts, about 4% of a send's CPU here. A window here starts with its first request, as
    there, and expired windows are dropped once a minute.
    """

    def __init__(self) -> None:
        #: per limit and client: when the window ends, and the requests counted in it
        self._windows: dict[str, list] = {}
        self._next_sweep = 0.0
        self._lock = threading.Lock()

    def hit(self, limit: RateLimitItem, client: str) -> bool:
        key = limit.key_for(KEY_PREFIX, client)
        now = time.time()
        with self._lock:
            if now >= self._next_sweep:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
                self._next_sweep = now + SWEEP_SECONDS
            window = self._windows.get(key)
            if window is None or window[0] <= now:
                window = self._windows[key] = [now + limit.get_expiry(), 0]
            if window[1] >= limit.amount:
                return False
            window[1] += 1
            return True

    def reset_time(self, limit: RateLimitItem, client: str) -> float:
        window = self._windows.get(limit.key_for(KEY_PREFIX, client))
        return window[0] if window else time.time()


def _first_exceeded(
    counter: _Counter, client: str, limits: tuple[RateLimitItem, ...]
) -> RateLimitItem | None:
    for limit in limits:
        if not counter.hit(limit, client):
            return limit
    return None


@lru_cache(maxsize=256)
def parsed(limit: str) -> tuple[RateLimitItem, ...]:
    """Return the limits a string such as "10/minute;500/day" stands for (parsed once per string)."""
    return tuple(parse_many(limit))


def client_key() -> str:
    """Return the name this request is counted under (computed once per request)."""
    if "limit_key" not in g:
        g.limit_key = _identify()
    return g.limit_key


def _identify() -> str:
    access = runtime().access
    secret = _soap_apikey() if request.blueprint == "soap" else _rest_secret()
    if not secret:
        return f"ip:{request.remote_addr}"
    if not access.managed:
        return f"key:{hash_key(secret)[:12]}"
    entry = access.client_for_token(secret) if is_token(secret) else access.client_for_key(secret)
    # A key the bridge does not know is counted by address, so guessing keys is limited too.
    return f"client:{entry.name}" if entry else f"ip:{request.remote_addr}"


def _rest_secret() -> str | None:
    # A malformed credential is the view's to refuse, in the dialect: count the call by address.
    try:
        found = optional_credential()
    except BridgeError:
        return None
    return found.secret if found else None


def _soap_apikey() -> str | None:
    if request.method != "POST":
        return None
    match = _SOAP_APIKEY.search(request.get_data())
    return match.group(1).decode("utf-8", "replace").strip() if match else None


def _exempt() -> bool:
    # Webhook sources are the upstreams, authenticated by their URL's key: a busy one must not get 429.
    path = request.path
    if path in EXEMPT_PATHS or path.startswith("/webhooks/"):
        return True
    return request.method == "GET" and path in (soap.WSDL_PATH, soap.ENDPOINT_PATH)


def init_app(app: Flask, settings: Settings, *, per_client: bool) -> ClientLimits:
    """Limit every request but health checks, metrics, webhook sources and the WSDL.

    `per_client`: clients may have limits of their own (managed mode); otherwise every client has
    the default.
    """
    counts = ClientLimits(settings.ratelimit_storage, settings.data_dir)
    default = parsed(settings.rate_limit)

    def check() -> None:
        if _exempt():
            return
        client = client_key()
        if per_client:
            name = client.removeprefix("client:") if client.startswith("client:") else None
            limits = parsed(runtime().access.limit_for_client(name))
        else:
            limits = default
        exceeded = counts.hit(client, limits)
        if exceeded is not None:
            RATE_LIMITED.inc()
            wait = counts.seconds_until_reset(client, exceeded)
            raise RateLimited(
                f"too many requests: this client may make {exceeded}; try again in {wait} s",
                retry_after=wait,
            )

    app.before_request(check)
    app.extensions["smsbridge.limiter"] = counts
    return counts
