"""A real HTTP server on 127.0.0.1 that records every request: the base of the fake upstreams.

Tests make a fake misbehave on command, for the next request or every one until `behave()`:

    fake.misbehave("slow", seconds=3)            # answer, but only after 3 s (a read timeout)
    fake.misbehave("reset", always=True)         # read each request, then reset the connection

Every request is recorded in `received` before the fake misbehaves, so tests can count the sends
that reached it whatever happened next.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

#: how a fake can misbehave, and what each kind does
MISBEHAVIOURS = {
    "reset": "read the request, then reset the connection (RST) without answering",
    "reset_mid_answer": "send the status line, the headers and half the body, then reset the connection",
    "slow": "answer as usual, but only after `seconds` (default 5)",
    "truncated_json": "send the usual answer's headers (full Content-Length) and half its body, then close",
    "malformed_json": "answer `status` (default 200) with a body that is not JSON",
    "html_5xx": "answer `status` (default 503) with an HTML error page",
    "rate_limited": "answer 429 with Retry-After: `retry_after` (default 17) and JSON `document`",
    "unexpected_json": "answer `status` (default 200) with JSON of the wrong shape (`document`, a list)",
}

#: what a rate-limited upstream says: mobsms's (Laravel's) words, which the vendor's readers also take
RATE_LIMITED_DOCUMENT = {"error": 429, "success": False, "message": "Too Many Attempts."}
#: valid JSON that neither upstream ever answers to a send: a list, not an object
UNEXPECTED_DOCUMENT = [{"queued": True, "note": "a list, not the usual object"}]
#: a load balancer's error page
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    b"<body><h1>503 Service Unavailable</h1><hr><p>nginx</p></body></html>"
)


@dataclass(frozen=True)
class Received:
    """One request as the fake upstream saw it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> list[tuple[str, str]]:
        """The urlencoded body's pairs, in order."""
        return parse_qsl(self.body.decode(), keep_blank_values=True)

    @property
    def json(self) -> object:
        """The JSON body."""
        return json.loads(self.body)


@dataclass
class Reply:
    """What the fake answers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, document: object, **headers: str) -> Reply:
        """A JSON answer."""
        return cls(status, json.dumps(document).encode(), headers=headers)


@dataclass(frozen=True)
class Misbehaviour:
    """One way of misbehaving (a key of MISBEHAVIOURS), with its options."""

    kind: str
    options: dict[str, Any]
    #: True to misbehave on every request until `behave()`, not only on the next one
    always: bool = False


class FakeUpstream:
    """Serve `handle(received) -> Reply` on 127.0.0.1 in a background thread, recording requests."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._misbehaviour: Misbehaviour | None = None
        #: set by `behave()`, to end the wait of "slow" answers still sleeping
        self._wake = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go in two writes: without this, Nagle's algorithm holds the body
            # back until the client's delayed ACK, 40 ms per request on a kept-alive connection.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                got = Received(
                    method=self.command,
                    path=parts.path,
                    query=parse_qsl(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with fake._lock:
                    fake.received.append(got)
                    misbehaviour = fake._take_misbehaviour()
                if misbehaviour is None:
                    self._answer(fake.handle(got))
                    return
                try:
                    self._misbehave(got, misbehaviour)
                except OSError:
                    # The client gave up first (it timed out, say): nobody is left to answer.
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815 (http.server names)

            def _misbehave(self, got: Received, how: Misbehaviour) -> None:
                options = how.options
                if how.kind == "reset":
                    self._reset()
                elif how.kind == "reset_mid_answer":
                    reply = fake.handle(got)
                    self._answer(reply, body=reply.body[: len(reply.body) // 2])
                    # Let the client read the status line and headers before the RST comes.
                    time.sleep(float(options.get("pause", 0.05)))
                    self._reset()
                elif how.kind == "slow":
                    # The upstream does its work (an SMS goes out) at once; only its answer is late.
                    reply = fake.handle(got)
                    fake._wake.wait(float(options.get("seconds", 5)))
                    self._answer(reply)
                elif how.kind == "truncated_json":
                    reply = fake.handle(got)
                    self._answer(reply, body=reply.body[: len(reply.body) // 2])
                    self.close_connection = True
                elif how.kind == "malformed_json":
                    self._answer(Reply(int(options.get("status", 200)), b"{'result': sent, ok"))
                elif how.kind == "html_5xx":
                    self._answer(
                        Reply(int(options.get("status", 503)), HTML_PAGE, "text/html; charset=utf-8")
                    )
                elif how.kind == "rate_limited":
                    document = options.get("document", RATE_LIMITED_DOCUMENT)
                    retry_after = str(options.get("retry_after", 17))
                    self._answer(Reply.json(429, document, **{"Retry-After": retry_after}))
                elif how.kind == "unexpected_json":
                    document = options.get("document", UNEXPECTED_DOCUMENT)
                    self._answer(Reply.json(int(options.get("status", 200)), document))

            def _answer(self, reply: Reply, body: bytes | None = None) -> None:
                """Send `reply`; with `body`, send that instead of its body, under the full length."""
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body if body is None else body)

            def _reset(self) -> None:
                """Abort the connection: with SO_LINGER 0, close() sends an RST, not a FIN."""
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def handle(self, received: Received) -> Reply:
        """Answer one request; subclasses say how."""
        return Reply.json(404, {"message": "not found"})

    def misbehave(self, kind: str, *, always: bool = False, **options: Any) -> None:
        """Misbehave as `kind` says (see MISBEHAVIOURS) on the next request, or on every one with `always`."""
        if kind not in MISBEHAVIOURS:
            raise ValueError(f"unknown misbehaviour {kind!r}; one of {', '.join(MISBEHAVIOURS)}")
        with self._lock:
            self._wake.clear()
            self._misbehaviour = Misbehaviour(kind, options, always)

    def behave(self) -> None:
        """Answer as usual again, and let "slow" answers still sleeping go (to clients long gone)."""
        with self._lock:
            self._misbehaviour = None
            self._wake.set()

    def reset(self) -> None:
        """Forget what was received."""
        with self._lock:
            self.received.clear()

    def stop(self) -> None:
        """Stop serving."""
        self.behave()
        self.server.shutdown()
        self.server.server_close()

    def _take_misbehaviour(self) -> Misbehaviour | None:
        """Return how to misbehave on this request (with the lock held), using up a one-off."""
        misbehaviour = self._misbehaviour
        if misbehaviour is not None and not misbehaviour.always:
            self._misbehaviour = None
        return misbehaviour
