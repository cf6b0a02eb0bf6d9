"""A forward HTTP proxy on 127.0.0.1: absolute-form requests forwarded, CONNECT tunnelled.

Enough of RFC 9112 for the bridge's egress through a proxy to be tested for real: the bridge writes
`GET http://host:port/path HTTP/1.1` (plain) or `CONNECT host:port HTTP/1.1` (https) to the proxy.
With `credentials` ("user:password"), a request without that Proxy-Authorization gets 407.
Each forwarded request goes upstream with `Connection: close`, so one proxy connection serves one request.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it."""

    method: str
    target: str
    proxy_authorization: str | None


class ForwardProxy:
    """A forward proxy in background threads, recording every request it got."""

    def __init__(self, credentials: str | None = None) -> None:
        self.expected = (
            "Basic " + base64.b64encode(credentials.encode()).decode() if credentials is not None else None
        )
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            buffered = b""
            while b"\r\n\r\n" not in buffered:
                data = client.recv(65536)
                if not data:
                    return
                buffered += data
            head, _, rest = buffered.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers = [line.split(":", 1) for line in header_lines]
            authorization = next((v.strip() for n, v in headers if n.lower() == "proxy-authorization"), None)
            with self._lock:
                self.seen.append(Seen(method, target, authorization))
            if self.expected is not None and authorization != self.expected:
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=10)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._pipe(client, upstream, rest, tunnel=True)
                return
            url = urlsplit(target)
            upstream = socket.create_connection((url.hostname, url.port or 80), timeout=10)
            kept = [
                f"{n}:{v}"
                for n, v in headers
                if n.lower() not in ("proxy-authorization", "proxy-connection", "connection")
            ]
            origin_form = url.path + (f"?{url.query}" if url.query else "")
            forwarded = "\r\n".join([f"{method} {origin_form} {version}", *kept, "Connection: close"])
            self._pipe(client, upstream, forwarded.encode("latin-1") + b"\r\n\r\n" + rest, tunnel=False)

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket, first: bytes, *, tunnel: bool) -> None:
        """Carry bytes both ways until either side closes.

        A forwarded answer gets `Connection: close` after its status line, as a real proxy closing
        the connection says: the client must not write its next request on it.
        """
        with upstream:
            if first:
                upstream.sendall(first)

            def upstream_to_client() -> None:
                marked = tunnel
                with contextlib.suppress(OSError):
                    while data := upstream.recv(65536):
                        if not marked and b"\r\n" in data:
                            status, _, rest = data.partition(b"\r\n")
                            data, marked = status + b"\r\nConnection: close\r\n" + rest, True
                        client.sendall(data)
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)

            back = threading.Thread(target=upstream_to_client, daemon=True)
            back.start()
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    upstream.sendall(data)
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
            back.join(timeout=10)

    def stop(self) -> None:
        """Stop accepting connections."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)
