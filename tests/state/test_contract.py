"""One contract for every state interface (app/state/base.py), run against SQLite and a real PostgreSQL.

Each test gets a fresh store: SQLite files in its own temporary directory, or its own database in one
throwaway PostgreSQL cluster (tests/harness/postgres.py) shared by the module. Claims that must have exactly
one winner are made at the same moment by several processes (spawned, each with its own connections).
Time is injected where the interface takes `now`; a past deadline is made with a negative hold or TTL.
The PostgreSQL-only tests at the end cover what SQLite has no notion of: migrations racing on one server,
LISTEN/NOTIFY, housekeeping one host at a time, and the server stopped or frozen, then back.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import multiprocessing.pool
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.errors import StorageUnavailable
from app.state.base import LEASE_SECONDS, SWEEP_SECONDS, IdempotencyStore, MobsmsState, Outbox
from app.state.postgres import MIGRATIONS
from app.state.postgres import db as pg
from tests.harness.postgres import PostgresServer

ENGINES = ["sqlite", "postgresql"]
#: processes that claim at once
RACERS = 4
#: the longest a store may take to answer "unavailable" (the PHP SDK gives up at 10 s; the design is ~5 s)
DOWN_BOUND = 9.0
#: how long a store is given to work again once the server is back (the pool reconnects with backoff)
RECOVERY = 30.0
TTL = 86400
ROOT = Path(__file__).resolve().parents[2]

#: a gevent worker's view of a frozen server: five requests and a deliverer's wait at once, while another
#: greenlet goes on running (the event loop is never held); stdin says when the server is frozen
GEVENT_WORKER = """
from gevent import monkey; monkey.patch_all()
import json, sys, gevent
from app.errors import StorageUnavailable
from app.state.postgres import db
from app.state.postgres.idempotency import PostgresIdempotency
from app.state.postgres.outbox import PostgresOutbox
keys, events = PostgresIdempotency(sys.argv[1]), PostgresOutbox(sys.argv[1])
keys.claim("c:k", "fp", 86400, 30)
print("ready", flush=True)
sys.stdin.readline()
ticks = []
def tick():
    while True:
        ticks.append(1)
        gevent.sleep(0.05)
def request():
    try:
        return keys.idempotent("c:k")["done"]
    except StorageUnavailable as error:
        return error.trouble
ticker = gevent.spawn(tick)
jobs = [gevent.spawn(request) for _ in range(5)] + [gevent.spawn(events.wait_for_events, 1.0)]
gevent.joinall(jobs)
ticker.kill()
print(json.dumps({"answers": [job.value for job in jobs], "ticks": len(ticks)}), flush=True)
events.close()
db.close_all()
"""

_databases = itertools.count(1)


def make_store(kind: str, engine: str, location: str) -> Any:
    """A store of `kind` on `engine` at `location` (a data directory, or a database URL)."""
    if engine == "sqlite":
        from app.state.sqlite.idempotency import SqliteIdempotency
        from app.state.sqlite.mobsms import SqliteMobsmsState
        from app.state.sqlite.outbox import SqliteOutbox

        sqlite_kinds: dict[str, Callable[[Path], Any]] = {
            "idempotency": SqliteIdempotency,
            "mobsms": SqliteMobsmsState,
            "outbox": SqliteOutbox,
        }
        return sqlite_kinds[kind](Path(location))
    from app.state.postgres.idempotency import PostgresIdempotency
    from app.state.postgres.mobsms import PostgresMobsmsState
    from app.state.postgres.outbox import PostgresOutbox

    postgres_kinds: dict[str, Callable[[str], Any]] = {
        "idempotency": PostgresIdempotency,
        "mobsms": PostgresMobsmsState,
        "outbox": PostgresOutbox,
    }
    return postgres_kinds[kind](location)


def in_process(op: str, engine: str, location: str, start_at: float) -> Any:
    """Run one racer's `op` in a spawned process, starting at `start_at` (wall clock) like the others."""
    time.sleep(max(0.0, start_at - time.time()))
    if op == "migrate":
        return pg.migrate(location)
    store = make_store({"claim": "idempotency", "resend": "mobsms", "drain": "outbox"}[op], engine, location)
    try:
        if op == "claim":
            return store.claim("client:key", "same request", TTL, 30) is None
        if op == "resend":
            return store.claim_resend("account", "guid-1", 30)
        claimed = []
        while (event := store.claim()) is not None:
            claimed.append(event["id"])
        return claimed
    finally:
        store.close()
        pg.close_all()


@dataclass
class Engine:
    """Where one test's stores live, and the stores it made (closed at its end)."""

    name: str
    location: str
    made: list[Any] = field(default_factory=list)

    def store(self, kind: str) -> Any:
        made = make_store(kind, self.name, self.location)
        self.made.append(made)
        return made

    def idempotency(self) -> IdempotencyStore:
        return self.store("idempotency")

    def mobsms(self) -> MobsmsState:
        return self.store("mobsms")

    def outbox(self) -> Outbox:
        return self.store("outbox")

    def race(self, racers: multiprocessing.pool.Pool, op: str) -> list[Any]:
        """Run `op` in RACERS processes at once and return what each got."""
        start_at = time.time() + 0.5
        return racers.starmap(in_process, [(op, self.name, self.location, start_at)] * RACERS, chunksize=1)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="module")
def racers() -> Iterator[multiprocessing.pool.Pool]:
    """Processes that claim at once (spawned: nothing inherited, each makes its own connections)."""
    pool = multiprocessing.get_context("spawn").Pool(RACERS)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def _fresh(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> Iterator[Engine]:
    if name == "sqlite":
        engine = Engine(name, str(tmp_path / "data"))
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        engine = Engine(name, server.create_database(f"contract_{next(_databases)}"))
    try:
        yield engine
    finally:
        for made in engine.made:
            made.close()
        pg.close_all()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    yield from _fresh(request, request.param, tmp_path)


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    yield from _fresh(request, "postgresql", tmp_path)


# Idempotency keys


def test_a_claim_is_held_then_answered_and_replayed(engine: Engine) -> None:
    store = engine.idempotency()
    before = time.time()
    assert store.claim("c:k", "fp", TTL, 30) is None
    held = store.claim("c:k", "fp", TTL, 30)
    assert held is not None
    assert (held["fingerprint"], held["done"], held["status"], held["body"]) == ("fp", 0, None, None)
    assert held["holder_until"] >= before + 30
    assert before - 1 <= held["created_at"] <= time.time()

    store.complete("c:k", 201, "application/json", b'{"ok": 1}', '[["Retry-After", "1"]]')
    kept = store.idempotent("c:k")
    assert kept is not None
    assert (kept["done"], kept["status"], kept["content_type"]) == (1, 201, "application/json")
    assert bytes(kept["body"]) == b'{"ok": 1}'
    assert kept["headers"] == '[["Retry-After", "1"]]'
    again = store.claim("c:k", "fp", TTL, 30)
    assert again is not None and again["done"] == 1

    # Another request under the same key is told whose it is: the caller compares fingerprints (422).
    other = store.claim("c:k", "other parameters", TTL, 30)
    assert other is not None and other["fingerprint"] == "fp"
    assert store.idempotent("c:unknown") is None


def test_a_released_claim_may_be_claimed_again_but_an_answered_one_is_kept(engine: Engine) -> None:
    store = engine.idempotency()
    assert store.claim("c:sent-nothing", "fp", TTL, 30) is None
    store.release("c:sent-nothing")
    assert store.idempotent("c:sent-nothing") is None
    assert store.claim("c:sent-nothing", "fp2", TTL, 30) is None

    assert store.claim("c:answered", "fp", TTL, 30) is None
    store.complete("c:answered", 200, "application/json", b"{}", "[]")
    store.release("c:answered")
    kept = store.idempotent("c:answered")
    assert kept is not None and kept["done"] == 1


def test_a_key_past_its_ttl_is_claimed_over_and_swept(engine: Engine) -> None:
    first = engine.idempotency()
    assert first.claim("c:old", "fp", TTL, 30) is None
    first.complete("c:old", 200, "application/json", b"{}", "[]")
    # A TTL of -1 s puts every kept key past it: claimed over as if it were gone.
    assert first.claim("c:old", "new request", -1, 30) is None
    renewed = first.idempotent("c:old")
    assert renewed is not None and (renewed["fingerprint"], renewed["done"]) == ("new request", 0)

    # A store's first claim sweeps expired keys (then at most once per SWEEP_SECONDS).
    second = engine.idempotency()
    assert second.claim("c:other", "fp", -1, 30) is None
    assert second.idempotent("c:old") is None


def test_claims_from_several_processes_at_once_have_one_winner(
    engine: Engine, racers: multiprocessing.pool.Pool
) -> None:
    engine.idempotency().idempotent("prepare")  # the schema made before the race (start-up's work)
    won = engine.race(racers, "claim")
    assert sorted(won) == [False] * (RACERS - 1) + [True]


# mobsms's flags, aliases and resends


def test_read_flags_and_aliases_per_account(engine: Engine) -> None:
    store = engine.mobsms()
    assert store.received_flags("acct") == {}
    store.mark_read("acct", "g1")
    store.set_alias("acct", "g2", "Mum")
    store.set_alias("acct", "g1", "Bank")
    store.mark_read("acct", "g1")
    assert store.received_flags("acct") == {"g1": (True, "Bank"), "g2": (False, "Mum")}
    store.set_alias("acct", "g2", None)
    assert store.received_flags("acct")["g2"] == (False, None)
    assert store.received_flags("another") == {}


def test_resends_are_claimed_numbered_and_released(engine: Engine) -> None:
    store = engine.mobsms()
    assert store.resends("acct", "g") == []
    assert store.claim_resend("acct", "g", 30) is True
    assert store.claim_resend("acct", "g", 30) is False  # held
    assert store.add_resend("acct", "g", "copy-1") == 1  # ends the claim
    assert store.claim_resend("acct", "g", 30) is True
    store.release_resend("acct", "g")
    assert store.claim_resend("acct", "g", -1) is True  # a claim whose deadline has passed...
    assert store.claim_resend("acct", "g", 30) is True  # ...belongs to a holder that died
    assert store.add_resend("acct", "g", "copy-2") == 2
    assert store.resends("acct", "g") == ["copy-1", "copy-2"]
    assert store.resends("other", "g") == []


def test_resend_claims_from_several_processes_at_once_have_one_winner(
    engine: Engine, racers: multiprocessing.pool.Pool
) -> None:
    engine.mobsms().resends("prepare", "schema")
    won = engine.race(racers, "resend")
    assert sorted(won) == [False] * (RACERS - 1) + [True]


# The webhook outbox


def test_an_event_is_stored_once_by_id(engine: Engine) -> None:
    store = engine.outbox()
    assert store.counts() == {}
    event_id = store.add("client-a", "sms.received", {"guid": "g1"}, event_id="vendor-1")
    assert event_id == "vendor-1"
    assert store.add("client-a", "sms.received", {"guid": "other"}, event_id="vendor-1") == "vendor-1"
    generated = store.add("client-a", "sms.sent", {"guid": "g2"})
    assert generated != "vendor-1"
    assert store.counts() == {"pending": 2}


def test_a_claim_leases_one_attempt_until_the_lease_expires(engine: Engine) -> None:
    store = engine.outbox()
    store.add("client-a", "sms.received", {"guid": "g1", "text": "é"}, event_id="e1")
    now = time.time()
    first = store.claim(now)
    assert first is not None
    assert (first["id"], first["client"], first["type"], first["attempts"], first["status"]) == (
        "e1",
        "client-a",
        "sms.received",
        1,
        "pending",
    )
    assert first["data"] == '{"guid": "g1", "text": "\\u00e9"}'
    assert first["lease_until"] == pytest.approx(now + LEASE_SECONDS)
    assert store.claim(now) is None  # leased
    second = store.claim(now + LEASE_SECONDS + 1)  # its deliverer died: the lease ran out
    assert second is not None and (second["id"], second["attempts"]) == ("e1", 2)


def test_a_late_outcome_cannot_overwrite_a_newer_attempt(engine: Engine) -> None:
    store = engine.outbox()
    store.add("client-a", "sms.received", {}, event_id="e1")
    now = time.time()
    attempt_1 = store.claim(now)
    attempt_2 = store.claim(now + LEASE_SECONDS + 1)
    assert attempt_1 is not None and attempt_2 is not None
    store.delivered("e1", attempt=1)
    store.failed(attempt_1, "late failure", 0)
    assert store.counts() == {"pending": 1}
    assert store.dead() == []
    store.delivered("e1", attempt=2)
    assert store.counts() == {}
    store.failed(attempt_2, "late failure after delivery", 0)  # never undoes a delivery
    assert store.counts() == {}


def test_a_released_lease_gives_the_attempt_back_and_skipped_clients_wait(engine: Engine) -> None:
    store = engine.outbox()
    store.add("busy", "sms.received", {}, event_id="e-busy")
    store.add("free", "sms.received", {}, event_id="e-free")
    now = time.time() + 1
    taken = store.claim(now, skip_clients=frozenset({"busy"}))
    assert taken is not None and taken["id"] == "e-free"
    assert store.claim(now, skip_clients=frozenset({"busy"})) is None
    busy = store.claim(now)
    assert busy is not None and (busy["id"], busy["attempts"]) == ("e-busy", 1)
    store.release("e-busy")
    again = store.claim(now)
    assert again is not None and (again["id"], again["attempts"]) == ("e-busy", 1)


def test_a_failed_attempts_jitter_leaves_the_random_modules_state_alone(engine: Engine) -> None:
    """The deliverer's retries drew their jitter from the random module's shared generator: a library that
    watches it (hypothesis, in the contract tests) saw a background deliverer's draw as its own and failed
    as flaky. The jitter has a generator of its own."""
    store = engine.outbox()
    store.add("client-a", "sms.received", {}, event_id="jitter")
    claimed = store.claim(time.time())
    assert claimed is not None
    before = random.getstate()
    store.failed(claimed, "HTTP 500", 86400)
    assert random.getstate() == before


def test_failures_back_off_then_the_event_is_dead_replayed_and_purged(engine: Engine) -> None:
    store = engine.outbox()
    store.add("client-a", "sms.received", {}, event_id="e1")
    now = time.time()
    first = store.claim(now)
    assert first is not None
    store.failed(first, "HTTP 500", 86400)
    # Retried after 2 s (jitter ±50 %), not before.
    assert store.claim(time.time()) is None
    retried = store.claim(time.time() + 3.01)
    assert retried is not None and (retried["attempts"], retried["last_error"]) == (2, "HTTP 500")
    store.failed(retried, "x" * 400, 0)  # past the window: dead
    assert store.counts() == {"dead": 1}
    (dead,) = store.dead()
    assert (dead["id"], dead["status"], dead["attempts"], dead["last_error"]) == ("e1", "dead", 2, "x" * 300)
    assert store.claim(time.time() + 10_000) is None

    assert store.replay("e1") is True
    assert store.replay("e1") is False  # no longer dead
    assert store.replay("unknown") is False
    replayed = store.claim()
    assert replayed is not None and (replayed["attempts"], replayed["status"]) == (1, "pending")
    store.failed(replayed, "HTTP 410", 0)
    store.add("client-a", "sms.sent", {}, event_id="e2")
    e2 = store.claim(time.time() + 1)
    assert e2 is not None
    store.failed(e2, "refused", 0)
    assert [event["id"] for event in store.dead()] == ["e1", "e2"]
    assert store.purge_dead() == 2
    assert store.counts() == {}
    assert store.purge_dead() == 0


def test_delivered_events_are_swept_after_their_retention_once_per_period(engine: Engine) -> None:
    store = engine.outbox()
    for name in ("old", "recent"):
        store.add("client-a", "sms.received", {}, event_id=name)
    t0 = time.time()
    store.delivered("old", t0 - 100)
    store.delivered("recent", t0)
    store.add("client-a", "sms.received", {}, event_id="pending")
    assert store.sweep(50, t0) == 1  # "old" only: "recent" is within retention, "pending" never swept
    store.delivered("recent", t0 - 100)
    assert store.sweep(50, t0 + 1) == 0  # swept at most once per SWEEP_SECONDS
    assert store.sweep(50, t0 + SWEEP_SECONDS + 1) == 1
    assert store.counts() == {"pending": 1}


def test_deliverers_in_several_processes_claim_each_event_once(
    engine: Engine, racers: multiprocessing.pool.Pool
) -> None:
    store = engine.outbox()
    added = {store.add("client-a", "sms.received", {"n": n}) for n in range(40)}
    claimed = [event_id for got in engine.race(racers, "drain") for event_id in got]
    assert sorted(claimed) == sorted(added)


# PostgreSQL only: migrations, LISTEN/NOTIFY, housekeeping, the server down


def test_migrations_run_once_when_processes_start_together(
    pg_engine: Engine, racers: multiprocessing.pool.Pool
) -> None:
    applied = pg_engine.race(racers, "migrate")
    assert sorted(applied) == [0] * (RACERS - 1) + [len(MIGRATIONS)]
    with psycopg.connect(pg_engine.location) as connection:
        versions = connection.execute("SELECT version FROM smsbridge_migrations ORDER BY version").fetchall()
        assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]
        connection.execute("INSERT INTO smsbridge_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(pg.UnusableDatabase, match="newer smsbridge"):
        pg.migrate(pg_engine.location)


def test_an_event_added_on_one_host_wakes_a_deliverer_listening_on_another(pg_engine: Engine) -> None:
    receiving, delivering = pg_engine.outbox(), pg_engine.outbox()
    assert delivering.wait_for_events(0.1) is False  # subscribes; nothing added
    receiving.add("client-a", "sms.received", {}, event_id="e1")
    assert delivering.wait_for_events(30) is True
    receiving.add("client-a", "sms.received", {}, event_id="e1")  # stored before: announces nothing
    assert delivering.wait_for_events(0.2) is False
    event = delivering.claim()
    assert event is not None
    delivering.failed(event, "HTTP 500", 0)
    assert receiving.replay("e1") is True
    assert delivering.wait_for_events(30) is True


def test_housekeeping_runs_on_one_host_at_a_time(pg_engine: Engine) -> None:
    store = pg_engine.outbox()
    store.add("client-a", "sms.received", {}, event_id="old")
    store.delivered("old", time.time() - 100)
    with psycopg.connect(pg_engine.location) as other_host:
        other_host.execute("SELECT pg_advisory_xact_lock(%s)", (pg.HOUSEKEEPING_LOCK,))
        assert store.sweep(50) == 0  # another host is sweeping: this one skips its turn
    assert store.sweep(50, time.time() + SWEEP_SECONDS + 1) == 1


def _unavailable_within_bound(action: Callable[[], object]) -> StorageUnavailable:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        action()
    assert time.monotonic() - started < DOWN_BOUND
    assert "nothing was" in raised.value.note and "try again" in raised.value.note
    assert raised.value.trouble.startswith("postgresql ")
    return raised.value


def _works_again(action: Callable[[], object]) -> object:
    deadline = time.monotonic() + RECOVERY
    while True:
        try:
            return action()
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_frozen_server_is_unavailable_within_a_bound_then_works_when_thawed(
    pg_engine: Engine, postgres: PostgresServer
) -> None:
    keys, events = pg_engine.idempotency(), pg_engine.outbox()
    assert keys.claim("c:before", "fp", TTL, 30) is None  # pooled connections exist
    events.add("client-a", "sms.received", {}, event_id="e1")
    postgres.freeze()
    try:
        _unavailable_within_bound(lambda: keys.claim("c:frozen", "fp", TTL, 30))
        _unavailable_within_bound(lambda: events.add("client-a", "sms.received", {}, event_id="e2"))
    finally:
        postgres.thaw()
    assert _works_again(lambda: keys.claim("c:thawed", "fp", TTL, 30)) is None
    assert keys.idempotent("c:frozen") is None  # nothing was stored
    assert events.counts() == {"pending": 1}


def test_a_stopped_server_is_unavailable_then_works_when_started_again(
    pg_engine: Engine, postgres: PostgresServer
) -> None:
    flags, events = pg_engine.mobsms(), pg_engine.outbox()
    assert flags.claim_resend("acct", "g", 30) is True
    postgres.stop()
    try:
        error = _unavailable_within_bound(lambda: flags.claim_resend("acct", "g2", 30))
        assert error.trouble == "postgresql unreachable"
        started = time.monotonic()
        assert events.wait_for_events(0.2) is False  # the deliverer's wait never raises
        assert time.monotonic() - started < DOWN_BOUND
    finally:
        postgres.start()
    assert _works_again(lambda: flags.claim_resend("acct", "g2", 30)) is True
    assert flags.claim_resend("acct", "g", 30) is False  # kept across the restart


def test_under_gevent_a_frozen_server_holds_no_worker(pg_engine: Engine, postgres: PostgresServer) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", GEVENT_WORKER, pg_engine.location],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None and worker.stdout is not None
    try:
        assert worker.stdout.readline().strip() == "ready"
        postgres.freeze()
        try:
            worker.stdin.write("go\n")
            worker.stdin.flush()
            report = json.loads(worker.stdout.readline())
        finally:
            postgres.thaw()
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
        worker.wait()
        worker.stdin.close()
        worker.stdout.close()
    assert report["answers"][-1] is False
    assert set(report["answers"][:5]) <= {"postgresql unreachable", "postgresql timed out"}
    # The other greenlet ran all along (every 50 ms while the requests waited seconds), not once at the end.
    assert report["ticks"] > 10


def test_start_up_migration_without_a_server_is_storage_unavailable() -> None:
    from app.config import Settings
    from app.state import migrate_shared_state
    from tests.harness.net import free_port

    settings = Settings(
        state_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", token_secret="s" * 32
    )
    with pytest.raises(StorageUnavailable) as raised:
        migrate_shared_state(settings)
    assert raised.value.trouble == "postgresql unreachable"
    assert migrate_shared_state(Settings()) == 0  # SQLite: nothing to do here


# The web inbox's reads: a message's events, a page of dead events (issue 15)


def test_every_outbox_lists_a_messages_events_and_a_page_of_dead_ones(engine: Engine) -> None:
    assert {"about", "dead"} <= Outbox.__abstractmethods__  # each engine says how, on its own index
    store = engine.outbox()
    about = [store.add("client-a", "sms.sent", {"guid": "g1", "n": n}) for n in range(3)]
    other = store.add("client-a", "sms.sent", {"guid": "g2"})
    assert [event["id"] for event in store.about("g1", limit=2)] == about[:2]
    assert [event["id"] for event in store.about("g2")] == [other]
    assert store.about("g3") == []
    for event_id in [*about, other]:
        store.delivered(event_id)
    for n in range(3):
        store.add("client-a", "sms.received", {"message": "private words"}, event_id=f"dead-{n}")
        claimed = store.claim(time.time() + 10)
        assert claimed is not None
        store.failed(claimed, "HTTP 500", 0)
    assert [event["id"] for event in store.dead(limit=2)] == ["dead-0", "dead-1"]  # the oldest
    everything = store.dead()
    assert [event["id"] for event in everything] == ["dead-0", "dead-1", "dead-2"]
    assert all("data" not in event.keys() for event in everything)  # noqa: SIM118 (sqlite3.Row too)
    assert everything[0]["last_error"] == "HTTP 500" and everything[0]["client"] == "client-a"


def test_events_stored_before_the_guid_column_are_found_after_the_migration(pg_engine: Engine) -> None:
    """The column `about` reads is filled for the events already stored, one by one: JSON that jsonb
    refuses (a NUL escaped, a NaN), a guid that is not a string or no guid leave an event without, and
    never fail the migration."""
    before = MIGRATIONS[:-1]
    pg.migrate(pg_engine.location, before)
    rows = [
        ("e1", json.dumps({"guid": "g1", "status": "sent"})),
        ("e2", json.dumps({"guid": "g1", "message": "a\x00b"})),
        ("e3", '{"guid": "g1", "n": NaN}'),
        ("e4", json.dumps({"guid": 7})),
        ("e5", json.dumps({"guid": "g1"})),
    ]
    with psycopg.connect(pg_engine.location) as db:
        for n, (event_id, data) in enumerate(rows):
            db.execute(
                "INSERT INTO webhook_events (id, client, type, data, created_at, next_attempt_at)"
                " VALUES (%s, 'client-a', 'sms.sent', %s, %s, 0)",
                (event_id, data, 1000 + n),
            )
    assert pg.migrate(pg_engine.location) == len(MIGRATIONS) - len(before)
    store = pg_engine.outbox()
    assert [event["id"] for event in store.about("g1")] == ["e1", "e5"]
    assert store.about("7") == []
