"""A real Redis: redis-server on a free port of 127.0.0.1, without persistence, stopped and restarted at will.

redis-server must be installed (`scripts/setup --test` installs it).
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.harness.net import free_port


def fingerprint(key: str) -> str:
    """Return the start of the fingerprint a passthrough key is counted under (its SHA-256, shortened)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class RedisServer:
    """A redis-server on a free port of 127.0.0.1, without persistence, that can be stopped and restarted."""

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        assert executable, "redis-server is missing: run scripts/setup --test"
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start redis-server on its port (the same one after a stop) and wait until it answers PING."""
        assert self.process is None, "redis-server is already running"
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, (self.directory / "redis.log").read_text(errors="replace")
            try:
                if self.client.ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop redis-server (its data goes with it) and wait until it has exited."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGCONT)  # in case it was frozen
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None
        self.client.connection_pool.disconnect()

    def freeze(self) -> None:
        """Stop redis-server's process without closing its port: connections open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen redis-server run again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def count_of(self, key: str) -> int | None:
        """Return the count Redis holds for the client that sends `key`, or None if it holds none."""
        names = self.client.keys(f"*:{fingerprint(key)}*")
        assert len(names) <= 1, names
        return int(self.client.get(names[0])) if names else None
