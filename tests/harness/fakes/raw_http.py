"""Misbehaving upstreams on raw sockets: what an HTTP server library would refuse to write.

`RawUpstream(answer)` listens on 127.0.0.1 and, for each request it reads on any connection, calls
`answer(connection, request_number, head)`, which writes whatever it likes (trickles, garbage, early
answers) and returns whether to keep the connection for another request. Optionally over TLS.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable

#: what a test's answer function is: (connection, 1-based request number, request head) -> keep open?
AnswerFn = Callable[[socket.socket, int, bytes], bool]


class RawUpstream:
    """A server on 127.0.0.1 answering each request with `answer`, one thread per connection."""

    def __init__(self, answer: AnswerFn, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        #: every request head read, in order
        self.heads: list[bytes] = []
        #: how many connections were accepted
        self.connections = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self.connections += 1
                    self._open.append(connection)
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_side=True)
                with self._lock:
                    self._open.append(connection)
            self._converse(connection)
        except OSError:
            pass  # the client went away, or the test stopped the server
        finally:
            connection.close()

    def _converse(self, connection: socket.socket) -> None:
        buffered = b""
        while not self._stopping.is_set():
            while b"\r\n\r\n" not in buffered:
                data = connection.recv(65536)
                if not data:
                    return
                buffered += data
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            buffered = b""  # the tests' requests that have a body are answered without reading it
            with self._lock:
                self.heads.append(head)
                number = len(self.heads)
            if not self.answer(connection, number, head):
                return

    def stop(self) -> None:
        """Stop accepting, and close every connection (which ends any trickle)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def answer_with(data: bytes, *, keep: bool = True) -> AnswerFn:
    """Return an answer function that writes `data` in one write."""

    def answer(connection: socket.socket, number: int, head: bytes) -> bool:
        connection.sendall(data)
        return keep

    return answer


def trickle(
    stopping: threading.Event, connection: socket.socket, data: bytes, every: float, piece: int = 1
) -> None:
    """Write `data` `piece` bytes every `every` seconds, until done or `stopping` is set."""
    for index in range(0, len(data), piece):
        if stopping.wait(every):
            return
        connection.sendall(data[index : index + piece])
