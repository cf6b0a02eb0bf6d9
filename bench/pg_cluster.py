"""PostgreSQL for the benchmark's shared-state rows: the test harness's throwaway cluster, and its CPU time.

The cluster is tests/harness/postgres.py's `PostgresServer`, imported, not copied: a fresh cluster in a
private temporary directory on a free port of 127.0.0.1 (as the `postgres` user when run as root), with
the harness's settings (fsync and synchronous_commit off, 16 MB of shared buffers), stopped by its
postmaster's PID and removed by `close()`. The harness needs Debian's `postgresql` package and the test
extra (tests/__init__.py imports pytest): `scripts/setup --test` installs both.

    server = start_cluster(workdir)          # a BenchError says what is missing
    url = server.create_database("bench")
    cluster_cpu_s(server)                    # CPU seconds of the postmaster and every backend so far
    server.close()
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    from tests.harness.postgres import PostgresServer

#: what to run when the harness cannot be used here
SETUP_HINT = (
    "scripts/setup --test installs PostgreSQL and the test extra; or leave the PostgreSQL rows out "
    "(-s without rest-keyed-pg and two-hosts-pg)"
)

_TICK = os.sysconf("SC_CLK_TCK")


def start_cluster(directory: Path, max_connections: int = 100) -> PostgresServer:
    """Start a throwaway cluster whose log goes to `directory`; raise RuntimeError saying what is missing."""
    # bench/run runs this file's directory as the script's: the repository's root is not on the path.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from tests.harness.postgres import PostgresServer
    except ModuleNotFoundError as error:
        raise RuntimeError(f"the test harness cannot be imported ({error}): {SETUP_HINT}") from error
    if not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        raise RuntimeError(
            f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): {SETUP_HINT}"
        )
    return PostgresServer(directory, max_connections=max_connections)


def cluster_pids(server: PostgresServer) -> list[int]:
    """Return the postmaster's PID and its running children's (backends, writers, launchers)."""
    if server.process is None:
        return []
    from tests.harness.postgres import children_of

    return [server.process.pid, *children_of(server.process.pid)]


def cluster_cpu_s(server: PostgresServer) -> float:
    """Return the CPU seconds (user and system) the cluster has used so far.

    The postmaster's own time, the time of its children that have exited (the kernel adds a reaped child's
    time to its parent's cutime and cstime: a backend that ends during a run still counts), and the time of
    those still running. Read at two moments, the difference is what the cluster used in between.
    """
    if server.process is None:
        return 0.0
    postmaster, *children = cluster_pids(server)
    ticks = 0
    for pid, reaped_too in ((postmaster, True), *((child, False) for child in children)):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # After the parenthesised command name: utime, stime, cutime, cstime are fields 14 to 17 of stat.
        fields = stat.rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])
        if reaped_too:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK
