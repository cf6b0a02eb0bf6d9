"""The throwaway PostgreSQL of tests/harness/postgres.py does what the state tests rely on.

Databases apart from each other; frozen (SIGSTOP on the postmaster and every backend): nothing answers, not
even a query with a statement_timeout, until thawed; stopped: connections refused; started again: the data
is there; closed: nothing left running or on disk but the log.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.harness.postgres import PostgresServer, children_of

# Bounds for waits that must NOT end (a frozen server answering would be the defect): short, as a frozen
# server cannot answer however long one waits; never a bound on how fast anything must be.
FROZEN_WAIT = 1.0
CONNECT_TIMEOUT = 2  # seconds: libpq's (and psycopg's) least


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has no executable any more)."""
    return Path(f"/proc/{pid}/exe").exists()


def query_in_thread(connection: psycopg.Connection[Any], query: str) -> tuple[threading.Thread, list[Any]]:
    """Run `query` on `connection` in a thread; what it returned (or raised) lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(connection.execute(query).fetchone())
        except psycopg.Error as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_databases_are_kept_apart(server: PostgresServer) -> None:
    first, second = server.create_database("first"), server.create_database("second")
    assert first == f"postgresql://postgres@127.0.0.1:{server.port}/first"
    assert second.endswith("/second")
    with psycopg.connect(first) as connection:
        connection.execute("CREATE TABLE notes (body text)")
        connection.execute("INSERT INTO notes VALUES (%s)", ["only in first"])
    with psycopg.connect(first) as connection:
        assert connection.execute("SELECT body FROM notes").fetchall() == [("only in first",)]
    with psycopg.connect(second) as connection, pytest.raises(errors.UndefinedTable):
        connection.execute("SELECT body FROM notes")


def test_a_frozen_server_answers_nothing_until_thawed(server: PostgresServer) -> None:
    # statement_timeout is the server's: a frozen server does not enforce it, the client must bound its wait.
    with server.connect(options="-c statement_timeout=500") as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
        server.freeze()
        try:
            pending, outcome = query_in_thread(connection, "SELECT 2")
            with pytest.raises(psycopg.OperationalError, match="timeout"):
                server.connect(connect_timeout=CONNECT_TIMEOUT).close()
            pending.join(FROZEN_WAIT)
            assert pending.is_alive(), outcome
        finally:
            server.thaw()
        pending.join(30)
        assert outcome == [(2,)]
    with server.connect() as connection:
        assert connection.execute("SELECT 3").fetchone() == (3,)


def test_a_frozen_server_can_be_stopped_and_started(server: PostgresServer) -> None:
    server.freeze()
    server.stop()
    assert server.process is None
    assert not server.frozen
    server.start()
    with server.connect() as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_stopped_server_refuses_connections_and_keeps_its_data(server: PostgresServer) -> None:
    url = server.create_database("kept")
    with psycopg.connect(url) as connection:
        connection.execute("CREATE TABLE notes (body text)")
        connection.execute("INSERT INTO notes VALUES ('kept')")
    assert server.process is not None
    postmaster = server.process.pid
    backends = children_of(postmaster)
    assert backends, "a running cluster has its background processes"
    server.stop()
    try:
        assert not any(alive(pid) for pid in [postmaster, *backends])
        with pytest.raises(psycopg.OperationalError, match="refused"):
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
    finally:
        server.start()
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    server.restart()
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT count(*) FROM notes").fetchone() == (1,)


def test_the_cluster_is_private_and_closing_leaves_only_the_log(tmp_path: Path) -> None:
    with PostgresServer(tmp_path) as server:
        assert server.process is not None
        postmaster = server.process.pid
        # initdb and postgres refuse root: as root the cluster is the `postgres` user's.
        owner = os.stat(f"/proc/{postmaster}").st_uid
        assert owner == (os.stat(server.data).st_uid if os.geteuid() == 0 else os.geteuid())
        assert owner != 0
        assert (server.data / f".s.PGSQL.{server.port}").is_socket()
        with server.connect() as connection:
            assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert connection.execute("SHOW fsync").fetchone() == ("off",)
    assert not alive(postmaster)
    assert not server.data.exists()
    assert "database system is ready to accept connections" in server.log.read_text()
