"""The `postgresql://` rate-limit storage (app/state/postgres/limits.py), against a real PostgreSQL.

Exact counts however many processes hit one key at once; windows that end (by the server's clock) and
are swept, one sweeper at a time; behind `fallback+postgresql://` (what SMSBRIDGE_RATELIMIT_STORAGE
=postgresql://... becomes), a stopped server is counted around in memory and counted in again once back.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from threading import Barrier

import psycopg
import pytest
from limits.storage import storage_from_string

from app.config import Settings
from app.state.limits import FallbackStorage, limiter_storage
from app.state.postgres.limits import SWEEP_LOCK, PostgresStorage
from tests.harness.postgres import PostgresServer

PROCESSES = 4
HITS = 150
#: a window no test outlives
LONG = 600
_databases = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def url(server: PostgresServer) -> str:
    return server.create_database(f"limits_{next(_databases)}")


@pytest.fixture
def storage(url: str) -> Iterator[PostgresStorage]:
    made = PostgresStorage(url)
    try:
        yield made
    finally:
        made.close()


def rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as connection:
        return dict(connection.execute("SELECT key, count FROM ratelimit_windows").fetchall())


def test_the_scheme_is_registered_and_what_the_setting_stands_for(url: str) -> None:
    uri, options = limiter_storage(Settings(ratelimit_storage=url))
    assert (uri, options) == ("fallback+" + url, {})
    # Bare, the counts live in the shared state's database, whichever spelling of the scheme names it.
    state_url = url.replace("postgresql://", "postgres://")
    assert limiter_storage(Settings(ratelimit_storage="postgresql://", state_url=state_url)) == (uri, {})
    made = storage_from_string(uri)
    assert isinstance(made, FallbackStorage)
    assert isinstance(made.primary, PostgresStorage)
    try:
        assert made.check() is True
        assert made.incr("k", LONG) == 1
        assert rows(url) == {"k": 1}
    finally:
        made.primary.close()


def test_counts_get_expiry_clear_and_reset(storage: PostgresStorage, url: str) -> None:
    assert storage.get("k") == 0
    assert [storage.incr("k", LONG) for _ in range(3)] == [1, 2, 3]
    assert storage.incr("k", LONG, amount=5) == 8
    assert storage.incr("other", LONG) == 1
    assert storage.get("k") == 8
    fresh = PostgresStorage(url)  # no hit of its own to answer from: reads the table
    try:
        assert fresh.get("k") == 8
        assert time.time() + LONG - 60 < fresh.get_expiry("k") <= time.time() + LONG + 60
        assert fresh.get("never") == 0
    finally:
        fresh.close()
    storage.clear("k")
    assert storage.get("k") == 0
    assert rows(url) == {"other": 1}
    assert storage.reset() == 1
    assert rows(url) == {}
    assert storage.check() is True


def test_a_window_ends_and_the_next_hit_starts_another(storage: PostgresStorage) -> None:
    assert [storage.incr("k", 1) for _ in range(2)] == [1, 2]
    time.sleep(1.2)  # past the window's end: the server's clock has moved on by as much
    assert storage.get("k") == 0
    assert storage.incr("k", 1) == 1


def test_expired_windows_are_swept_by_one_process_at_a_time(storage: PostgresStorage, url: str) -> None:
    storage.incr("short", 1)
    storage.incr("long", LONG)  # the first hit swept (nothing yet) and set the next sweep a minute on
    time.sleep(1.2)
    storage._next_sweep = 0.0  # a minute later
    with psycopg.connect(url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (SWEEP_LOCK,))  # another host sweeps now
        storage.incr("long", LONG)
        assert set(rows(url)) == {"short", "long"}  # this one skipped its turn
    storage._next_sweep = 0.0
    storage.incr("long", LONG)
    assert rows(url) == {"long": 3}


_start: Barrier | None = None


def _ready(barrier: Barrier) -> None:
    global _start
    _start = barrier


def _hit(url: str) -> list[int]:
    """In one of several processes: wait for the others, then hit one key HITS times."""
    storage = PostgresStorage(url)
    try:
        storage.check()  # the pool and its first connection ready before the start
        assert _start is not None
        _start.wait(timeout=60)
        return [storage.incr("shared", LONG) for _ in range(HITS)]
    finally:
        storage.close()


def test_processes_hitting_one_key_at_once_get_exact_counts(url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    with ProcessPoolExecutor(PROCESSES, mp_context=context, initializer=_ready, initargs=(barrier,)) as pool:
        counts = [count for hits in pool.map(_hit, [url] * PROCESSES) for count in hits]
    # Each count handed out once: no two hits read the same count, none was lost.
    assert sorted(counts) == list(range(1, PROCESSES * HITS + 1))
    assert rows(url) == {"shared": PROCESSES * HITS}


def test_a_stopped_server_is_counted_around_in_memory_then_counted_in_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with PostgresServer(tmp_path_factory.mktemp("stopped")) as server:
        url = server.create_database("limits")
        storage = storage_from_string("fallback+" + url)
        assert isinstance(storage, FallbackStorage)
        try:
            assert [storage.incr("k", LONG) for _ in range(3)] == [1, 2, 3]
            server.stop()
            try:
                assert storage.check() is False
                assert storage.incr("k", LONG) == 1  # in this process's memory: limits go on
                assert storage.incr("k", LONG) == 2
            finally:
                server.start()
            deadline = time.monotonic() + 30
            while True:  # tried again about once a second; a connection from before the stop is dropped
                storage.incr("probe", LONG)
                if storage._retry_at is None:
                    break
                assert time.monotonic() < deadline, "the storage never counted in PostgreSQL again"
                time.sleep(0.2)
            assert storage.check() is True
            assert storage.incr("k", LONG) == 4  # the window kept in PostgreSQL goes on
            assert rows(url)["k"] == 4
        finally:
            storage.primary.close()


def test_a_frozen_server_is_counted_around_in_memory_then_counted_in_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SIGSTOP: the port stays open and nothing answers; the count is cut off and memory counts."""
    with PostgresServer(tmp_path_factory.mktemp("frozen")) as server:
        url = server.create_database("limits")
        storage = storage_from_string("fallback+" + url)
        assert isinstance(storage, FallbackStorage)
        try:
            assert storage.incr("k", LONG) == 1
            server.freeze()
            try:
                assert storage.incr("k", LONG) == 1  # in memory, once the watchdog cut the connection
                assert storage.check() is False
            finally:
                server.thaw()
            deadline = time.monotonic() + 30
            while True:
                storage.incr("probe", LONG)
                if storage._retry_at is None:
                    break
                assert time.monotonic() < deadline, "the storage never counted in PostgreSQL again"
                time.sleep(0.2)
            # The hit cut off while frozen had reached the server's socket: thawed, the server may have
            # counted it (once). Rate limiting errs on the side of the count, never loses one.
            assert storage.incr("k", LONG) in (2, 3)
        finally:
            storage.primary.close()
