"""Benchmark SMS sends through the bridge against a bare Flask route and against the fake upstream direct.

Run it with `bench/run` (which sets up the virtualenv and wrk first). It starts, all on 127.0.0.1:

- the fake mobsms (`bench/fake_upstream.py`), one per upstream latency the chosen scenarios need;
- the bridge under gunicorn with the repo's `gunicorn.conf.py`, one per fake, backend `mobsms`;
- `bench/bare_app.py`, one JSON route answering what the bridge answers, under the same gunicorn
  command and environment: what gunicorn and Flask alone cost, so that the ratio shows the bridge's own.

then, for each scenario: one request checked by hand, a wrk warm-up, the measured wrk run, the checks
(no wrk error, the fake received one send per answered request, one more request still succeeds), and
at the end one table. Every process it started is stopped on the way out, whatever the way out is.

Columns: requests/s and latency percentiles from wrk; "ratio" divides by the req/s of the row named in
"vs" (bare for the fast sends, direct-slow for the 100 ms one); "conns/worker" and "cores/worker" show
how wrk's kept-alive connections (counted halfway) and the CPU were spread over gunicorn's workers, and
"cpu us/req" the workers' CPU time per answered request; "other cpu" is how busy processes outside the
benchmark kept the machine, in share of one core; "targets" says whether the row met the issue's
targets (`Scenario.min_ratio`, `max_p99_over_baseline_ms`, `max_cpu_us`), or what missed.

The `memory` measure (chosen with -s like a row, run after the rows) reads the fast bridge's resident
memory (VmRSS, summed over its workers; the master's apart) after a warm-up, then after
--memory-requests more requests sent by wrk runs alternating REST and SOAP, checked like a row; it is
printed as its own table, with its target (growth under 10%).

Targets are reported and summed up in one line; they never change the exit status, which only the checks
set (1 when one failed). The JSON record of each run goes to bench/results/ (not committed).

Keyed rows (`Scenario.keyed`) give every request its own Idempotency-Key (request.lua numbers them per
wrk thread under a prefix unique to the run), so each is a first send that claims and stores its key.
A row with `held_keys` first adds that many held keys (answered, within their TTL, as a day of keyed
sends leaves them) to the bridge's idempotency table, then measures: its ratio against the same row on
a table holding only its own keys shows whether a send slows as the table grows.

Rows on PostgreSQL (target "bridge-pg") run bridges whose state is in one throwaway cluster on 127.0.0.1
(bench/pg_cluster.py: tests/harness/postgres.py's, started before the first row when any is chosen,
stopped by its postmaster's PID after every bridge): SMSBRIDGE_STATE_URL=postgresql://..., one
SMSBRIDGE_TOKEN_SECRET for all, a data directory each. `rest-keyed-pg` is `rest-keyed` on it (its ratio:
PostgreSQL against SQLite); `two-hosts-pg` (`Scenario.hosts`) runs two such bridges, each a gunicorn
master with the same workers, and deals wrk's threads out to them (request.lua's BENCH_HOSTS; the same
connections in all, half on each). Its ratio against `rest-keyed-pg` is what one more host adds, a lower
bound here: both bridges share the machine's cores with wrk, the fake and PostgreSQL. "pg cpu us/req" is
the cluster's CPU time per answered request (the postmaster, its backends and background processes,
those that exited during the run included), beside the bridges' workers' in "cpu us/req".

A scenario is one row: add one to `SCENARIOS` (and a service to `Stack` if it needs a new server) to
add a row; columns come from `COLUMNS`.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar
from urllib.parse import quote, urlencode

import pg_cluster  # bench/pg_cluster.py: bench/ is the script's directory, first on sys.path

if TYPE_CHECKING:
    from tests.harness.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
#: the virtualenv bench/run started this in (scripts/setup chooses it)
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

#: what gunicorn serves: the bridge, and the bare Flask route it is compared with
BRIDGE_APP = "wsgi:app"
BARE_APP = "bench.bare_app:app"

#: an upstream port for an environment whose upstream is never called (port 1 is reserved: tcpmux)
UNUSED_PORT = 1

API_KEY = "bench-key-1"
RECIPIENT = "+32470000001"
MESSAGE = "Your verification code is 482913. It expires in 10 minutes."
SOAP_NS = "urn:smsbridge:sendsms"

T = TypeVar("T")

#: cores used by processes outside the benchmark above which a row is flagged as disturbed
OTHER_CPU_WARNING = 0.10

#: a row is flagged when its least busy bridge worker used less than this share of the busiest one's CPU
UNEVEN_WORKER_SHARE = 0.6

#: gunicorn settings worth showing next to the numbers
SHOWN_GUNICORN_SETTINGS = (
    "workers",
    "worker_class",
    "threads",
    "worker_connections",
    "keepalive",
    "timeout",
    "backlog",
    "preload_app",
    "accesslog",
    "max_requests",
)


# ---------------------------------------------------------------------------------------------------
# What is sent and what counts as success


@dataclass(frozen=True)
class Probe:
    """One HTTP answer, as a check sees it."""

    status: int
    body: bytes


def bridge_rest_sent(answer: Probe) -> str | None:
    """Return what is wrong with a REST answer of the bridge, or None if it says the SMS was sent."""
    if answer.status != 200:
        return f"HTTP {answer.status}: {answer.body[:300]!r}"
    try:
        result = json.loads(answer.body)["result"]
    except (ValueError, KeyError, TypeError):
        return f"not a JSON result: {answer.body[:300]!r}"
    if result.get("sent") != "1" or result.get("error") != 0:
        return f"result is not a success: {result!r}"
    return None


_SOAP_SENT = re.compile(rb"<(?:[\w.-]+:)?sent>1</(?:[\w.-]+:)?sent>")


def bridge_soap_sent(answer: Probe) -> str | None:
    """Return what is wrong with a SOAP answer of the bridge, or None if it says the SMS was sent."""
    if answer.status != 200 or b"Fault>" in answer.body:
        return f"HTTP {answer.status}: {answer.body[:300]!r}"
    if not _SOAP_SENT.search(answer.body):
        return f"no <sent>1</sent> in the answer: {answer.body[:300]!r}"
    return None


def upstream_queued(answer: Probe) -> str | None:
    """Return what is wrong with a mobsms answer, or None if it queued the SMS."""
    if answer.status != 201:
        return f"HTTP {answer.status}: {answer.body[:300]!r}"
    try:
        document = json.loads(answer.body)
    except ValueError:
        return f"not JSON: {answer.body[:300]!r}"
    if document.get("success") is not True or not document.get("data", {}).get("message_id"):
        return f"not a queued SMS: {document!r}"
    return None


@dataclass(frozen=True)
class Scenario:
    """One row of the table: a request wrk repeats against one of the services `Stack` runs."""

    name: str
    #: the service that answers: "bridge", "bridge-pg" (state on PostgreSQL), "bare" or "upstream"
    #: (see `Stack.serving_all`)
    target: str
    method: str
    path: str
    check: Callable[[Probe], str | None]
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    #: the fake upstream's delay; scenarios with different delays get their own fake and bridge
    upstream_latency_ms: float = 0.0
    #: overrides --connections for this row
    connections: int | None = None
    #: whether every answered request must have reached the fake exactly once (False: no fake is involved)
    one_send_per_request: bool = True
    #: the row the req/s ratio is taken against, or None for a row that is itself a baseline
    baseline: str | None = None
    # The targets for this row, if any: checked after the run, reported, never failing it.
    #: the least req/s ratio against `baseline`
    min_ratio: float | None = None
    #: the most this row's p99 may exceed `baseline`'s p99, in milliseconds
    max_p99_over_baseline_ms: float | None = None
    #: the most CPU time the serving workers may spend per answered request, in microseconds
    max_cpu_us: float | None = None
    #: every request carries an Idempotency-Key of its own (a first send, claimed and stored)
    keyed: bool = False
    #: held keys added to the bridge's idempotency table before the row is measured
    held_keys: int = 0
    #: bridges (gunicorn masters, each with its data directory) sharing the load: "bridge-pg" only
    hosts: int = 1


SOAP_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    f'xmlns:tns="{SOAP_NS}"><soapenv:Body><tns:sendSms>'
    f"<tns:recipients>{RECIPIENT}</tns:recipients>"
    f"<tns:message>{MESSAGE}</tns:message>"
    f"<tns:apikey>{API_KEY}</tns:apikey>"
    "</tns:sendSms></soapenv:Body></soapenv:Envelope>"
).encode()

SEND_FIELDS = {"apikey": API_KEY, "recipients": RECIPIENT, "message": MESSAGE}

REST_GET = Scenario(
    name="rest-get",
    target="bridge",
    method="GET",
    path="/sendsms/?" + urlencode(SEND_FIELDS, quote_via=quote),
    check=bridge_rest_sent,
    baseline="bare",
    min_ratio=0.6,
    max_cpu_us=500,
)
#: the same request answered by a bare Flask route under the same gunicorn: what gunicorn and Flask cost.
#: It answers the JSON the bridge answers, so the same check applies.
BARE = replace(
    REST_GET,
    name="bare",
    target="bare",
    one_send_per_request=False,
    baseline=None,
    min_ratio=None,
    max_cpu_us=None,
)
SOAP = Scenario(
    name="soap",
    target="bridge",
    method="POST",
    path="/sendsms/soap/",
    body=SOAP_ENVELOPE,
    headers=(("Content-Type", "text/xml; charset=utf-8"), ("SOAPAction", '"sendSms"')),
    check=bridge_soap_sent,
    baseline="bare",
    min_ratio=0.4,
    max_cpu_us=800,
)
#: the same SMS sent straight to the fake upstream, as the bridge itself sends it
DIRECT = Scenario(
    name="direct",
    target="upstream",
    method="POST",
    path="/api/sms",
    body=json.dumps({"message": MESSAGE, "recipient_number": RECIPIENT}).encode(),
    headers=(
        ("Authorization", f"Bearer {API_KEY}"),
        ("Content-Type", "application/json; charset=utf-8"),
        ("Accept", "application/json"),
    ),
    check=upstream_queued,
)

REST_POST = replace(
    REST_GET,
    name="rest-post",
    method="POST",
    path="/sendsms/",
    body=urlencode(SEND_FIELDS).encode(),
    headers=(("Content-Type", "application/x-www-form-urlencoded"),),
)
#: POST sends, each with a key of its own, on a table holding only the keys of this row (and those before)
REST_KEYED = replace(
    REST_POST, name="rest-keyed", keyed=True, baseline="rest-post", min_ratio=None, max_cpu_us=None
)
#: the issue's measure: as many held keys as a busy day leaves, then the same keyed sends
HELD_KEYS = 100_000
#: the target of the rows whose bridges keep their state on the run's PostgreSQL cluster
PG_TARGET = "bridge-pg"
#: keyed sends by a bridge whose state is on PostgreSQL (one cluster on 127.0.0.1, started by the run)
REST_KEYED_PG = replace(REST_KEYED, name="rest-keyed-pg", target=PG_TARGET, baseline="rest-keyed")
#: the row of two bridges sharing that PostgreSQL; its ratio is what one more host adds
TWO_HOSTS_PG = "two-hosts-pg"

SCENARIOS: tuple[Scenario, ...] = (
    BARE,
    REST_GET,
    REST_POST,
    SOAP,
    # Context for the rows above: how fast the fake answers the bridge's own request without the bridge.
    DIRECT,
    # A real gateway answers in 100 ms to 2 s: throughput is then bounded by sends in flight.
    replace(
        REST_GET,
        name="rest-slow",
        upstream_latency_ms=100.0,
        connections=200,
        baseline="direct-slow",
        min_ratio=0.8,
        max_p99_over_baseline_ms=50,
        max_cpu_us=None,
    ),
    replace(DIRECT, name="direct-slow", upstream_latency_ms=100.0, connections=200),
    REST_KEYED,
    # A keyed send must not slow down as held keys pile up (a full scan per send did: 3.8 ms to 6.9 ms).
    replace(REST_KEYED, name="rest-keyed-100k", held_keys=HELD_KEYS, baseline="rest-keyed", min_ratio=0.9),
    # The same keyed sends with the state on PostgreSQL (SMSBRIDGE_STATE_URL), against SQLite's.
    REST_KEYED_PG,
    # Two bridges on that PostgreSQL, wrk's threads split between them: what one more host adds.
    replace(REST_KEYED_PG, name=TWO_HOSTS_PG, hosts=2, baseline=REST_KEYED_PG.name),
)

#: not a row of the table but its own measure (the bridge's resident memory), chosen with -s like a row
MEMORY = "memory"

#: the issue's target for the memory measure: resident memory grows by less than this share
MEMORY_MAX_GROWTH = 0.10

#: the longest wrk run of the memory measure, so that its REST and SOAP runs alternate
MEMORY_CHUNK_S = 10


# ---------------------------------------------------------------------------------------------------
# Processes


class BenchError(RuntimeError):
    """The benchmark could not run as asked; the message says why."""


class Service:
    """A process this benchmark started, in its own process group, stopped with everything it forked."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
        try:
            if self.alive():
                _signal_group(self.pid, signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=grace)
            # The group may outlive its leader (a worker still finishing): kill the rest.
            _signal_group(self.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        finally:
            self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:])


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child if the benchmark dies without stopping it (SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def children(pid: int) -> list[int]:
    """Return the pids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the parent pid is second after it.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def http_call(
    port: int, method: str, path: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
) -> Probe:
    """Make one request on a fresh connection and return its answer."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request(method, path, body=body or None, headers=dict(headers))
        response = connection.getresponse()
        return Probe(response.status, response.read())
    finally:
        connection.close()


def wait_until(ready: Callable[[], bool], service: Service, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise BenchError(f"{service.name} exited while starting; its log ends:\n{service.log_tail()}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(
        f"{service.name} was not {what} after {timeout:g} s; its log ends:\n{service.log_tail()}"
    )


class Stack:
    """The servers the scenarios talk to, started when a scenario first needs them."""

    def __init__(self, exits: ExitStack, workdir: Path, gunicorn_args: list[str], workers: int) -> None:
        self.exits = exits
        self.workdir = workdir
        self.gunicorn_args = gunicorn_args
        self.worker_count = workers
        self.upstreams: dict[float, tuple[Service, int]] = {}
        self.bridges: dict[float, tuple[Service, int]] = {}
        self.bare_app: tuple[Service, int] | None = None
        #: the data directory of each gunicorn started, by its service's name
        self.data_dirs: dict[str, Path] = {}
        #: the PostgreSQL cluster of the shared-state rows, and the bridges keeping their state there
        self.postgres: PostgresServer | None = None
        self.state_url = ""
        self.pg_bridges: list[tuple[Service, int]] = []
        #: one secret for every bridge on the shared state, as SMSBRIDGE_TOKEN_SECRET must be
        self.token_secret = os.urandom(32).hex()

    def serving(self, scenario: Scenario) -> tuple[Service, int]:
        """Return the (first) service and port that answer `scenario`, starting them if needed."""
        return self.serving_all(scenario)[0]

    def serving_all(self, scenario: Scenario) -> list[tuple[Service, int]]:
        """Return the services and ports that answer `scenario` (several for `hosts`), starting them."""
        if scenario.hosts > 1 and scenario.target != PG_TARGET:
            raise BenchError(f"scenario {scenario.name}: only {PG_TARGET} rows run on several hosts")
        if scenario.target == "upstream":
            return [self.upstream(scenario.upstream_latency_ms)]
        if scenario.target == "bridge":
            return [self.bridge(scenario.upstream_latency_ms)]
        if scenario.target == PG_TARGET:
            return [self.pg_bridge(scenario.upstream_latency_ms, host) for host in range(scenario.hosts)]
        if scenario.target == "bare":
            return [self.bare()]
        raise BenchError(f"scenario {scenario.name}: no service named {scenario.target!r}")

    def services(self) -> list[Service]:
        """Return every service started so far (not the PostgreSQL cluster: see `postgres_pids`)."""
        started = [*self.bridges.values(), *self.pg_bridges, *self.upstreams.values()]
        if self.bare_app is not None:
            started.append(self.bare_app)
        return [service for service, _ in started]

    def shared_state(self) -> str:
        """Start the PostgreSQL cluster once, with an empty database; return the database's URL."""
        if self.postgres is None:
            try:
                server = pg_cluster.start_cluster(self.workdir / "postgres")
            except RuntimeError as error:  # the harness's PostgresStartError too
                raise BenchError(f"PostgreSQL: {error}") from error
            # Stopped (by its postmaster's PID) after every bridge, whose exits were registered later.
            self.exits.callback(server.close)
            self.postgres = server
            self.state_url = server.create_database("bench")
        return self.state_url

    def pg_bridge(self, latency_ms: float, host: int) -> tuple[Service, int]:
        """Return bridge number `host` (from 0) on the shared state, starting it and those before it."""
        while len(self.pg_bridges) <= host:
            state_url = self.shared_state()
            _, upstream_port = self.upstream(latency_ms)
            number = len(self.pg_bridges) + 1
            self.pg_bridges.append(
                self.gunicorn(
                    f"bridge {number} on PostgreSQL ({latency_ms:g}ms upstream)",
                    BRIDGE_APP,
                    f"bridge-pg{number}-{latency_ms:g}ms",
                    upstream_port,
                    "/healthz",
                    {"SMSBRIDGE_STATE_URL": state_url, "SMSBRIDGE_TOKEN_SECRET": self.token_secret},
                )
            )
        return self.pg_bridges[host]

    def postgres_pids(self) -> list[int]:
        """Return the PostgreSQL cluster's running processes, if it was started."""
        return pg_cluster.cluster_pids(self.postgres) if self.postgres is not None else []

    def postgres_cpu_s(self) -> float:
        """Return the CPU seconds the PostgreSQL cluster has used so far (0 if it was never started)."""
        return pg_cluster.cluster_cpu_s(self.postgres) if self.postgres is not None else 0.0

    def upstream(self, latency_ms: float) -> tuple[Service, int]:
        if latency_ms not in self.upstreams:
            tag = f"{latency_ms:g}ms"
            service = Service(
                f"fake upstream ({tag})",
                [
                    sys.executable,
                    str(BENCH / "fake_upstream.py"),
                    "--port",
                    "0",
                    "--latency-ms",
                    str(latency_ms),
                ],
                self.workdir / f"upstream-{tag}.log",
            )
            self.exits.callback(service.stop, 5.0)
            port: list[int] = []

            def listening() -> bool:
                match = re.search(rb"listening on [\d.]+:(\d+)", service.log_path.read_bytes())
                if match:
                    port.append(int(match.group(1)))
                return bool(match)

            wait_until(listening, service, 10, "listening")
            self.upstreams[latency_ms] = (service, port[0])
        return self.upstreams[latency_ms]

    def bridge(self, latency_ms: float) -> tuple[Service, int]:
        if latency_ms not in self.bridges:
            _, upstream_port = self.upstream(latency_ms)
            tag = f"{latency_ms:g}ms"
            self.bridges[latency_ms] = self.gunicorn(
                f"bridge ({tag} upstream)", BRIDGE_APP, f"bridge-{tag}", upstream_port, "/healthz"
            )
        return self.bridges[latency_ms]

    def bare(self) -> tuple[Service, int]:
        if self.bare_app is None:
            # The bare app never calls the upstream: the bridge's environment only makes gunicorn.conf.py
            # load the same settings (workers, threads) as for the bridge.
            self.bare_app = self.gunicorn("bare Flask app", BARE_APP, "bare", UNUSED_PORT, "/sendsms/")
        return self.bare_app

    def gunicorn(
        self,
        name: str,
        app: str,
        tag: str,
        upstream_port: int,
        ready_path: str,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[Service, int]:
        """Start `app` under gunicorn with the repo's config and the bridge's environment, once it serves."""
        port = free_port()
        data_dir = self.workdir / f"{tag}-data"
        data_dir.mkdir()
        service = Service(
            name,
            gunicorn_argv(self.gunicorn_args, app),
            self.workdir / f"{tag}.log",
            env={**bridge_env(port, upstream_port, data_dir), **(extra_env or {})},
        )
        self.data_dirs[name] = data_dir
        # gunicorn waits up to graceful_timeout for requests in flight; an idle one stops at once.
        self.exits.callback(service.stop, 35.0)
        wait_until(
            lambda: http_call(port, "GET", ready_path).status == 200, service, 30, f"answering {ready_path}"
        )
        wait_until(
            lambda: len(children(service.pid)) >= self.worker_count,
            service,
            30,
            f"running {self.worker_count} workers",
        )
        return service, port

    def workers(self, scenario: Scenario) -> list[int]:
        """Return the gunicorn worker pids behind `scenario` (every host's), or [] when gunicorn does not
        answer it."""
        if scenario.target not in ("bridge", PG_TARGET, "bare"):
            return []
        return [pid for service, _ in self.serving_all(scenario) for pid in sorted(children(service.pid))]

    def pids(self) -> list[int]:
        """Return the pids of every running service, workers included."""
        leaders = [service.pid for service in self.services()]
        return leaders + [child for pid in leaders for child in children(pid)]

    def upstream_sends(self, scenario: Scenario) -> int:
        """Return how many SMS the fake behind `scenario` has queued, once the count stops moving."""
        _, port = self.upstream(scenario.upstream_latency_ms)
        last = -1
        for _ in range(100):
            count = json.loads(http_call(port, "GET", "/_stats").body)["sms"]
            if count == last:
                return count
            last = count
            time.sleep(0.1 + scenario.upstream_latency_ms / 1000)
        raise BenchError("the fake upstream's count of sends did not settle")


def hold_keys(data_dir: Path, count: int) -> int:
    """Add `count` held idempotency keys (answered, fresh) to the bridge's table; return how many it holds.

    Each row is as a keyed send leaves it: a scope and fingerprint (SHA-256 hex), the stored answer
    (a JSON body of the bridge's size) and the claim's times.
    """
    now = time.time()
    body = json.dumps({"result": {"error": 0, "sent": "1", "id": "0" * 36, "note": "queued by mobsms"}})
    tag = os.urandom(8).hex()
    with closing(sqlite3.connect(data_dir / "state.sqlite3", timeout=30)) as db, db:
        db.executemany(
            "INSERT INTO idempotency (scope, fingerprint, done, status, content_type, body, headers,"
            " created_at, holder_until) VALUES (?, ?, 1, 200, 'application/json', ?, '[]', ?, ?)",
            ((f"{tag}{i:048x}", f"{i:064x}", body.encode(), int(now), now + 11) for i in range(count)),
        )
        (held,) = db.execute("SELECT COUNT(*) FROM idempotency").fetchone()
    return held


def gunicorn_argv(extra: list[str], app: str = BRIDGE_APP) -> list[str]:
    return [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", *extra, app]


def bridge_env(port: int, upstream_port: int, data_dir: Path) -> dict[str, str]:
    """Return the environment of a bridge on `port` in front of the fake on `upstream_port`."""
    env = dict(os.environ)
    env.update(
        SMSBRIDGE_BACKEND="mobsms",
        SMSBRIDGE_MOBSMS_URL=f"http://{HOST}:{upstream_port}",
        SMSBRIDGE_BIND=f"{HOST}:{port}",
        SMSBRIDGE_PUBLIC_URL=f"http://{HOST}:{port}",
        SMSBRIDGE_DATA_DIR=str(data_dir),
        # One key sends the whole load: its limit must not be what is measured (counting it still is).
        SMSBRIDGE_RATE_LIMIT="100000000/minute",
    )
    return env


def gunicorn_settings(extra: list[str], env: dict[str, str]) -> dict[str, str]:
    """Return gunicorn's effective settings for the repo's config, `extra` and `env`."""
    # --print-config loads the app too, so a configuration the bridge refuses shows up here.
    done = subprocess.run(
        [*gunicorn_argv(extra)[:1], "--print-config", *gunicorn_argv(extra)[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(f"    {line}" for line in (done.stdout + done.stderr).splitlines()[-15:])
        raise BenchError(f"gunicorn refuses this configuration (exit {done.returncode}):\n{tail}")
    output = done.stdout
    settings = {}
    for line in output.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            settings[name.strip()] = value.strip()
    return settings


class CpuMeter:
    """Tell how much of the machine's CPU went to processes outside the benchmark during a run.

    The bridge, the fake and wrk share the cores: anything else busy (a test run, a build) takes CPU from
    them and understates their numbers, so each row says how busy the rest of the machine was.
    """

    def __init__(self, stack: Stack, workers: list[int]) -> None:
        self.stack = stack
        self.start = time.monotonic()
        self.machine = _machine_cpu_s()
        self.ours = self._ours()
        self.workers = {pid: _process_cpu_s([pid]) for pid in workers}
        self.postgres = stack.postgres_cpu_s()

    def _ours(self) -> float:
        children_usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
        self_usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            _process_cpu_s(self.stack.pids())
            + self.stack.postgres_cpu_s()
            + children_usage.ru_utime
            + children_usage.ru_stime
            + self_usage.ru_utime
            + self_usage.ru_stime
        )

    def others(self) -> float:
        """Return the cores used by other processes since the meter started, on average."""
        elapsed = time.monotonic() - self.start
        used = (_machine_cpu_s() - self.machine) - (self._ours() - self.ours)
        return max(used, 0.0) / elapsed

    def worker_cores(self) -> list[float]:
        """Return the cores each bridge worker used since the meter started, on average."""
        elapsed = time.monotonic() - self.start
        return [(_process_cpu_s([pid]) - start) / elapsed for pid, start in self.workers.items()]

    def postgres_cores(self) -> float | None:
        """Return the cores the PostgreSQL cluster used since the meter started, or None without one."""
        if self.stack.postgres is None:
            return None
        return (self.stack.postgres_cpu_s() - self.postgres) / (time.monotonic() - self.start)


def connections_per_process(pids: list[int], ports: Sequence[int]) -> list[int]:
    """Return how many established TCP connections to one of local `ports` each of `pids` holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rpartition(":")[2], 16), fields[3], fields[9]
        if local_port in ports and state == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{inode}]")
    counts = []
    for pid in pids:
        count = 0
        with suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):
                    count += os.readlink(fd) in inodes
        counts.append(count)
    return counts


_TICK = os.sysconf("SC_CLK_TCK")


def _machine_cpu_s() -> float:
    """Return the CPU seconds spent in user and system mode by every process since boot."""
    user, nice, system = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]
    return (int(user) + int(nice) + int(system)) / _TICK


def _process_cpu_s(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        after_name = stat.rpartition(")")[2].split()
        ticks += int(after_name[11]) + int(after_name[12])  # utime, stime: fields 14 and 15 of stat
    return ticks / _TICK


# ---------------------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkRun:
    """What one wrk run measured."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(
    scenario: Scenario,
    port: int | Sequence[int],
    workdir: Path,
    seconds: float,
    connections: int,
    threads: int,
    timeout: float,
    midway: Callable[[], None] | None = None,
) -> WrkRun:
    """Run wrk with `scenario`'s request against `port` and return its summary; call `midway` halfway.

    With several ports, wrk's threads are dealt out to them in turn (request.lua's BENCH_HOSTS), each
    thread keeping its connections on its port: the threads are rounded up to a multiple of the ports.
    """
    ports = [port] if isinstance(port, int) else list(port)
    if len(ports) > 1:
        threads = -(-max(threads, len(ports)) // len(ports)) * len(ports)
        if connections < threads:
            raise BenchError(
                f"{scenario.name}: {connections} connections cannot be shared by {threads} threads"
            )
    body_file = workdir / f"{scenario.name}.body"
    body_file.write_bytes(scenario.body)
    env = dict(os.environ)
    env.update(
        BENCH_METHOD=scenario.method,
        BENCH_BODY_FILE=str(body_file) if scenario.body else "",
        BENCH_HEADERS="\n".join(f"{name}: {value}" for name, value in scenario.headers),
        # A prefix of its own per wrk run: a warm-up's keys are never the measured run's.
        BENCH_KEY_HEADER="Idempotency-Key" if scenario.keyed else "",
        BENCH_KEY_PREFIX=f"{scenario.name}-{time.time_ns()}",
        BENCH_HOSTS=",".join(f"{HOST}:{p}" for p in ports) if len(ports) > 1 else "",
    )
    argv = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        f"--timeout={timeout:g}s",
        "--latency",
        "-s",
        str(BENCH / "request.lua"),
        f"http://{HOST}:{ports[0]}{scenario.path}",
    ]
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        if midway is not None:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=seconds / 2)
            midway()
        output, _ = process.communicate(timeout=seconds + timeout + 30)
    finally:
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    line = next((x for x in output.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if process.returncode != 0 or line is None:
        raise BenchError(f"wrk failed for {scenario.name} (exit {process.returncode}):\n{output}")
    summary = json.loads(line.removeprefix("BENCH_RESULT "))
    return WrkRun(
        requests=summary["requests"],
        duration_s=summary["duration_us"] / 1e6,
        errors=summary["errors"],
        latency_ms={name: us / 1000 for name, us in summary["latency_us"].items()},
        output=output,
    )


# ---------------------------------------------------------------------------------------------------
# Rows and the table


@dataclass(frozen=True)
class Verdict:
    """One of the issue's targets, as a measure met it or not."""

    #: what was measured against what was wanted, e.g. "ratio 0.310<0.6"
    text: str
    #: None when it could not be judged (its baseline row was not run, or the run failed)
    met: bool | None


@dataclass
class Row:
    """One scenario's measurements and the problems its checks found."""

    scenario: Scenario
    connections: int
    run: WrkRun | None = None
    upstream_sends: int | None = None
    problems: list[str] = field(default_factory=list)
    ratio: float | None = None
    #: the scenario's targets, judged once every row is measured
    verdicts: list[Verdict] = field(default_factory=list)
    #: cores used on average by processes outside the benchmark during the measured run
    other_cores: float | None = None
    #: per gunicorn worker: the connections it held halfway through the run, and the cores it used
    worker_connections: list[int] = field(default_factory=list)
    worker_cores: list[float] = field(default_factory=list)
    #: the keys the idempotency table held when the measure began (rows with `held_keys`)
    held_keys: int | None = None
    #: cores the PostgreSQL cluster used on average during the measured run (rows on PostgreSQL)
    postgres_cores: float | None = None


def cpu_us_per_request(row: Row) -> float | None:
    """Return the gunicorn workers' CPU time per answered request, in microseconds."""
    if not row.worker_cores or not row.run or not row.run.rps:
        return None
    return sum(row.worker_cores) / row.run.rps * 1e6


def postgres_us_per_request(row: Row) -> float | None:
    """Return the PostgreSQL cluster's CPU time per answered request, in microseconds (rows on it)."""
    if row.postgres_cores is None or not row.run or not row.run.rps:
        return None
    return row.postgres_cores / row.run.rps * 1e6


def judge(row: Row, base: Row | None) -> list[Verdict]:
    """Return the verdicts on `row`'s targets; `base` is its baseline row, if it was run."""
    scenario = row.scenario
    verdicts = []
    if scenario.min_ratio is not None:
        if row.ratio is None:
            verdicts.append(Verdict(f"ratio ? (no {scenario.baseline} run)", None))
        else:
            met = row.ratio >= scenario.min_ratio
            verdicts.append(
                Verdict(f"ratio {row.ratio:.3f}{'>=' if met else '<'}{scenario.min_ratio:g}", met)
            )
    if scenario.max_p99_over_baseline_ms is not None:
        if not (row.run and base and base.run):
            verdicts.append(Verdict(f"p99 ? (no {scenario.baseline} run)", None))
        else:
            over = row.run.latency_ms["p99"] - base.run.latency_ms["p99"]
            limit = scenario.max_p99_over_baseline_ms
            met = over <= limit
            verdicts.append(Verdict(f"p99 {over:+.1f}{'<=' if met else '>'}{limit:+g}ms", met))
    if scenario.max_cpu_us is not None:
        cpu = cpu_us_per_request(row)
        if cpu is None:
            verdicts.append(Verdict("cpu ?", None))
        else:
            met = cpu <= scenario.max_cpu_us
            verdicts.append(Verdict(f"cpu {cpu:,.0f}{'<=' if met else '>'}{scenario.max_cpu_us:g}us", met))
    return verdicts


def targets_cell(verdicts: list[Verdict]) -> str:
    """Return "met" when every target is, else what missed or could not be judged."""
    if not verdicts:
        return "-"
    if all(verdict.met for verdict in verdicts):
        return "met"
    return "; ".join(verdict.text for verdict in verdicts if not verdict.met)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


#: the table's columns: header, then the cell of a row
COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("scenario", lambda r: r.scenario.name),
    ("requests/s", lambda r: _number(r.run and r.run.rps, 0)),
    ("p50 ms", lambda r: _number(r.run and r.run.latency_ms["p50"], 2)),
    ("p99 ms", lambda r: _number(r.run and r.run.latency_ms["p99"], 2)),
    ("ratio", lambda r: _number(r.ratio, 3)),
    ("vs", lambda r: r.scenario.baseline or "-"),
    ("conns", lambda r: str(r.connections)),
    ("conns/worker", lambda r: "/".join(map(str, r.worker_connections)) or "-"),
    ("cores/worker", lambda r: "/".join(f"{c:.2f}" for c in r.worker_cores) or "-"),
    ("cpu us/req", lambda r: _number(cpu_us_per_request(r), 0)),
    ("pg cpu us/req", lambda r: _number(postgres_us_per_request(r), 0)),
    ("held keys", lambda r: "-" if r.held_keys is None else f"{r.held_keys:,}"),
    ("checks", lambda r: "FAIL" if r.problems else "ok"),
    ("other cpu", lambda r: "-" if r.other_cores is None else f"{r.other_cores:.0%}"),
    ("targets", lambda r: targets_cell(r.verdicts)),
)


@dataclass
class MemoryRow:
    """The bridge's resident memory after a warm-up and after many more requests, REST and SOAP."""

    connections: int
    #: requests answered after the warm-up, as wrk counted them, and in how many wrk runs
    requests: int = 0
    runs: int = 0
    seconds: float = 0.0
    upstream_sends: int | None = None
    #: VmRSS in KiB after the warm-up and at the end: per worker, and of gunicorn's master
    workers_before_kib: list[int] = field(default_factory=list)
    workers_after_kib: list[int] = field(default_factory=list)
    master_before_kib: int | None = None
    master_after_kib: int | None = None
    problems: list[str] = field(default_factory=list)
    verdict: Verdict | None = None

    @property
    def growth(self) -> float | None:
        """Return how much the workers' summed resident memory grew, as a share of where it started."""
        if not self.workers_before_kib or not self.workers_after_kib:
            return None
        return sum(self.workers_after_kib) / sum(self.workers_before_kib) - 1


def _mib(kib: list[int] | int | None) -> str:
    if kib is None or kib == []:
        return "-"
    return f"{(sum(kib) if isinstance(kib, list) else kib) / 1024:,.1f}"


MEMORY_COLUMNS: tuple[tuple[str, Callable[[MemoryRow], str]], ...] = (
    ("memory", lambda m: "rest-get+soap"),
    ("requests", lambda m: f"{m.requests:,}"),
    ("wrk runs", lambda m: str(m.runs)),
    ("conns", lambda m: str(m.connections)),
    ("workers MiB warm", lambda m: _mib(m.workers_before_kib)),
    ("workers MiB after", lambda m: _mib(m.workers_after_kib)),
    ("growth", lambda m: "-" if m.growth is None else f"{m.growth:+.1%}"),
    ("master MiB warm", lambda m: _mib(m.master_before_kib)),
    ("master MiB after", lambda m: _mib(m.master_after_kib)),
    ("checks", lambda m: "FAIL" if m.problems else "ok"),
    ("target", lambda m: "-" if m.verdict is None else "met" if m.verdict.met else m.verdict.text),
)


def judge_memory(memory: MemoryRow) -> Verdict:
    if memory.growth is None:
        return Verdict("growth ?", None)
    met = memory.growth < MEMORY_MAX_GROWTH
    return Verdict(f"growth {memory.growth:+.1%}{'<' if met else '>='}{MEMORY_MAX_GROWTH:.0%}", met)


def table(rows: Sequence[T], columns: Sequence[tuple[str, Callable[[T], str]]]) -> str:
    """Return `rows` as a text table: the first column left-aligned, the others right-aligned."""
    cells = [[header for header, _ in columns]] + [[cell(row) for _, cell in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(cells):
        lines.append(
            " | ".join(
                text.ljust(width) if i == 0 else text.rjust(width)
                for i, (text, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("-+-".join("-" * width for width in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The run


def check_once(scenario: Scenario, port: int) -> str | None:
    """Send `scenario`'s request once and return what is wrong with its answer, or None."""
    headers = scenario.headers
    if scenario.keyed:
        headers = (*headers, ("Idempotency-Key", f"check-{scenario.name}-{time.time_ns()}"))
    return scenario.check(http_call(port, scenario.method, scenario.path, scenario.body, headers))


def measure(scenario: Scenario, stack: Stack, args: argparse.Namespace, workdir: Path) -> Row:
    """Check one request, warm up, measure, and check what the measured run did."""
    connections = scenario.connections or args.connections
    row = Row(scenario, connections)
    served = stack.serving_all(scenario)
    service, _ = served[0]
    ports = [port for _, port in served]
    if scenario.held_keys:
        row.held_keys = hold_keys(stack.data_dirs[service.name], scenario.held_keys)

    # Every host answers on its own before the run and after it.
    problems = [(port, check_once(scenario, port)) for port in ports]
    row.problems.extend(
        f"the request before the run failed{_on(port, ports)}: {p}" for port, p in problems if p
    )
    if row.problems:
        return row
    if args.warmup > 0:
        run_wrk(scenario, ports, workdir, args.warmup, connections, args.threads, args.timeout)
    counts_sends = scenario.one_send_per_request
    before = stack.upstream_sends(scenario) if counts_sends else 0
    workers = stack.workers(scenario)
    meter = CpuMeter(stack, workers)

    def count_connections() -> None:
        row.worker_connections = connections_per_process(workers, ports) if workers else []

    row.run = run_wrk(
        scenario, ports, workdir, args.duration, connections, args.threads, args.timeout, count_connections
    )
    row.other_cores = meter.others()
    row.worker_cores = meter.worker_cores()
    row.postgres_cores = meter.postgres_cores() if scenario.target == PG_TARGET else None
    row.problems.extend(wrk_problems(row.run))
    if counts_sends:
        row.upstream_sends = stack.upstream_sends(scenario) - before
        row.problems.extend(send_problems(row.run.requests, row.upstream_sends, connections))
    for port in ports:
        problem = check_once(scenario, port)
        if problem:
            row.problems.append(f"the request after the run failed{_on(port, ports)}: {problem}")
    return row


def _on(port: int, ports: list[int]) -> str:
    """Name the host on `port` when a row has several."""
    return f" on host {ports.index(port) + 1} (port {port})" if len(ports) > 1 else ""


def rss_kib(pid: int) -> int | None:
    """Return the resident memory of `pid` in KiB (VmRSS), or None if it is gone."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def measure_memory(stack: Stack, args: argparse.Namespace, workdir: Path) -> MemoryRow:
    """Warm the fast bridge up, read its memory, send --memory-requests more, read it again.

    wrk runs of at most MEMORY_CHUNK_S alternate REST and SOAP sends, so that both paths are exercised,
    until wrk has counted enough answers; each run is checked as a row is.
    """
    connections = args.connections
    memory = MemoryRow(connections)
    sends = (REST_GET, SOAP)
    service, port = stack.serving(REST_GET)
    for scenario in sends:
        problem = check_once(scenario, port)
        if problem:
            memory.problems.append(f"{scenario.name}: the request before the warm-up failed: {problem}")
            return memory
    # Each kind's answers per second, so that the runs stop close to the count asked for.
    rates: dict[str, float] = {}
    if args.warmup > 0:
        for scenario in sends:
            warm = run_wrk(scenario, port, workdir, args.warmup, connections, args.threads, args.timeout)
            rates[scenario.name] = warm.rps
    # Read memory once the fake's count settles, that is once no request is in flight any more.
    before = stack.upstream_sends(REST_GET)
    workers = stack.workers(REST_GET)
    memory.master_before_kib = rss_kib(service.pid)
    memory.workers_before_kib = [rss_kib(pid) or 0 for pid in workers]
    while memory.requests < args.memory_requests:
        scenario = sends[memory.runs % len(sends)]
        remaining = args.memory_requests - memory.requests
        # wrk takes whole seconds only.
        seconds = round(remaining / rates[scenario.name]) if rates.get(scenario.name) else 1
        seconds = min(max(seconds, 1), MEMORY_CHUNK_S)
        run = run_wrk(scenario, port, workdir, seconds, connections, args.threads, args.timeout)
        memory.runs += 1
        memory.requests += run.requests
        memory.seconds += run.duration_s
        rates[scenario.name] = run.rps
        problems = wrk_problems(run, f"{scenario.name} run {memory.runs}: ")
        memory.problems.extend(problems)
        if problems:
            break
    memory.upstream_sends = stack.upstream_sends(REST_GET) - before
    memory.problems.extend(send_problems(memory.requests, memory.upstream_sends, connections * memory.runs))
    memory.master_after_kib = rss_kib(service.pid)
    memory.workers_after_kib = [rss_kib(pid) or 0 for pid in workers]
    # A worker restarted (max_requests, a crash) starts small again: its growth would mean nothing.
    if sorted(children(service.pid)) != workers:
        memory.problems.append(
            f"the bridge's workers changed during the run: {workers} became {sorted(children(service.pid))}"
        )
    for scenario in sends:
        problem = check_once(scenario, port)
        if problem:
            memory.problems.append(f"{scenario.name}: the request after the run failed: {problem}")
    return memory


def wrk_problems(run: WrkRun, what: str = "") -> list[str]:
    """Return what is wrong with a wrk run on its own: errors counted, or nothing answered."""
    problems = []
    if run.error_count:
        nonzero = {k: v for k, v in run.errors.items() if v}
        problems.append(f"{what}wrk counted errors (status = HTTP 4xx/5xx): {nonzero}")
    if run.requests == 0:
        problems.append(f"{what}no request was answered")
    return problems


def send_problems(answered: int, sends: int, in_flight: int) -> list[str]:
    """Return a problem unless the fake queued one SMS per answered request.

    Up to `in_flight` requests still on their way when wrk stops reach the fake without being counted.
    """
    if answered <= sends <= answered + in_flight:
        return []
    return [f"wrk counted {answered} answers but the fake queued {sends} SMS"]


def targets_summary(rows: list[Row], memory: MemoryRow | None) -> str:
    """Return one line counting the targets met, missed and not judged, naming the ones not met."""
    judged = [(row.scenario.name, verdict) for row in rows for verdict in row.verdicts]
    if memory is not None and memory.verdict is not None:
        judged.append((MEMORY, memory.verdict))
    if not judged:
        return "targets: none among these scenarios"
    met = sum(verdict.met is True for _, verdict in judged)
    missed = [f"{name} {verdict.text}" for name, verdict in judged if verdict.met is False]
    unjudged = [f"{name} {verdict.text}" for name, verdict in judged if verdict.met is None]
    line = f"targets: {met} of {len(judged)} met"
    if missed:
        line += f"; missed: {', '.join(missed)}"
    if unjudged:
        line += f"; not judged: {', '.join(unjudged)}"
    return line + " (targets are reported; only the checks set the exit status)"


def one_more_host(rows: list[Row]) -> str | None:
    """Say what one more host adds, when a row of several bridges ran beside its one-bridge baseline."""
    for row in rows:
        if row.scenario.hosts < 2:
            continue
        cores = len(os.sched_getaffinity(0))
        if row.ratio is None:
            return f"one more host adds: ? ({row.scenario.name} ran without {row.scenario.baseline})"
        return (
            f"one more host adds: {row.ratio:.2f}x ({row.scenario.name} req/s / "
            f"{row.scenario.baseline} req/s); its {row.scenario.hosts} bridges, wrk, the fake and "
            f"PostgreSQL share this machine's {cores} cores, so this is a lower bound: hosts of their own "
            "would each bring their own cores"
        )
    return None


def describe_machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: nproc={len(os.sched_getaffinity(0))} ({cpu}), {platform.system()} {platform.release()}, "
        f"load average {load}\n"
        f"tools:   Python {platform.python_version()}, {wrk_version}, bridge, wrk and fake share the cores"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description=(
            "Measure SMS sends through the bridge (REST, SOAP) against a bare Flask route under the same "
            "gunicorn and against the fake upstream direct, the CPU per request and the bridge's memory "
            "growth; print one table with ratios and the issue's targets (reported, never failing the run)."
        ),
    )
    parser.add_argument("-d", "--duration", type=float, default=10, help="seconds measured per scenario")
    parser.add_argument("-w", "--warmup", type=float, default=3, help="seconds of warm-up per scenario")
    parser.add_argument("-c", "--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("-t", "--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--timeout", type=float, default=5, help="wrk's per-request timeout, seconds")
    names = [s.name for s in SCENARIOS] + [MEMORY]
    parser.add_argument(
        "-s",
        "--scenarios",
        default=",".join(names),
        help=f"comma-separated rows, in order; {MEMORY} runs after them (default: all: {','.join(names)})",
    )
    parser.add_argument(
        "--memory-requests",
        type=int,
        default=100_000,
        metavar="N",
        help=f"requests the {MEMORY} measure sends after its warm-up (default 100000)",
    )
    parser.add_argument(
        "--gunicorn-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra gunicorn argument, after the repo's config (repeatable), e.g. --gunicorn-arg=--workers=4",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=BENCH / "results",
        help="where the JSON record of the run goes (default bench/results)",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(names)}")
    args.chosen = [next(s for s in SCENARIOS if s.name == name) for name in chosen if name != MEMORY]
    args.memory = MEMORY in chosen
    if args.duration <= 0 or args.connections < 1 or args.threads < 1 or args.memory_requests < 1:
        parser.error("--duration, --connections, --threads and --memory-requests must be positive")
    return args


def save(rows: list[Row], memory: MemoryRow | None, args: argparse.Namespace, header: str, text: str) -> Path:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / time.strftime("%Y%m%d-%H%M%S.json")
    record = {
        "header": header,
        "table": text,
        "arguments": {k: str(v) for k, v in vars(args).items() if k not in ("chosen", "memory")},
        "rows": [
            {
                "scenario": row.scenario.name,
                "connections": row.connections,
                "upstream_latency_ms": row.scenario.upstream_latency_ms,
                "requests": row.run and row.run.requests,
                "duration_s": row.run and row.run.duration_s,
                "requests_per_s": row.run and row.run.rps,
                "latency_ms": row.run and row.run.latency_ms,
                "errors": row.run and row.run.errors,
                "upstream_sends": row.upstream_sends,
                "baseline": row.scenario.baseline,
                "ratio": row.ratio,
                "cpu_us_per_request": cpu_us_per_request(row),
                "targets": [{"target": v.text, "met": v.met} for v in row.verdicts],
                "other_cores": row.other_cores,
                "worker_connections": row.worker_connections,
                "worker_cores": row.worker_cores,
                "held_keys": row.held_keys,
                "hosts": row.scenario.hosts,
                "state": "postgresql" if row.scenario.target == PG_TARGET else "sqlite",
                "postgres_cores": row.postgres_cores,
                "postgres_cpu_us_per_request": postgres_us_per_request(row),
                "problems": row.problems,
            }
            for row in rows
        ],
        "memory": memory
        and {
            "connections": memory.connections,
            "requests": memory.requests,
            "wrk_runs": memory.runs,
            "duration_s": memory.seconds,
            "upstream_sends": memory.upstream_sends,
            "workers_rss_kib_after_warmup": memory.workers_before_kib,
            "workers_rss_kib_after": memory.workers_after_kib,
            "master_rss_kib_after_warmup": memory.master_before_kib,
            "master_rss_kib_after": memory.master_after_kib,
            "growth": memory.growth,
            "target": memory.verdict and {"target": memory.verdict.text, "met": memory.verdict.met},
            "problems": memory.problems,
        },
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (bench/run installs it)")
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT (`... &`);
    # SIGTERM and SIGHUP unwind like it, so that the ExitStack stops every process started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: sys.exit(128 + signum))

    rows: list[Row] = []
    memory: MemoryRow | None = None
    with ExitStack() as exits:
        workdir = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="smsbridge-bench-")))
        settings = gunicorn_settings(args.gunicorn_arg, bridge_env(free_port(), UNUSED_PORT, workdir))
        stack = Stack(exits, workdir, args.gunicorn_arg, int(settings["workers"]))
        shown = ", ".join(f"{name}={settings.get(name, '?')}" for name in SHOWN_GUNICORN_SETTINGS)
        command = shlex.join(gunicorn_argv(args.gunicorn_arg)[1:])
        header = (
            f"{describe_machine()}\n"
            f"fake:    bench/fake_upstream.py, one asyncio process per upstream latency\n"
            f"bridge:  gunicorn {command}, SMSBRIDGE_BACKEND=mobsms\n"
            f"         {shown}\n"
            f"bare:    gunicorn {shlex.join(gunicorn_argv(args.gunicorn_arg, BARE_APP)[1:])}, the same "
            f"environment\n"
            f"load:    wrk -t{args.threads} -c{args.connections} (per row: conns), {args.duration:g} s "
            f"measured after {args.warmup:g} s warm-up, per scenario"
        )
        pg_rows = [s.name for s in args.chosen if s.target == PG_TARGET]
        if pg_rows:
            # Started before the rows, so that a machine without PostgreSQL says so at once.
            stack.shared_state()
            assert stack.postgres is not None
            header += (
                f"\npg:      PostgreSQL {stack.postgres.bin.parent.name} for {', '.join(pg_rows)}: one "
                f"throwaway cluster on {HOST} (tests/harness/postgres.py: fsync and synchronous_commit off), "
                "SMSBRIDGE_STATE_URL=postgresql://..., one SMSBRIDGE_TOKEN_SECRET; each bridge has its own "
                "data directory and the same workers"
            )
        if args.memory:
            header += (
                f"\nmemory:  the fast bridge's VmRSS after {args.warmup:g} s warm-up of rest-get and of "
                f"soap, then after {args.memory_requests:,} more requests (wrk runs of at most "
                f"{MEMORY_CHUNK_S:g} s, rest-get and soap in turn)"
            )
        print(header, flush=True)
        for scenario in args.chosen:
            print(f"... {scenario.name}", flush=True)
            row = measure(scenario, stack, args, workdir)
            rows.append(row)
            for problem in row.problems:
                print(f"    FAIL {problem}", flush=True)
        if args.memory:
            print(f"... {MEMORY}", flush=True)
            memory = measure_memory(stack, args, workdir)
            for problem in memory.problems:
                print(f"    FAIL {problem}", flush=True)
        for service in stack.services():
            if not service.alive():
                raise BenchError(f"{service.name} died during the run; its log ends:\n{service.log_tail()}")

    by_name = {row.scenario.name: row for row in rows}
    for row in rows:
        base = by_name.get(row.scenario.baseline)
        if row.run and base and base.run and base.run.rps:
            row.ratio = row.run.rps / base.run.rps
        row.verdicts = judge(row, base)
    text = table(rows, COLUMNS) if rows else ""
    if memory is not None:
        memory.verdict = judge_memory(memory)
        text += ("\n\n" if text else "") + table([memory], MEMORY_COLUMNS)
    print()
    print(text)
    print(f"\n{targets_summary(rows, memory)}")
    added = one_more_host(rows)
    if added:
        print(f"\n{added}")
    busy = [row for row in rows if row.other_cores is not None and row.other_cores > OTHER_CPU_WARNING]
    if busy:
        print(
            "\nwarning: other processes were busy during "
            + ", ".join(f"{row.scenario.name} ({row.other_cores:.0%} of a core)" for row in busy)
            + ": those rows understate what this machine can do"
        )
    uneven = [
        row
        for row in rows
        if len(row.worker_cores) > 1 and min(row.worker_cores) < UNEVEN_WORKER_SHARE * max(row.worker_cores)
    ]
    if uneven:
        print(
            "\nwarning: gunicorn's workers were unevenly loaded during "
            + ", ".join(row.scenario.name for row in uneven)
            + ": a kept-alive connection stays with the worker that accepted it, and each worker is"
            " held to one core by the GIL, so those rows depend on how wrk's connections were spread"
        )
    saved = save(rows, memory, args, header, text)
    print(f"\nrecord: {saved.relative_to(ROOT) if saved.is_relative_to(ROOT) else saved}")
    failed = [row.scenario.name for row in rows if row.problems]
    if memory is not None and memory.problems:
        failed.append(MEMORY)
    if failed:
        print(f"checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started was stopped", file=sys.stderr)
        sys.exit(130)
