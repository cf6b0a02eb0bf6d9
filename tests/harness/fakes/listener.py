"""A TCP listener that only counts: what must receive nothing (a loopback service behind an SSRF) proves it.

It accepts every connection, keeps the bytes that arrive on it for a moment, and closes it, never
answering. `connections` counts the connections accepted; `received` holds what came on each.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Listener:
    """Listen on `host`:`port` (0: any free port) in a background thread until `close()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.bind((host, port))
            self._socket.listen(16)
        except OSError:
            self._socket.close()
            raise
        self._socket.settimeout(0.05)
        self.host = host
        self.port = self._socket.getsockname()[1]
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="listener", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return len(self.received)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.2)
                data = b""
                with contextlib.suppress(OSError):
                    data = conn.recv(65536)
            with self._lock:
                self.received.append(data)

    def close(self) -> None:
        """Stop listening and close the socket."""
        self._stop.set()
        self._thread.join(2)
        self._socket.close()
