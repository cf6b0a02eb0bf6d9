"""Faults the PostgreSQL state must survive, injected against a real server (tests/harness/postgres.py).

Each test fails on a real problem of app/state/postgres/ (an outside review of issue 14): a statement that
lands after its caller was told nothing was stored, a claim and its read racing a release, clocks of two
hosts that disagree, input PostgreSQL cannot hold answered as a retryable outage, a schema a newer smsbridge
made escaping as something else than StorageUnavailable, and psycopg in gunicorn's master.

"Frozen right after the pool's check" is the injection the first tests share: the pool checks an idle
connection before handing it out (app.state.postgres.db._check), and the server is frozen (SIGSTOP) just
after that check answered, as a VM that stalls at that moment would be. The statement that follows is
written to a server that reads it only when thawed.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from flask import Flask

from app.config import Settings
from app.errors import StorageUnavailable
from app.state.postgres import MIGRATIONS
from app.state.postgres import db as pg
from app.state.postgres.idempotency import PostgresIdempotency
from app.state.postgres.mobsms import PostgresMobsmsState
from app.state.postgres.outbox import PostgresOutbox
from tests.harness.gunicorn import Gunicorn
from tests.harness.postgres import PostgresServer

TTL = 86400
#: a token secret for shared state (it refuses to start without one)
SECRET = "a-token-secret-for-the-postgres-fault-tests-0123456789"
#: how long the server is given to run what it read while frozen, and its cut backends to exit
SETTLE = 15.0
#: how long a store is given to work again once the server is back (the pool reconnects with backoff)
RECOVERY = 30.0

_databases = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("pg-faults")) as running:
        yield running


@pytest.fixture
def url(server: PostgresServer) -> Iterator[str]:
    """A fresh database per test; this process's pools closed, and the server thawed, at its end."""
    created = server.create_database(f"faults_{os.getpid()}_{next(_databases)}")
    yield created
    server.thaw()
    pg.close_all()


class FreezeAfterCheck:
    """Freeze the server right after the pool's next check of a connection answers (once armed)."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.armed = False
        #: the backend whose connection was handed out to the frozen server
        self.backend_pid: int | None = None

    def check(self, real: Callable[[Any], None], connection: Any) -> None:
        real(connection)
        if self.armed:
            self.armed = False
            self.backend_pid = connection.info.backend_pid
            self.server.freeze()

    def thaw_and_settle(self, database: str) -> None:
        """Thaw, then wait until the backend cut while frozen has run what it read and exited."""
        self.server.thaw()
        assert self.backend_pid is not None, "the injection never fired"
        deadline = time.monotonic() + SETTLE
        with self.server.connect(database, autocommit=True) as connection:
            while time.monotonic() < deadline:
                row = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (self.backend_pid,)
                ).fetchone()
                if row is not None and row[0] == 0:
                    return
                time.sleep(0.05)
        raise AssertionError("the backend cut while the server was frozen did not exit after the thaw")


@pytest.fixture
def freeze_after_check(server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FreezeAfterCheck]:
    """The injection, in place before any pool of the test is made (a pool takes its check when made)."""
    injection = FreezeAfterCheck(server)
    real = pg._check
    monkeypatch.setattr(pg, "_check", lambda connection: injection.check(real, connection))
    yield injection
    server.thaw()


def _database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _works_again(action: Callable[[], object]) -> object:
    deadline = time.monotonic() + RECOVERY
    while True:
        try:
            return action()
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- statements that land after the caller was told nothing was stored --------------------------------------


def test_a_keyed_send_told_nothing_was_stored_may_be_retried_with_its_key_once_the_server_thaws(
    url: str, freeze_after_check: FreezeAfterCheck
) -> None:
    """The claim answered "nothing was sent or changed; try again": the retry must find the key free.

    Written to a frozen server in autocommit, the INSERT commits when the server thaws: the retry then
    finds a claim nobody holds, waits, answers idempotency_in_flight, then idempotency_outcome_unknown for
    the key's whole TTL (24 h) although nothing was ever sent.
    """
    host_a = PostgresIdempotency(url)
    host_a.claim("warm-up", "fp", TTL, 30)  # the pool made, the once-a-minute sweep done
    freeze_after_check.armed = True
    with pytest.raises(StorageUnavailable, match="nothing was sent or changed"):
        host_a.claim("client:key", "fp", TTL, 30)
    freeze_after_check.thaw_and_settle(_database_of(url))

    host_b = PostgresIdempotency(url)
    held = _works_again(lambda: host_b.claim("client:key", "fp", TTL, 30))
    assert held is None, f"the retry found a claim its caller was told was not stored: {dict(held or {})}"


def test_a_delivery_claim_told_nothing_changed_does_not_lease_the_event_once_the_server_thaws(
    url: str, freeze_after_check: FreezeAfterCheck
) -> None:
    """The outbox claim answered "nothing was stored or changed": the event must stay due.

    In autocommit the UPDATE ... RETURNING commits at the thaw: the event is leased to nobody for
    LEASE_SECONDS (120 s) and one attempt is counted that was never made (its backoff grows).
    """
    events = PostgresOutbox(url)
    event_id = events.add("client", "sms.received", {"guid": "g-1"})
    freeze_after_check.armed = True
    with pytest.raises(StorageUnavailable, match="nothing was stored or changed"):
        events.claim()
    freeze_after_check.thaw_and_settle(_database_of(url))

    other_host = PostgresOutbox(url)
    claimed = _works_again(other_host.claim)
    assert claimed is not None, "the event was leased by a claim whose caller was told nothing changed"
    assert (claimed["id"], claimed["attempts"]) == (event_id, 1)


# --- a claim and its read, two statements -----------------------------------------------------------------


class _HookAfterFirstStatement:
    """A connection whose first execute() is followed by `hook` (another host acting at that moment)."""

    def __init__(self, connection: Any, hook: Callable[[], None]) -> None:
        self._connection = connection
        self._hook: Callable[[], None] | None = hook

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        result = self._connection.execute(*args, **kwargs)
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_a_claim_that_races_the_holders_release_never_makes_two_winners(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holds the key; B's claim conflicts; A's first attempt sent nothing and releases the key between
    B's INSERT (no row written) and B's SELECT (no row found): B is told it won (None) with no row
    written, and C, claiming next, wins too: two sends under one key.
    """
    host_a, host_b, host_c = PostgresIdempotency(url), PostgresIdempotency(url), PostgresIdempotency(url)
    assert host_a.claim("client:key", "fp", TTL, 30) is None
    assert host_b.claim("warm-up", "fp", TTL, 30) is None  # B's once-a-minute sweep done

    released = threading.Thread(target=host_a.release, args=("client:key",))

    def release_meanwhile() -> None:
        released.start()
        # With the claim in a transaction, the release waits for B's row lock: not for long, then.
        released.join(timeout=1.0)

    armed = [True]
    real_run = pg.PostgresDatabase.run

    def run(self: pg.PostgresDatabase, work: Callable[[Any], Any], **kwargs: Any) -> Any:
        if armed and armed.pop():
            return real_run(self, lambda db: work(_HookAfterFirstStatement(db, release_meanwhile)), **kwargs)
        return real_run(self, work, **kwargs)

    monkeypatch.setattr(pg.PostgresDatabase, "run", run)
    b_won = host_b.claim("client:key", "fp", TTL, 30) is None
    monkeypatch.undo()
    released.join(timeout=10)
    assert not released.is_alive()
    c_won = host_c.claim("client:key", "fp", TTL, 30) is None

    assert not (b_won and c_won), "B and C both claimed the key after A released it: two sends"


# --- two hosts whose clocks disagree ----------------------------------------------------------------------


def test_a_resend_claim_holds_against_a_host_whose_clock_is_ahead(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A claims a resend for 10 s; host B, its clock 30 s ahead (no NTP on that VM), must still find it
    held. The claim's deadline is A's clock, compared with B's: B wins too, and both resend."""
    host_a, host_b = PostgresMobsmsState(url), PostgresMobsmsState(url)
    assert host_a.claim_resend("account", "guid-1", 10.0) is True
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 30.0)
    b_won = host_b.claim_resend("account", "guid-1", 10.0)
    monkeypatch.undo()
    assert b_won is False, "a host whose clock is ahead claimed a resend another host holds"


def test_an_outbox_lease_holds_against_a_host_whose_clock_is_ahead(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A leases an event for its attempt; host B, its clock 200 s ahead (over the 120 s lease), must find
    it leased still: compared on B's clock, the lease had ended, and B delivered it a second time."""
    host_a, host_b = PostgresOutbox(url), PostgresOutbox(url)
    host_a.add("shop", "sms.received", {"guid": "g-1"}, event_id="event-1")
    leased = host_a.claim()
    assert leased is not None and leased["id"] == "event-1"
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 200.0)
    taken_again = host_b.claim()
    monkeypatch.undo()
    assert taken_again is None, "a host whose clock is ahead took over an attempt another host is making"


# --- input PostgreSQL cannot hold ---------------------------------------------------------------------------


def test_a_message_with_a_nul_byte_is_not_answered_as_a_retryable_outage(
    url: str, make_app: Callable[..., Flask]
) -> None:
    """PostgreSQL's text holds no NUL: the sandbox answered 503 storage_unavailable, "try again", for ever
    (SQLite stores it and answers 200). The same request must get the same kind of answer on both engines,
    and never a retryable outage for input that will never be stored."""
    client = make_app("sandbox", state_url=url, token_secret=SECRET).test_client()
    answer = client.post(
        "/sendsms/", data={"apikey": "sandbox-key-1", "recipients": "+32470000001", "message": "a\x00b"}
    )
    assert answer.content_type.startswith("application/json")
    result = answer.get_json()["result"]
    assert result.get("error_code") != "storage_unavailable", result
    assert answer.status_code in (200, 400), result


def test_one_event_with_a_nul_byte_does_not_hide_every_other_messages_events(url: str) -> None:
    """An event's data is JSON text; "\\u0000" is valid JSON but cannot be cast to jsonb, and `about`
    casts every row it scans: one such event (a received SMS with a NUL, from any client) made the web
    inbox's events of every message StorageUnavailable."""
    events = PostgresOutbox(url)
    events.add("client-1", "sms.received", {"guid": "g-nul", "message": "a\x00b"})
    wanted = events.add("client-2", "sms.received", {"guid": "g-fine", "message": "hello"})
    assert [event["id"] for event in events.about("g-fine")] == [wanted]


# --- every connection of the pool in use ------------------------------------------------------------------


def test_a_busy_pool_is_answered_in_time_and_not_reported_as_an_unreachable_server(url: str) -> None:
    """The 11th caller of a worker whose POOL_MAX connections are all in use (a burst of greenlets, a slow
    but healthy server) waits OPERATION_SECONDS, inside the PHP SDK's 10 s, but was told, and /readyz and
    the logs said, "postgresql unreachable": an operator (or an orchestrator) chases a network fault, or
    takes a host out, while PostgreSQL answers."""
    store = PostgresIdempotency(url)
    store.idempotent("warm-up")
    pool = pg.shared(url).pool()
    held = [pool.getconn(timeout=10) for _ in range(pg.POOL_MAX)]
    try:
        with psycopg.connect(url, autocommit=True) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)  # the server answers
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as caught:
            store.idempotent("client:key")
        assert time.monotonic() - started < 9.0
        assert caught.value.trouble != pg.UNREACHABLE, caught.value
    finally:
        for connection in held:
            pool.putconn(connection)


# --- a schema a newer smsbridge made -----------------------------------------------------------------------


def test_a_schema_from_a_newer_smsbridge_is_storage_unavailable_at_first_use(url: str) -> None:
    """app/state/base.py: every method raises StorageUnavailable when the store cannot be used. A worker
    started (or restarted) after a newer smsbridge migrated the database (a rolling upgrade) made its pool
    at first use and let UnusableDatabase, a RuntimeError, out of every call: a 500 per request, each
    opening a connection of its own to look at the schema again."""
    pg.migrate(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO smsbridge_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    store = PostgresIdempotency(url)
    with pytest.raises(StorageUnavailable):
        store.idempotent("client:key")


# --- passwords in URLs --------------------------------------------------------------------------------------


def test_no_storage_url_shows_its_password_in_the_settings_repr() -> None:
    """SMSBRIDGE_STATE_URL is kept out of the settings' repr (it may hold a password); the rate-limit
    storage, now also postgresql://USER:PASSWORD@HOST/DB (or redis://:PASSWORD@HOST), was not: any log
    line, traceback with locals or error report that shows the settings showed the database password."""
    url = "postgresql://smsbridge:pg-password-1234@db.internal:5432/smsbridge"
    settings = Settings(state_url=url, ratelimit_storage=url, token_secret=SECRET)
    assert "pg-password-1234" not in repr(settings)


# --- gunicorn's master --------------------------------------------------------------------------------------


def test_gunicorn_master_never_loads_psycopg_with_shared_state(url: str, tmp_path: Path) -> None:
    """The commit's promise, checked on a real gunicorn: with SMSBRIDGE_STATE_URL set, the master
    migrates in a forked child and maps neither psycopg nor libpq; its workers do."""
    env = {
        "SMSBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "SMSBRIDGE_BACKEND": "sandbox",
        "SMSBRIDGE_STATE_URL": url,
        "SMSBRIDGE_TOKEN_SECRET": SECRET,
        "SMSBRIDGE_WORKERS": "1",
    }
    bridge = Gunicorn(env, tmp_path / "gunicorn.log")
    try:
        assert requests.get(bridge.url + "/readyz", timeout=10).status_code == 200
        maps = Path(f"/proc/{bridge.process.pid}/maps").read_text()
        assert "psycopg" not in maps
        assert "libpq" not in maps
        with psycopg.connect(url, autocommit=True) as connection:
            row = connection.execute("SELECT max(version) FROM smsbridge_migrations").fetchone()
        assert row is not None and row[0] == len(MIGRATIONS)
    finally:
        bridge.stop()
