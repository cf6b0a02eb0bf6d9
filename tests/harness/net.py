"""Ports on 127.0.0.1: a free one, a closed one, and stopping a server without waiting for its poll."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """Return a URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def stop_quickly(stop: Callable[[], None], port: int) -> None:
    """Run a server's `stop` while poking its port, so its serve loop notices now, not at its 0.5 s poll."""
    stopping = threading.Thread(target=stop)
    stopping.start()
    while stopping.is_alive():
        with suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        stopping.join(0.02)
