"""Start-up work done once: database files, WAL mode and schema versions, before gunicorn forks."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import requests

from app import startup
from app.config import Settings
from app.state.sqlite.db import LOCK_FILE, ThreadConnections, UnusableDatabase, prepare, preparing
from app.state.sqlite.mobsms import SqliteMobsmsState as StateStore
from app.state.sqlite.outbox import DATABASE as WEBHOOKS
from app.state.sqlite.outbox import SqliteOutbox as EventStore
from tests.harness.gunicorn import ROOT, Gunicorn

#: the files every worker opens as it loads the app
DATABASE_FILES = ("state.sqlite3", "webhooks.sqlite3", "sandbox.sqlite3")
#: and the rate limits' counts (sqlite://, the default), opened at a worker's first request
ALL_DATABASE_FILES = (*DATABASE_FILES, "ratelimits.sqlite3")

#: state.sqlite3 and webhooks.sqlite3 as the code before schema versions made them (WAL, user_version 0)
OLD_SCHEMAS = {
    "state.sqlite3": """
        CREATE TABLE received_flags (
            account TEXT NOT NULL, guid TEXT NOT NULL, read INTEGER NOT NULL DEFAULT 0, alias TEXT,
            PRIMARY KEY (account, guid)
        );
        CREATE TABLE idempotency (
            scope TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,
            status INTEGER, content_type TEXT, body BLOB, headers TEXT, created_at INTEGER NOT NULL
        );
        CREATE TABLE resends (
            account TEXT NOT NULL, guid TEXT NOT NULL, attempt INTEGER NOT NULL,
            new_guid TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (account, guid, attempt)
        );
        INSERT INTO resends VALUES ('account-1', 'guid-1', 1, 'copy-1', 1764460800);
    """,
    "webhooks.sqlite3": """
        CREATE TABLE webhook_events (
            id TEXT PRIMARY KEY, client TEXT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,
            url TEXT NOT NULL, format TEXT NOT NULL, secret TEXT NOT NULL, created_at REAL NOT NULL,
            next_attempt_at REAL NOT NULL, lease_until REAL NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'pending',
            last_error TEXT NOT NULL DEFAULT '', delivered_at REAL
        );
        CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at);
        INSERT INTO webhook_events (id, client, type, data, url, format, secret, created_at,
            next_attempt_at, status) VALUES ('event-1', 'client-1', 'sms.sent', '{}',
            'http://127.0.0.1:9/hook', 'v2', 'secret', 1.0, 1.0, 'dead');
    """,
}


def pragma(path: Path, name: str) -> object:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


def settings(data_dir: Path) -> Settings:
    return Settings.from_env(environ={}, overrides={"data_dir": data_dir})


def worker_pids(master: int) -> list[int]:
    """Return the pids of the gunicorn master's workers."""
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def wait_for_workers_with_databases_open(server: Gunicorn, count: int, data_dir: Path) -> list[int]:
    """Wait until `count` workers have loaded the app (each holds its stores' databases open)."""
    wanted = {str(data_dir / name) for name in DATABASE_FILES}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()
        ready = []
        for pid in worker_pids(server.process.pid):
            try:
                opened = {str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()}
            except FileNotFoundError:  # a worker that has just gone, or a descriptor just closed
                continue
            if wanted <= opened:
                ready.append(pid)
        if len(ready) == count:
            return ready
        time.sleep(0.05)
    raise AssertionError(f"{count} workers did not load the app:\n" + server.log.read_text())


@contextmanager
def held_write_transactions(paths: list[Path], seconds: float) -> Iterator[None]:
    """Hold a write transaction on each fresh file in `paths`, let go after `seconds` (or at the end)."""
    holders = [sqlite3.connect(path, isolation_level=None, check_same_thread=False) for path in paths]
    for db in holders:
        db.execute("BEGIN IMMEDIATE")
    let_go = threading.Timer(seconds, lambda: [db.rollback() for db in holders])
    let_go.start()
    try:
        yield
    finally:
        let_go.cancel()
        let_go.join()
        for db in holders:
            db.close()


def test_four_workers_boot_while_another_process_holds_a_write_on_the_fresh_databases(tmp_path: Path) -> None:
    """The old failure: each worker set WAL on a file a sibling was writing, and died "database is locked"."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    started = time.monotonic()
    with held_write_transactions([data_dir / name for name in ALL_DATABASE_FILES], seconds=1.5):
        server = Gunicorn({"SMSBRIDGE_DATA_DIR": str(data_dir), "SMSBRIDGE_WORKERS": "4"}, tmp_path / "log")
        try:
            assert time.monotonic() - started >= 1.5  # it waited for the writes to end, it did not fail
            workers = wait_for_workers_with_databases_open(server, 4, data_dir)
            for _ in range(8):
                sent = requests.post(
                    server.url + "/sendsms",
                    data={"apikey": "any-key", "recipients": "+32470000001", "message": "Hi"},
                    timeout=10,
                )
                assert sent.json()["result"]["sent"] == "1"
            assert sorted(worker_pids(server.process.pid)) == sorted(workers)  # none died and came back
        finally:
            output = server.stop()
    assert "Worker failed to boot" not in output
    assert "locked" not in output
    for name in ALL_DATABASE_FILES:
        assert pragma(data_dir / name, "journal_mode") == "wal"


def test_repeated_cold_starts_of_four_workers_all_boot(tmp_path: Path) -> None:
    servers: list[Gunicorn] = []
    try:
        for attempt in range(10):
            data_dir = tmp_path / f"data-{attempt}"
            server = Gunicorn(
                {"SMSBRIDGE_DATA_DIR": str(data_dir), "SMSBRIDGE_WORKERS": "4"}, tmp_path / f"log-{attempt}"
            )
            servers.append(server)
            wait_for_workers_with_databases_open(server, 4, data_dir)
            server.process.terminate()  # it stops (about 2 s) while the next one starts
    finally:
        outputs = [server.stop() for server in servers]
    assert len(outputs) == 10
    for output in outputs:
        assert "Worker failed to boot" not in output
        assert "Traceback" not in output


def test_a_database_made_before_schema_versions_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    for name, schema in OLD_SCHEMAS.items():
        with closing(sqlite3.connect(tmp_path / name, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)
        assert pragma(tmp_path / name, "user_version") == 0

    startup.prepare(settings(tmp_path))

    for database in startup.databases(settings(tmp_path)):
        # Every migration applied, the first (the schema before versions) included.
        assert pragma(tmp_path / database.file_name, "user_version") == len(database.migrations)
        assert pragma(tmp_path / database.file_name, "journal_mode") == "wal"
    with closing(StateStore(tmp_path)) as state:
        assert state.resends("account-1", "guid-1") == ["copy-1"]
        assert state.add_resend("account-1", "guid-1", "copy-2") == 2
    with closing(EventStore(tmp_path)) as events:
        assert [event["id"] for event in events.dead()] == ["event-1"]


def test_a_database_newer_than_the_code_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    startup.prepare(settings(tmp_path))
    with closing(sqlite3.connect(tmp_path / "webhooks.sqlite3")) as db:
        db.execute(f"PRAGMA user_version = {len(WEBHOOKS.migrations) + 1}")
    with pytest.raises(
        UnusableDatabase, match=r"webhooks.sqlite3 has schema version \d+.* made by a newer smsbridge"
    ):
        startup.prepare(settings(tmp_path))
    with pytest.raises(UnusableDatabase, match="made by a newer smsbridge"):
        EventStore(tmp_path)


def test_migrations_apply_in_order_once_each_and_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "things.sqlite3"
    first = ("CREATE TABLE IF NOT EXISTS things (name TEXT NOT NULL);",)
    second = (
        *first,
        "INSERT INTO things (name) VALUES ('a');",
        "ALTER TABLE things ADD COLUMN size INTEGER;",
    )
    with preparing(tmp_path):
        prepare(path, first)
        prepare(path, second)
        prepare(path, second)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT name, size FROM things").fetchall() == [("a", None)]
        assert db.execute("PRAGMA user_version").fetchone() == (3,)

    broken = (*second, "INSERT INTO things (name) VALUES ('b');", "INSERT INTO things (name) VALUES (NULL);")
    with preparing(tmp_path), pytest.raises(sqlite3.IntegrityError):
        prepare(path, broken)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT name FROM things").fetchall() == [("a",)]
        assert db.execute("PRAGMA user_version").fetchone() == (3,)


def test_preparing_waits_for_another_process_s_write_then_gives_up_with_a_clear_message(
    tmp_path: Path,
) -> None:
    path = tmp_path / "things.sqlite3"
    started = time.monotonic()
    with held_write_transactions([path], seconds=0.5), preparing(tmp_path):
        prepare(path, ("CREATE TABLE things (name TEXT);",))
    assert time.monotonic() - started >= 0.5
    assert pragma(path, "journal_mode") == "wal"

    other = tmp_path / "other.sqlite3"
    with (
        held_write_transactions([other], seconds=60),
        preparing(tmp_path),
        pytest.raises(UnusableDatabase, match=r"other\.sqlite3 stayed locked by another process for 0\.3 s"),
    ):
        prepare(other, ("CREATE TABLE things (name TEXT);",), timeout=0.3)


PREPARE_THINGS = """
import sys
from pathlib import Path
from app.state.sqlite.db import prepare, preparing
data_dir = Path(sys.argv[1])
print("ready", flush=True)
with preparing(data_dir):
    prepare(data_dir / "things.sqlite3", (
        "CREATE TABLE IF NOT EXISTS things (name TEXT);",
        "ALTER TABLE things ADD COLUMN size INTEGER;",  # fails if applied twice
    ))
"""


def test_processes_preparing_at_once_take_turns_on_the_lock(tmp_path: Path) -> None:
    with preparing(tmp_path):
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", PREPARE_THINGS, str(tmp_path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        time.sleep(0.3)
        assert [process.poll() for process in processes] == [None] * 3  # waiting for the lock
        assert not (tmp_path / "things.sqlite3").exists()
    outputs = [process.communicate(timeout=30)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 3, outputs
    assert pragma(tmp_path / "things.sqlite3", "user_version") == 2
    with closing(sqlite3.connect(tmp_path / "things.sqlite3")) as db:
        assert [row[1] for row in db.execute("PRAGMA table_info(things)")] == ["name", "size"]


def test_a_store_opened_on_a_directory_nobody_prepared_prepares_its_file(tmp_path: Path) -> None:
    """A command-line tool or a test opens a store directly: it prepares the file itself, under the lock."""
    with closing(ThreadConnections(tmp_path / "counts.sqlite3", "CREATE TABLE windows (key TEXT);")) as first:
        first.get().execute("INSERT INTO windows (key) VALUES ('a')")
        first.get().commit()
    assert pragma(tmp_path / "counts.sqlite3", "user_version") == 1
    assert pragma(tmp_path / "counts.sqlite3", "journal_mode") == "wal"
    # Opened again, it is prepared already: the migration (which would fail now) does not run again.
    with closing(ThreadConnections(tmp_path / "counts.sqlite3", "CREATE TABLE windows (key TEXT);")) as again:
        assert [row["key"] for row in again.get().execute("SELECT key FROM windows")] == ["a"]


def test_the_data_directory_and_its_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    startup.prepare(settings(data_dir))
    with closing(StateStore(data_dir)) as store:
        store.mark_read("account-1", "guid-1")  # a write, so that the -wal and -shm files exist
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in (*ALL_DATABASE_FILES, "state.sqlite3-wal", "state.sqlite3-shm", LOCK_FILE):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
