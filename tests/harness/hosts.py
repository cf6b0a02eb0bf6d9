"""Bridges on several hosts: gunicorn masters with their own data directories, sharing one PostgreSQL.

Each `Host` is one bridge under real gunicorn (tests/harness/gunicorn.py's `Gunicorn`), as one machine
behind a load balancer runs it: its own master, workers and data directory, and, with every other host,
the same state (SMSBRIDGE_STATE_URL), rate-limit counts (a Redis, or `postgresql://`), token secret and
clients file. A host can be killed (SIGKILL to its master and workers: a machine that dies), paused
(SIGSTOP: a machine that stalls) and started again on a new port.

    hosts = Hosts.start(tmp_path, postgres_url, shared_env(...), names=("a", "b"))
    a, b = hosts["a"], hosts["b"]
    a.kill()
    a.start()
    hosts.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from tests.harness.gunicorn import Gunicorn
from tests.harness.postgres import children_of
from tests.harness.webhooks import TOKEN_SECRET

#: how long a killed host's processes may take to be gone
GONE_SECONDS = 10.0


def shared_env(
    state_url: str,
    *,
    ratelimit_storage: str,
    clients_file: Path | None = None,
    backend: str = "sandbox",
    workers: int = 1,
    **more: str,
) -> dict[str, str]:
    """Return the environment every host of a multi-host deployment has alike (docs/deployment.md).

    `ratelimit_storage` is a Redis URL or `postgresql://` (the state's database). The token secret is
    the webhooks harness's TOKEN_SECRET, so that its `gunicorn_source_url` gives any host's source URL.
    """
    env = {
        "SMSBRIDGE_STATE_URL": state_url,
        "SMSBRIDGE_RATELIMIT_STORAGE": ratelimit_storage,
        "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
        "SMSBRIDGE_BACKEND": backend,
        "SMSBRIDGE_WORKERS": str(workers),
        **more,
    }
    if clients_file is not None:
        env["SMSBRIDGE_CLIENTS_FILE"] = str(clients_file)
    return env


class Host:
    """One bridge on one "machine": a gunicorn master with its workers and its own data directory."""

    def __init__(self, name: str, directory: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.directory = directory
        self.data_dir = directory / "data"
        self.env = dict(env)
        self.bridge: Gunicorn | None = None
        self._starts = itertools.count(1)
        #: everything each run printed, in order (the current run's too, once stopped or killed)
        self.outputs: list[str] = []

    @property
    def url(self) -> str:
        assert self.bridge is not None, f"host {self.name} is not running"
        return self.bridge.url

    @property
    def running(self) -> bool:
        return self.bridge is not None and self.bridge.process.poll() is None

    def start(self) -> None:
        """Start the bridge (again, on a new port, with the same data directory) and wait for /healthz."""
        assert not self.running, f"host {self.name} is already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / f"gunicorn-{next(self._starts)}.log"
        self.bridge = Gunicorn({**self.env, "SMSBRIDGE_DATA_DIR": str(self.data_dir)}, log)

    def pids(self) -> list[int]:
        """The master's pid and its children's (the workers)."""
        assert self.bridge is not None
        master = self.bridge.process.pid
        return [master, *children_of(master)]

    def kill(self) -> None:
        """SIGKILL the master and every worker at once, as a machine that loses power; wait until gone."""
        assert self.bridge is not None and self.running, f"host {self.name} is not running"
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.bridge.process.wait(timeout=GONE_SECONDS)
        # The workers are re-parented (to init, which reaps them): gone once they have no executable.
        deadline = time.monotonic() + GONE_SECONDS
        while any(Path(f"/proc/{pid}/exe").exists() for pid in pids[1:]):
            assert time.monotonic() < deadline, f"host {self.name}'s workers outlived SIGKILL"
            time.sleep(0.02)
        self.outputs.append(self.bridge.stop())  # reaped already: this only closes its log
        self.bridge = None

    def pause(self) -> None:
        """SIGSTOP the master and the workers: the host stalls, its connections stay open."""
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused host run again (workers first, so that the master finds them alive)."""
        for pid in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> str:
        """Stop the bridge gracefully (if it runs) and return what this run printed."""
        if self.bridge is None:
            return ""
        self.resume()  # a paused master would never act on SIGTERM
        output = self.bridge.stop()
        self.outputs.append(output)
        self.bridge = None
        return output

    def output(self) -> str:
        """Everything every run of this host printed so far (the running one's log as it stands)."""
        current = self.bridge.log.read_text(errors="replace") if self.bridge is not None else ""
        return "".join(self.outputs) + current


class Hosts:
    """Several hosts with the same shared settings, each with its own directory under `directory`."""

    def __init__(self, directory: Path, env: Mapping[str, str], names: Iterable[str] = ("a", "b")) -> None:
        self.hosts = {name: Host(name, directory / f"host-{name}", env) for name in names}

    @classmethod
    def start(cls, directory: Path, env: Mapping[str, str], names: Iterable[str] = ("a", "b")) -> Hosts:
        """Start every host, one after the other (their migrations take turns anyway)."""
        hosts = cls(directory, env, names)
        try:
            for host in hosts.hosts.values():
                host.start()
        except BaseException:
            hosts.stop()
            raise
        return hosts

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def ensure_running(self) -> None:
        """Start again any host a test killed (or that died)."""
        for host in self:
            if not host.running:
                if host.bridge is not None:
                    host.outputs.append(host.bridge.stop())
                    host.bridge = None
                host.start()

    def stop(self) -> dict[str, str]:
        """Stop every host; return what each printed, over all its runs."""
        for host in self:
            host.stop()
        return {host.name: "".join(host.outputs) for host in self}
