"""HTTP to the upstreams: kept-alive connections per process, explicit timeouts, TLS verified, no retries.

A send is never retried here: once a request may have been written, repeating it could send an SMS
twice. Transport failures become the bridge's own errors, split by whether anything can have reached
the upstream (`BackendUnreachable`: nothing did) or not (`BackendTimeout`, `BackendConnectionLost`).

This is http.client with a small pool rather than requests: the bridge makes one upstream call per SMS,
and requests spent about 0.4 ms of CPU on each (preparing, merging settings, hooks), more than
everything else the bridge does for a send. What it gave that the bridge uses is here: pooling,
timeouts, TLS verification (SMSBRIDGE_UPSTREAM_CA_BUNDLE), query parameters, JSON bodies, and the
check that a kept-alive connection was not closed by the upstream while idle. Proxies and .netrc
from the environment are not honoured: they would change where SMS go without a word in the bridge's
own configuration. Answers are never decompressed: no Accept-Encoding is sent, so an upstream's answer
is passed on exactly as it came.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urlsplit

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

_Origin = tuple[str, str, int]


class Answer:
    """An upstream's answer: what the backends read of it."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Message, content: bytes) -> None:
        self.status_code = status_code
        #: case-insensitive: `headers.get("retry-after")`, `"Content-Type" in headers`
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """Return the body as JSON; raise ValueError when it is not JSON."""
        return jsonlib.loads(self.content)


class UpstreamHttp:
    """Make HTTP calls to one upstream on behalf of a backend named `backend`."""

    def __init__(self, settings: Settings, backend: str) -> None:
        self.backend = backend
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self._ca_bundle = settings.upstream_ca_bundle
        self._pool_size = settings.upstream_pool_size
        self._tls: ssl.SSLContext | None = None
        #: idle connections per (scheme, host, port), most recently used last, with when they went idle
        self._idle: dict[_Origin, list[tuple[float, http.client.HTTPConnection]]] = {}
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
        origin = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        target = parts.path or "/"
        query = parts.query
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        if query:
            target += "?" + query
        sent_headers = {"User-Agent": "smsbridge", "Accept": "*/*"}
        body = data
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent_headers["Content-Type"] = "application/json"
        if isinstance(body, str):
            body = body.encode()
        if headers:
            sent_headers.update(headers)
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""

        connection = self._connection(origin)
        try:
            connection.request(method, target, body=body, headers=sent_headers)
            response = connection.getresponse()
            content = response.read()
        except TimeoutError as exc:
            connection.close()
            raise BackendTimeout(
                f"the {self.backend} backend did not answer within {self.timeout[1]:g} s; "
                "the message may have been sent: check before sending it again"
            ) from exc
        except (http.client.HTTPException, OSError) as exc:
            # Reset, closed before or while answering, a body cut short, a garbled status line: the
            # request was written, so the upstream may have acted on it.
            connection.close()
            raise BackendConnectionLost(
                f"the connection to the {self.backend} backend broke before it answered in full; "
                "the message may have been sent: check before sending it again"
            ) from exc
        if response.will_close:
            connection.close()
        else:
            self._release(origin, connection)
        return Answer(response.status, response.headers, content)

    # --- connections ----------------------------------------------------------------------------------

    def _connection(self, origin: _Origin) -> http.client.HTTPConnection:
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
                since, connection = idle.pop()
            if now - since < IDLE_SECONDS and _still_open(connection, self.timeout[1]):
                return connection
            connection.close()
        return self._connect(origin)

    def _release(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._pool_size and self._pid == os.getpid():
                idle.append((time.monotonic(), connection))
                return
        connection.close()

    def _connect(self, origin: _Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=self.timeout[0], context=self._tls_context()
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.timeout[0])
        log.debug("%s: new connection to %s://%s:%d", self.backend, scheme, host, port)
        try:
            connection.connect()
        except socket.gaierror as exc:
            raise BackendDnsFailure(
                f"the {self.backend} backend's host name could not be resolved; nothing was sent"
            ) from exc
        except TimeoutError as exc:
            connection.close()
            raise BackendConnectTimeout(
                f"the {self.backend} backend did not accept a connection within "
                f"{self.timeout[0]:g} s; nothing was sent"
            ) from exc
        except ssl.SSLError as exc:
            connection.close()
            raise BackendTlsFailure(
                f"the {self.backend} backend failed the TLS handshake; nothing was sent"
            ) from exc
        except OSError as exc:
            # Refused, no route to the host, network down: no connection, so nothing was sent.
            connection.close()
            raise BackendUnreachable(
                f"the {self.backend} backend refused the connection; nothing was sent"
            ) from exc
        connection.sock.settimeout(self.timeout[1])
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            # Certificates and host names are always verified: against the system's CAs, or the bundle.
            self._tls = ssl.create_default_context(cafile=self._ca_bundle)
        return self._tls


def _close_idle(idle: dict[_Origin, list[tuple[float, http.client.HTTPConnection]]]) -> None:
    for connections in idle.values():
        for _, connection in connections:
            connection.close()
    idle.clear()


def _still_open(connection: http.client.HTTPConnection, read_timeout: float) -> bool:
    """Tell whether an idle kept-alive connection is still open, without waiting.

    An upstream that closed it sent a FIN (the socket reads b"") or, for TLS, a close_notify first;
    anything readable on an idle HTTP/1.1 connection means it cannot be used for a new request.
    """
    sock = connection.sock
    if sock is None:
        return False
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
