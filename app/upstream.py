"""HTTP to the upstreams: kept-alive connections per process, explicit timeouts, TLS verified, no retries.

A send is never retried here: once a request may have been written, repeating it could send an SMS
twice. Transport failures become the bridge's own errors, split by whether anything can have reached
the upstream (`BackendUnreachable`: nothing did) or not (`BackendTimeout`, `BackendConnectionLost`).

This is HTTP/1.1 written and read on the socket, not requests: the bridge makes one upstream call per
SMS, and requests spent about 0.4 ms of CPU on each (preparing, merging settings, hooks), more than all
the rest of a send; http.client still spent 0.1 ms parsing headers with the email package. What the
bridge used of requests is here: pooling, timeouts, TLS verification (SMSBRIDGE_UPSTREAM_CA_BUNDLE),
query parameters, JSON bodies, and the check that a kept-alive connection was not closed by the
upstream while idle. Proxies and .netrc from the environment are not honoured: they would change where
SMS go without a word in the bridge's own configuration. Answers are never decompressed: no
Accept-Encoding is sent, so an upstream's answer is passed on exactly as it came. An answer over
MAX_ANSWER_BYTES is not read: the call counts as broken off, as a body cut short does.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from app.config import Settings
from app.errors import (
    BackendConnectionLost,
    BackendConnectTimeout,
    BackendDnsFailure,
    BackendTimeout,
    BackendTlsFailure,
    BackendUnreachable,
)
from app.request_log import note_upstream

log = logging.getLogger(__name__)

#: a kept-alive connection idle for longer is closed rather than reused: upstreams close idle
#: connections after a few seconds (Apache's default is 5 s), and a request written on a connection
#: the upstream is closing at that moment is lost in a way that cannot tell whether it was sent
IDLE_SECONDS = 4.0
#: the longest status line or header line read, and the most header lines (as http.client)
MAX_LINE_BYTES = 65536
MAX_HEADERS = 100
#: the largest answer body read: far above any answer of the APIs spoken to, far below a worker's memory
MAX_ANSWER_BYTES = 32 * 1024 * 1024

_Origin = tuple[str, str, int]
#: what stays as it is in an upstream URL's path and query (requests' `requote_uri` keeps the same)
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Headers(dict):
    """An answer's headers, by name in any case (repeated headers joined with ", ")."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class Answer:
    """An upstream's answer: what the backends read of it."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        #: case-insensitive: `headers.get("retry-after")`, `"Content-Type" in headers`
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """Return the body as JSON; raise ValueError when it is not JSON."""
        return jsonlib.loads(self.content)


class _BrokenAnswer(Exception):
    """The upstream's answer is not HTTP/1.x as it should be, or stops short."""


class _Connection:
    """One connection to an upstream: a socket and the buffered reader of its answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.idle_since = 0.0

    def exchange(self, method: str, head: bytes, body: bytes | None) -> tuple[int, Headers, bytes, bool]:
        """Write a request and read its answer: status, headers, body, and whether the connection stays."""
        self.sock.sendall(head + body if body else head)
        reader = self.reader
        while True:
            version, status = _status_line(reader)
            headers = _headers(reader)
            if not 100 <= status < 200:
                break  # 1xx answers (100 Continue, 103 Early Hints) come before the real one
        keep = _keeps_alive(version, headers)
        if method == "HEAD" or status in (204, 304):
            return status, headers, b"", keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, headers, _chunked(reader), keep
        length = headers.get("content-length")
        if length is None:
            content = reader.read(MAX_ANSWER_BYTES + 1)  # the body ends when the connection does
            _check_size(len(content))
            return status, headers, content, False
        if not length.isdigit():
            raise _BrokenAnswer(f"Content-Length {length[:40]!r}")
        content = reader.read(_check_size(int(length)))
        if len(content) < int(length):
            raise _BrokenAnswer(f"the body stopped after {len(content)} of {length} bytes")
        return status, headers, content, keep

    def still_open(self, read_timeout: float) -> bool:
        """Tell whether this idle kept-alive connection is still open, without waiting.

        An upstream that closed it sent a FIN (the socket reads b"") or, for TLS, a close_notify first;
        anything readable on an idle HTTP/1.1 connection means it cannot be used for a new request.
        """
        sock = self.sock
        try:
            sock.settimeout(0.0)
            try:
                if isinstance(sock, ssl.SSLSocket):
                    sock.recv(1)  # through TLS, so that session tickets are consumed, not taken for data
                else:
                    sock.recv(1, socket.MSG_PEEK)
            finally:
                sock.settimeout(read_timeout)
        except (BlockingIOError, ssl.SSLWantReadError):
            return True  # nothing to read: still open
        except OSError:
            return False
        return False

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _check_size(size: int) -> int:
    """Return the size of an answer's body, or raise when it is over MAX_ANSWER_BYTES."""
    if size > MAX_ANSWER_BYTES:
        raise _BrokenAnswer(f"an answer of over {MAX_ANSWER_BYTES} bytes")
    return size


def _line(reader: Any) -> bytes:
    line = reader.readline(MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES:
        raise _BrokenAnswer("a line of the answer's head is too long")
    if not line:
        raise _BrokenAnswer("the connection closed before the answer")
    return line


def _status_line(reader: Any) -> tuple[bytes, int]:
    version, _, rest = _line(reader).partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise _BrokenAnswer("not an HTTP/1.x status line")
    return version, int(code)


def _headers(reader: Any) -> Headers:
    headers = Headers()
    for _ in range(MAX_HEADERS + 1):
        line = _line(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise _BrokenAnswer("a header line without a colon")
        name, value = name.strip().lower(), value.strip()
        previous = dict.get(headers, name)
        dict.__setitem__(headers, name, value if previous is None else f"{previous}, {value}")
    raise _BrokenAnswer(f"more than {MAX_HEADERS} header lines")


def _keeps_alive(version: bytes, headers: Headers) -> bool:
    connection = headers.get("connection", "").lower()
    if version == b"HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _chunked(reader: Any) -> bytes:
    parts = []
    while True:
        size_line = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BrokenAnswer("a chunk size that is not a number") from None
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n"):  # trailers
                pass
            return b"".join(parts)
        received = sum(map(len, parts))
        chunk = reader.read(_check_size(received + size) - received)
        if len(chunk) < size:
            raise _BrokenAnswer("the body stopped inside a chunk")
        parts.append(chunk)
        _line(reader)  # the CRLF after the chunk


class UpstreamHttp:
    """Make HTTP calls to one upstream on behalf of a backend named `backend`."""

    def __init__(self, settings: Settings, backend: str) -> None:
        self.backend = backend
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self._ca_bundle = settings.upstream_ca_bundle
        self._pool_size = settings.upstream_pool_size
        self._tls: ssl.SSLContext | None = None
        #: idle connections per (scheme, host, port), most recently used last
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Like urllib3's pools: idle connections are closed when their client goes away.
        weakref.finalize(self, _close_idle, self._idle)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: bytes | str | None = None,
        json: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one request and return its answer whatever its status; raise on transport failure."""
        started = time.perf_counter()
        status = None
        try:
            answer = self._exchange(method, url, params, data, json, headers)
            status = answer.status_code
            return answer
        finally:
            seconds = time.perf_counter() - started
            note_upstream(self.backend, status, seconds)
            if log.isEnabledFor(logging.DEBUG):
                # Never the query string: it can hold a key or the message text.
                log.debug(
                    "%s %s %s -> %s in %.1f ms",
                    self.backend,
                    method,
                    url.partition("?")[0],
                    status or "no answer",
                    seconds * 1000,
                )

    def _exchange(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        data: bytes | str | None,
        json: object,
        headers: Mapping[str, str] | None,
    ) -> Answer:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        # As requests did: characters a URL may not hold are %-encoded, what is already encoded stays.
        target = quote(parts.path or "/", safe=_URL_SAFE)
        query = parts.query
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        if query:
            target += "?" + quote(query, safe=_URL_SAFE)
        sent = {
            "Host": parts.netloc.rpartition("@")[2],
            "User-Agent": "smsbridge",
            "Accept": "*/*",
        }
        body = data
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent["Content-Type"] = "application/json"
        if isinstance(body, str):
            body = body.encode()
        if headers:
            sent.update(headers)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            sent["Content-Length"] = str(len(body or b""))
        lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in sent.items())]
        if any(_CONTROL.search(line) for line in lines):
            # A line break in a value would end the header early and add lines of the caller's choosing.
            raise ValueError("an upstream request's header or path holds a control character")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        origin = (scheme, host, port)
        connection = self._connection(origin)
        try:
            status, answer_headers, content, keep = connection.exchange(method, head, body)
        except TimeoutError as exc:
            connection.close()
            raise BackendTimeout(
                f"the {self.backend} backend did not answer within {self.timeout[1]:g} s; "
                "the message may have been sent: check before sending it again"
            ) from exc
        except (_BrokenAnswer, OSError) as exc:
            # Reset, closed before or while answering, a body cut short, a garbled status line: the
            # request was written, so the upstream may have acted on it.
            connection.close()
            raise BackendConnectionLost(
                f"the connection to the {self.backend} backend broke before it answered in full; "
                "the message may have been sent: check before sending it again"
            ) from exc
        if keep:
            self._release(origin, connection)
        else:
            connection.close()
        return Answer(status, answer_headers, content)

    # --- connections ----------------------------------------------------------------------------------

    def _connection(self, origin: _Origin) -> _Connection:
        """Return an idle connection to `origin` still open, or a new one; raise if none can be made."""
        now = time.monotonic()
        while True:
            with self._lock:
                if self._pid != os.getpid():
                    # A forked worker must never share its parent's sockets.
                    _close_idle(self._idle)
                    self._pid = os.getpid()
                idle = self._idle.get(origin)
                if not idle:
                    break
                connection = idle.pop()
            if now - connection.idle_since < IDLE_SECONDS and connection.still_open(self.timeout[1]):
                return connection
            connection.close()
        return self._connect(origin)

    def _release(self, origin: _Origin, connection: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._pool_size and self._pid == os.getpid():
                connection.idle_since = time.monotonic()
                idle.append(connection)
                return
        connection.close()

    def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port = origin
        log.debug("%s: new connection to %s://%s:%d", self.backend, scheme, host, port)
        sock = None
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout[0])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._tls_context().wrap_socket(sock, server_hostname=host)
        except socket.gaierror as exc:
            raise BackendDnsFailure(
                f"the {self.backend} backend's host name could not be resolved; nothing was sent"
            ) from exc
        except TimeoutError as exc:
            _close(sock)
            raise BackendConnectTimeout(
                f"the {self.backend} backend did not accept a connection within "
                f"{self.timeout[0]:g} s; nothing was sent"
            ) from exc
        except ssl.SSLError as exc:
            _close(sock)
            raise BackendTlsFailure(
                f"the {self.backend} backend failed the TLS handshake; nothing was sent"
            ) from exc
        except OSError as exc:
            # Refused, no route to the host, network down: no connection, so nothing was sent.
            _close(sock)
            raise BackendUnreachable(
                f"the {self.backend} backend refused the connection; nothing was sent"
            ) from exc
        sock.settimeout(self.timeout[1])
        return _Connection(sock)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            # Certificates and host names are always verified: against the system's CAs, or the bundle.
            self._tls = ssl.create_default_context(cafile=self._ca_bundle)
        return self._tls


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


def _close_idle(idle: dict[_Origin, list[_Connection]]) -> None:
    for connections in idle.values():
        for connection in connections:
            connection.close()
    idle.clear()
