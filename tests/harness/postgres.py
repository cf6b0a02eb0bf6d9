"""A real PostgreSQL: a throwaway cluster on a free port of 127.0.0.1, stopped, restarted and frozen at will.

Debian's `postgresql` package must be installed (`scripts/setup --test` installs it); its binaries are taken
from /usr/lib/postgresql/<newest version>/bin, not from PATH (Debian puts only wrappers there). The system
cluster the package may have made (port 5432) is neither used nor touched.

initdb and postgres refuse to run as root: when the tests run as root, both run as the `postgres` system user
the package creates, and the cluster's directory is made theirs. The cluster lives in a fresh private
directory under the system's temporary directory rather than in the one given: pytest's temporary
directories sit under /tmp/pytest-of-root (mode 0700), where the `postgres` user cannot go, and the Unix
socket's path (kept inside the cluster, never in /var/run/postgresql) must stay short. The given directory
holds the server's log, `postgres.log`.

    with PostgresServer(tmp_path) as server:
        url = server.create_database("contract")    # postgresql://postgres@127.0.0.1:PORT/contract
        server.freeze()                              # the postmaster and every backend: SIGSTOP
        server.thaw()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psycopg
from psycopg import sql

from tests.harness.net import free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
USER = "postgres"

# For tests: nothing is kept across a crash of the cluster, so nothing is synced.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "huge_pages": "off",
    "jit": "off",
}

HBA = """\
# Only the cluster's own socket (in its private directory) and 127.0.0.1, without passwords.
local all all trust
host  all all 127.0.0.1/32 trust
"""


def binaries() -> Path:
    """Return the bin directory of the newest PostgreSQL under /usr/lib/postgresql."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    assert found, "PostgreSQL is missing (no /usr/lib/postgresql/*/bin/postgres): run scripts/setup --test"
    return max(found, key=lambda bin_dir: tuple(int(part) for part in bin_dir.parent.name.split(".")))


def children_of(pid: int) -> list[int]:
    """Return the PIDs of the running children of process `pid` (the kernel's list of them)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the postmaster and its children; reap the postmaster and give the children a moment to go."""
    children = children_of(process.pid)  # before the postmaster dies: its children are then re-parented
    _signal_all([process.pid, *children], signal.SIGKILL)
    process.wait()
    # A child that is gone (or a zombie, waiting for its new parent to reap it) has no executable any more.
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(Path(f"/proc/{pid}/exe").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.02)


def _clean_up(running: list[subprocess.Popen[bytes]], data: Path) -> None:
    """Whatever close() did not get to: the server killed, its cluster removed."""
    while running:
        _kill(running.pop())
    shutil.rmtree(data, ignore_errors=True)


class PostgresStartError(RuntimeError):
    """The cluster did not accept connections in time (or its postmaster exited); the log's tail says why."""


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free port of 127.0.0.1 that can be stopped, restarted and frozen.

    Made and started by the constructor (as RedisServer is); close() (or leaving the `with` block) stops it
    and removes the cluster. Only the superuser `postgres` exists, without a password (trust on 127.0.0.1).
    """

    def __init__(self, directory: Path, *, max_connections: int = 100) -> None:
        self.bin = binaries()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "postgres.log"
        self.port = free_port()
        self.max_connections = max_connections
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False
        # As root, the cluster's processes run as `postgres`; otherwise as whoever runs the tests.
        self._owner = pwd.getpwnam(USER) if os.geteuid() == 0 else None
        self.data = Path(tempfile.mkdtemp(prefix="smsbridge-pg-"))
        self._running: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _clean_up, self._running, self.data)
        try:
            if self._owner is not None:
                os.chown(self.data, self._owner.pw_uid, self._owner.pw_gid)
            self._initdb()
            self.start()
        except BaseException:
            self.close()
            raise

    # URLs and databases

    @property
    def url(self) -> str:
        """The URL of the `postgres` database, as the superuser."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
        """A new connection to `database` (the caller closes it: use it in a `with`)."""
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.url_for(database), **kwargs)

    def create_database(self, name: str) -> str:
        """Create the empty database `name` and return its URL: one per test (or module) keeps them apart."""
        with self.connect(autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    # The server's life

    def start(self) -> None:
        """Start the postmaster on its port (the same after a stop) and wait until it accepts connections."""
        assert self.process is None, "PostgreSQL is already running"
        options = {
            **SETTINGS,
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.data),
            "max_connections": str(self.max_connections),
        }
        command = [str(self.bin / "postgres"), "-D", str(self.data)]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        with self.log.open("ab") as log:
            self.process = self._run(command, stdout=log)
        self._running.append(self.process)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                self._forget()
                raise PostgresStartError(f"postgres exited at start:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    self._forget(kill=True)
                    raise PostgresStartError(
                        f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f} s ({error}):\n"
                        f"{self.log_tail()}"
                    ) from error
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: sessions are ended) and wait until every process has exited.

        Its data stays: start() brings it back. A postmaster that does not stop in time is killed.
        """
        if self.process is None:
            return
        self.thaw()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill(self.process)
        self._forget()

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the postmaster, then every backend and background process: its port stays open (the
        kernel still completes TCP handshakes), nothing answers, not even a cancel request."""
        assert self.process is not None, "PostgreSQL is not running"
        self.process.send_signal(signal.SIGSTOP)  # first: a stopped postmaster forks no new backends
        _signal_all(children_of(self.process.pid), signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """Let a frozen cluster run again (nothing happens to one that is not frozen)."""
        if self.process is None or not self.frozen:
            return
        _signal_all(children_of(self.process.pid), signal.SIGCONT)
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        """Stop the cluster and remove its files (the log stays in the given directory)."""
        try:
            self.stop()
        finally:
            self._finalizer()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # Helpers

    def _initdb(self) -> None:
        with self.log.open("ab") as log:
            initdb = self._run(
                [
                    str(self.bin / "initdb"),
                    "--pgdata",
                    str(self.data),
                    "--username",
                    USER,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                stdout=log,
            )
            try:
                code = initdb.wait(timeout=120)
            except subprocess.TimeoutExpired:
                initdb.kill()
                initdb.wait()
                raise
        if code != 0:
            raise PostgresStartError(f"initdb failed ({code}):\n{self.log_tail()}")
        hba = self.data / "pg_hba.conf"
        hba.write_text(HBA)
        if self._owner is not None:
            os.chown(hba, self._owner.pw_uid, self._owner.pw_gid)

    def _run(self, command: list[str], stdout: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start `command` in the cluster's directory, as `postgres` when we are root."""
        owner = self._owner
        return subprocess.Popen(
            command,
            cwd=self.data,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
        )

    def _forget(self, *, kill: bool = False) -> None:
        """Drop the (exited, or with `kill` killed) postmaster."""
        assert self.process is not None
        if kill:
            _kill(self.process)
        self.process.wait()
        self._running.remove(self.process)
        self.process = None
        self.frozen = False
