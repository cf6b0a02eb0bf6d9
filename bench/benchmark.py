"""Benchmark SMS sends through the bridge against the same load sent straight to a fast fake upstream.

Run it with `bench/run` (which sets up the virtualenv and wrk first). It starts, all on 127.0.0.1:

- the fake mobsms (`bench/fake_upstream.py`), one per upstream latency the chosen scenarios need;
- the bridge under gunicorn with the repo's `gunicorn.conf.py`, one per fake, backend `mobsms`;

then, for each scenario: one request checked by hand, a wrk warm-up, the measured wrk run, the checks
(no wrk error, the fake received one send per answered request, one more request still succeeds), and
at the end one table. Every process it started is stopped on the way out, whatever the way out is.

Columns: requests/s and latency percentiles from wrk; "vs direct" divides by the direct row's req/s;
"conns/worker" and "cores/worker" show how wrk's kept-alive connections (counted halfway) and the CPU
were spread over the bridge's workers; "other cpu" is how busy processes outside the benchmark kept the
machine, in share of one core. The JSON record of each run goes to bench/results/ (not committed).

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"

API_KEY = "bench-key-1"
RECIPIENT = "+32470000001"
MESSAGE = "Your verification code is 482913. It expires in 10 minutes."
SOAP_NS = "urn:smsbridge:sendsms"

#: cores used by processes outside the benchmark above which a row is flagged as disturbed
OTHER_CPU_WARNING = 0.10

#: a row is flagged when its least busy bridge worker used less than this share of the busiest one's CPU
UNEVEN_WORKER_SHARE = 0.6

#: gunicorn settings worth showing next to the numbers
SHOWN_GUNICORN_SETTINGS = (
    "workers",
    "worker_class",
    "threads",
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
    #: the service that answers: "bridge" or "upstream" (see `Stack.serving`)
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
    #: whether every answered request must have reached the fake exactly once
    one_send_per_request: bool = True
    #: the row the req/s ratio is taken against
    baseline: str = "direct"


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

SCENARIOS: tuple[Scenario, ...] = (
    REST_GET,
    Scenario(
        name="rest-post",
        target="bridge",
        method="POST",
        path="/sendsms/",
        body=urlencode(SEND_FIELDS).encode(),
        headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        check=bridge_rest_sent,
    ),
    Scenario(
        name="soap",
        target="bridge",
        method="POST",
        path="/sendsms/soap/",
        body=SOAP_ENVELOPE,
        headers=(("Content-Type", "text/xml; charset=utf-8"), ("SOAPAction", '"sendSms"')),
        check=bridge_soap_sent,
    ),
    DIRECT,
    # A real gateway answers in 100 ms to 2 s: throughput is then bounded by sends in flight.
    replace(REST_GET, name="rest-slow", upstream_latency_ms=100.0, connections=200, baseline="direct-slow"),
    replace(DIRECT, name="direct-slow", upstream_latency_ms=100.0, connections=200, baseline="direct-slow"),
)


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

    def serving(self, scenario: Scenario) -> tuple[Service, int]:
        """Return the service and port that answer `scenario`, starting them if needed."""
        if scenario.target == "upstream":
            return self.upstream(scenario.upstream_latency_ms)
        if scenario.target == "bridge":
            return self.bridge(scenario.upstream_latency_ms)
        raise BenchError(f"scenario {scenario.name}: no service named {scenario.target!r}")

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
            port = free_port()
            data_dir = self.workdir / f"bridge-data-{tag}"
            data_dir.mkdir()
            env = bridge_env(port, upstream_port, data_dir)
            service = Service(
                f"bridge ({tag} upstream)",
                gunicorn_argv(self.gunicorn_args),
                self.workdir / f"bridge-{tag}.log",
                env=env,
            )
            # gunicorn waits up to graceful_timeout for requests in flight; an idle bridge stops at once.
            self.exits.callback(service.stop, 35.0)
            wait_until(
                lambda: http_call(port, "GET", "/healthz").status == 200, service, 30, "answering /healthz"
            )
            wait_until(
                lambda: len(children(service.pid)) >= self.worker_count,
                service,
                30,
                f"running {self.worker_count} workers",
            )
            self.bridges[latency_ms] = (service, port)
        return self.bridges[latency_ms]

    def workers(self, scenario: Scenario) -> list[int]:
        """Return the gunicorn worker pids behind `scenario`, or [] when it does not go to a bridge."""
        if scenario.target != "bridge":
            return []
        service, _ = self.serving(scenario)
        return sorted(children(service.pid))

    def pids(self) -> list[int]:
        """Return the pids of every running service, workers included."""
        leaders = [service.pid for service, _ in [*self.bridges.values(), *self.upstreams.values()]]
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


def gunicorn_argv(extra: list[str]) -> list[str]:
    return [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", *extra, "wsgi:app"]


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

    def _ours(self) -> float:
        children_usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
        self_usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            _process_cpu_s(self.stack.pids())
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


def connections_per_process(pids: list[int], port: int) -> list[int]:
    """Return how many established TCP connections to local `port` each of `pids` holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rpartition(":")[2], 16), fields[3], fields[9]
        if local_port == port and state == "01":  # 01: ESTABLISHED
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
    port: int,
    workdir: Path,
    seconds: float,
    connections: int,
    threads: int,
    timeout: float,
    midway: Callable[[], None] | None = None,
) -> WrkRun:
    """Run wrk with `scenario`'s request against `port` and return its summary; call `midway` halfway."""
    body_file = workdir / f"{scenario.name}.body"
    body_file.write_bytes(scenario.body)
    env = dict(os.environ)
    env.update(
        BENCH_METHOD=scenario.method,
        BENCH_BODY_FILE=str(body_file) if scenario.body else "",
        BENCH_HEADERS="\n".join(f"{name}: {value}" for name, value in scenario.headers),
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
        f"http://{HOST}:{port}{scenario.path}",
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


@dataclass
class Row:
    """One scenario's measurements and the problems its checks found."""

    scenario: Scenario
    connections: int
    run: WrkRun | None = None
    upstream_sends: int | None = None
    problems: list[str] = field(default_factory=list)
    ratio: float | None = None
    #: cores used on average by processes outside the benchmark during the measured run
    other_cores: float | None = None
    #: per bridge worker: the connections it held halfway through the run, and the cores it used
    worker_connections: list[int] = field(default_factory=list)
    worker_cores: list[float] = field(default_factory=list)


def _cpu_per_request(row: Row) -> str:
    """Return the bridge workers' CPU time per answered request, in microseconds."""
    if not row.worker_cores or not row.run or not row.run.rps:
        return "-"
    return f"{sum(row.worker_cores) / row.run.rps * 1e6:,.0f}"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


#: the table's columns: header, then the cell of a row
COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("scenario", lambda r: r.scenario.name),
    ("requests/s", lambda r: _number(r.run and r.run.rps, 0)),
    ("p50 ms", lambda r: _number(r.run and r.run.latency_ms["p50"], 2)),
    ("p99 ms", lambda r: _number(r.run and r.run.latency_ms["p99"], 2)),
    ("vs direct", lambda r: "-" if r.ratio is None else f"{r.ratio:.3f}"),
    ("conns", lambda r: str(r.connections)),
    ("conns/worker", lambda r: "/".join(map(str, r.worker_connections)) or "-"),
    ("cores/worker", lambda r: "/".join(f"{c:.2f}" for c in r.worker_cores) or "-"),
    ("cpu us/req", lambda r: _cpu_per_request(r)),
    ("checks", lambda r: "FAIL" if r.problems else "ok"),
    ("other cpu", lambda r: "-" if r.other_cores is None else f"{r.other_cores:.0%}"),
)


def table(rows: list[Row]) -> str:
    cells = [[header for header, _ in COLUMNS]] + [[cell(row) for _, cell in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
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


def measure(scenario: Scenario, stack: Stack, args: argparse.Namespace, workdir: Path) -> Row:
    """Check one request, warm up, measure, and check what the measured run did."""
    connections = scenario.connections or args.connections
    row = Row(scenario, connections)
    _, port = stack.serving(scenario)

    def one_request() -> str | None:
        return scenario.check(
            http_call(port, scenario.method, scenario.path, scenario.body, scenario.headers)
        )

    problem = one_request()
    if problem:
        row.problems.append(f"the request before the run failed: {problem}")
        return row
    if args.warmup > 0:
        run_wrk(scenario, port, workdir, args.warmup, connections, args.threads, args.timeout)
    before = stack.upstream_sends(scenario)
    workers = stack.workers(scenario)
    meter = CpuMeter(stack, workers)

    def count_connections() -> None:
        row.worker_connections = connections_per_process(workers, port) if workers else []

    row.run = run_wrk(
        scenario, port, workdir, args.duration, connections, args.threads, args.timeout, count_connections
    )
    row.other_cores = meter.others()
    row.worker_cores = meter.worker_cores()
    row.upstream_sends = stack.upstream_sends(scenario) - before
    if row.run.error_count:
        nonzero = {k: v for k, v in row.run.errors.items() if v}
        row.problems.append(f"wrk counted errors (status = HTTP 4xx/5xx): {nonzero}")
    if row.run.requests == 0:
        row.problems.append("no request was answered")
    # Requests still in flight when wrk stops reach the fake without being counted by wrk.
    if scenario.one_send_per_request and not (
        row.run.requests <= row.upstream_sends <= row.run.requests + connections
    ):
        row.problems.append(
            f"wrk counted {row.run.requests} answers but the fake queued {row.upstream_sends} SMS"
        )
    problem = one_request()
    if problem:
        row.problems.append(f"the request after the run failed: {problem}")
    return row


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
        description="Measure SMS sends through the bridge (REST, SOAP) against the fake upstream direct.",
    )
    parser.add_argument("-d", "--duration", type=float, default=10, help="seconds measured per scenario")
    parser.add_argument("-w", "--warmup", type=float, default=3, help="seconds of warm-up per scenario")
    parser.add_argument("-c", "--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("-t", "--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--timeout", type=float, default=5, help="wrk's per-request timeout, seconds")
    names = [s.name for s in SCENARIOS]
    parser.add_argument(
        "-s",
        "--scenarios",
        default=",".join(names),
        help=f"comma-separated, in order (default: all: {','.join(names)})",
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
    args.chosen = [next(s for s in SCENARIOS if s.name == name) for name in chosen]
    if args.duration <= 0 or args.connections < 1 or args.threads < 1:
        parser.error("--duration, --connections and --threads must be positive")
    return args


def save(rows: list[Row], args: argparse.Namespace, header: str, text: str) -> Path:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / time.strftime("%Y%m%d-%H%M%S.json")
    record = {
        "header": header,
        "table": text,
        "arguments": {k: str(v) for k, v in vars(args).items() if k != "chosen"},
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
                "ratio": row.ratio,
                "other_cores": row.other_cores,
                "worker_connections": row.worker_connections,
                "worker_cores": row.worker_cores,
                "problems": row.problems,
            }
            for row in rows
        ],
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
    with ExitStack() as exits:
        workdir = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="smsbridge-bench-")))
        settings = gunicorn_settings(args.gunicorn_arg, bridge_env(free_port(), 1, workdir))
        stack = Stack(exits, workdir, args.gunicorn_arg, int(settings["workers"]))
        shown = ", ".join(f"{name}={settings.get(name, '?')}" for name in SHOWN_GUNICORN_SETTINGS)
        command = shlex.join(["gunicorn", "-c", "gunicorn.conf.py", *args.gunicorn_arg, "wsgi:app"])
        header = (
            f"{describe_machine()}\n"
            f"fake:    bench/fake_upstream.py, one asyncio process per upstream latency\n"
            f"bridge:  {command}, SMSBRIDGE_BACKEND=mobsms\n"
            f"         {shown}\n"
            f"load:    wrk -t{args.threads} -c{args.connections} (per row: conns), {args.duration:g} s "
            f"measured after {args.warmup:g} s warm-up, per scenario"
        )
        print(header, flush=True)
        for scenario in args.chosen:
            print(f"... {scenario.name}", flush=True)
            row = measure(scenario, stack, args, workdir)
            rows.append(row)
            for problem in row.problems:
                print(f"    FAIL {problem}", flush=True)
        for service, _ in [*stack.bridges.values(), *stack.upstreams.values()]:
            if not service.alive():
                raise BenchError(f"{service.name} died during the run; its log ends:\n{service.log_tail()}")

    by_name = {row.scenario.name: row for row in rows}
    for row in rows:
        base = by_name.get(row.scenario.baseline)
        if row.run and base and base.run and base.run.rps:
            row.ratio = row.run.rps / base.run.rps
    text = table(rows)
    print()
    print(text)
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
            "\nwarning: the bridge's workers were unevenly loaded during "
            + ", ".join(row.scenario.name for row in uneven)
            + ": a kept-alive connection stays with the worker that accepted it, and each worker is"
            " held to one core by the GIL, so those rows depend on how wrk's connections were spread"
        )
    saved = save(rows, args, header, text)
    print(f"\nrecord: {saved.relative_to(ROOT) if saved.is_relative_to(ROOT) else saved}")
    failed = [row.scenario.name for row in rows if row.problems]
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
