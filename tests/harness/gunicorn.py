"""The bridge under real gunicorn in a child process, as the README runs it, and reading its output.

`Gunicorn` starts `gunicorn -c gunicorn.conf.py wsgi:app` on a free port of 127.0.0.1 and waits for
/healthz. `start_bridge` starts one whose access log names, on each line, the worker that answered and
the request's `X-Probe` header (GUNICORN_CMD_ARGS, which gunicorn applies over gunicorn.conf.py), so that
`served_by` and `ready_workers` can tell the workers apart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from tests.harness.net import free_port

#: the repository's root: gunicorn runs from there, with its gunicorn.conf.py and wsgi.py
ROOT = Path(__file__).resolve().parents[2]

#: how the tests start the bridge: the README's runtime, `gunicorn -c gunicorn.conf.py wsgi:app`
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]

#: gunicorn's access log, as these helpers read it: "<pid> probe status"
ACCESS_LOG_FORMAT = "--access-logfile=- --access-logformat '%(p)s %({x-probe}i)s %(s)s'"
_ACCESS_LINE = re.compile(r"^<(\d+)> (\S+) (\d{3})$", re.MULTILINE)


def gunicorn_env(port: int, **settings: str) -> dict[str, str]:
    """Return this process's environment minus its SMSBRIDGE_* variables, bound to `port`, with `settings`."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMSBRIDGE_")},
        "SMSBRIDGE_BIND": f"127.0.0.1:{port}",
        **settings,
    }


class Gunicorn:
    """The bridge served by gunicorn in a child process, with its output kept for assertions."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        full_env = gunicorn_env(port, SMSBRIDGE_PUBLIC_URL=self.url, **env)
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            GUNICORN,
            cwd=ROOT,
            env=full_env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.process.kill()
            self.process.wait()
            self._out.close()
            raise

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError("gunicorn did not start:\n" + self.log.read_text())

    def stop(self) -> str:
        """Stop gunicorn gracefully and return everything it printed."""
        self.process.terminate()
        self.process.wait(timeout=30)
        self._out.close()
        return self.log.read_text()


def served_by(bridge: Gunicorn, probes: list[str]) -> dict[str, tuple[int, int]]:
    """Return {probe: (worker pid, status)} from the access log, waiting until every probe is there."""
    deadline = time.monotonic() + 5
    while True:
        found = {
            m[2]: (int(m[1]), int(m[3]))
            for m in _ACCESS_LINE.finditer(bridge.log.read_text(errors="replace"))
        }
        if all(p in found for p in probes) or time.monotonic() > deadline:
            missing = [p for p in probes if p not in found]
            assert not missing, f"not in the access log: {missing}\n{bridge.log.read_text()}"
            return {p: found[p] for p in probes}
        time.sleep(0.05)


def ready_workers(bridge: Gunicorn, count: int = 2) -> set[int]:
    """Wait until `count` workers answer (health checks, which are never limited); return their pids."""
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answered:\n{bridge.log.read_text()}"
        probe = f"ready-{uuid.uuid4().hex[:12]}"
        assert requests.get(
            bridge.url + "/healthz", headers={"Connection": "close", "X-Probe": probe}, timeout=10
        ).ok
        seen.add(served_by(bridge, [probe])[probe][0])
    return seen


def start_bridge(tmp_path: Path, env: dict[str, str], name: str = "gunicorn") -> Gunicorn:
    """Start the bridge under gunicorn with the sandbox backend and `env`."""
    return Gunicorn(
        {
            "SMSBRIDGE_DATA_DIR": str(tmp_path / f"{name}-data"),
            "GUNICORN_CMD_ARGS": ACCESS_LOG_FORMAT,
            **env,
        },
        tmp_path / f"{name}.log",
    )


def log_lines(output: str) -> list[dict]:
    """Return the request log's lines (JSON objects) of what the bridge printed."""
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"time"')]
