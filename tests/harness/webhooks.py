"""Webhooks end to end: the client's receivers, posting as mobsms does, and reading what the bridge stored.

Receivers are real HTTP servers on 127.0.0.1 (fakes.server.FakeUpstream). A V2 receiver verifies as the
vendor's example receivers do: HMAC-SHA256 hex of `timestamp + "." + raw body` with the shared secret,
compared in constant time to the signature after `v1=`, timestamps more than 300 s off refused, repeats of
an event id answered 200 {"duplicate": true}, anything else accepted with 202. A V1 receiver is the
vendor's PHP example: 200 for a JSON payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import requests
from flask import Flask

from app.access.tokens import TokenSigner
from app.fronts.webhook_sources import source_urls
from tests.harness.bridge import LiveBridge
from tests.harness.fakes.mobsms import iso
from tests.harness.fakes.server import FakeUpstream, Received, Reply
from tests.harness.gunicorn import Gunicorn
from tests.harness.net import port_of, stop_quickly

T = TypeVar("T")

#: the secret a client's receiver shares with the bridge
SECRET = "whsec-client-shared-secret-0001"
#: the token secret the bridges of webhook tests sign their source URLs with
TOKEN_SECRET = "token-secret-for-webhook-tests-0123456789"
#: the headers every V2 webhook carries (lower-cased, as the fakes record them)
V2_HEADERS = (
    "x-smsmobileapi-event",
    "x-smsmobileapi-event-id",
    "x-smsmobileapi-timestamp",
    "x-smsmobileapi-signature",
    "idempotency-key",
)
#: who sends the incoming SMS of webhook tests, and when it arrived
SENDER = "+32470000009"
RECEIVED_AT = "2026-11-23T10:14:50.000000Z"


# --- receivers --------------------------------------------------------------------------------------------


class Receiver(FakeUpstream):
    """A client's webhook receiver: answers the first `failing` requests 503, then as `accept` says.

    `log` keeps (arrival time, request, status answered) for every request.
    """

    #: False to answer `Connection: close`, so that a closed port is closed even to a pooled connection
    keep_alive = True

    def __init__(self, delay: float = 0.0) -> None:
        self.failing = 0
        self.delay = delay
        self.log: list[tuple[float, Received, int]] = []
        #: TCP connections accepted, whether or not a request came on them
        self.connections = 0
        self._guard = threading.Lock()
        super().__init__()
        receiver = self

        class Counting(self.server.RequestHandlerClass):
            def setup(self) -> None:
                with receiver._guard:
                    receiver.connections += 1
                super().setup()

        self.server.RequestHandlerClass = Counting

    def handle(self, received: Received) -> Reply:
        arrived = time.monotonic()
        time.sleep(self.delay)
        with self._guard:
            if self.failing > 0:
                self.failing -= 1
                reply = Reply.json(503, {"error": "down for maintenance"})
            else:
                reply = self.accept(received)
            self.log.append((arrived, received, reply.status))
        if not self.keep_alive:
            reply.headers["Connection"] = "close"
        return reply

    def accept(self, received: Received) -> Reply:
        return Reply.json(200, {"ok": True})

    def statuses(self) -> list[int]:
        with self._guard:
            return [status for _, _, status in self.log]

    def close_port(self) -> None:
        """Stop listening, at once: connecting to the receiver is refused from now on."""
        server = self.server
        stop_quickly(server.shutdown, port_of(self.url))
        server.server_close()

    def reopen_port(self, host: str = "127.0.0.1") -> None:
        """Listen again on the same port (on another loopback address with `host`)."""
        port = port_of(self.url)
        self.server = ThreadingHTTPServer((host, port), self.server.RequestHandlerClass)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()


class V1Receiver(Receiver):
    """The vendor's PHP example: a JSON payload is logged and answered 200, anything else 400."""

    def accept(self, received: Received) -> Reply:
        try:
            payload = json.loads(received.body)
        except ValueError:
            payload = None
        if payload:
            return Reply(200, b"Webhook received successfully.", "text/html; charset=UTF-8")
        return Reply(400, b"Invalid payload.", "text/html; charset=UTF-8")

    def payloads(self) -> list[dict]:
        with self._guard:
            return [json.loads(r.body) for _, r, status in self.log if status == 200]


def signature_problem(secret: str, headers: dict[str, str], body: bytes) -> str | None:
    """Verify a V2 webhook as the vendor's example receivers do; return why it is refused, or None."""
    timestamp = headers.get("x-smsmobileapi-timestamp", "")
    signature = headers.get("x-smsmobileapi-signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return "stale or missing timestamp"
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    if not signature.startswith("v1=") or not hmac.compare_digest(signature[3:], expected):
        return "bad signature"
    return None


class V2Receiver(Receiver):
    """A receiver written from the vendor's V2 examples: verify, drop repeats (200), accept (202)."""

    def __init__(self, secret: str, delay: float = 0.0) -> None:
        self.secret = secret
        #: (headers, envelope) of every event accepted, in order
        self.events: list[tuple[dict[str, str], dict]] = []
        self.duplicates = 0
        super().__init__(delay)

    def accept(self, received: Received) -> Reply:
        missing = [name for name in V2_HEADERS if not received.headers.get(name)]
        if missing:
            return Reply.json(400, {"error": f"missing {', '.join(missing)}"})
        problem = signature_problem(self.secret, received.headers, received.body)
        if problem:
            return Reply.json(401, {"error": problem})
        envelope = json.loads(received.body)
        if any(seen["id"] == envelope["id"] for _, seen in self.events):
            self.duplicates += 1
            return Reply.json(200, {"duplicate": True})
        self.events.append((received.headers, envelope))
        return Reply.json(202, {"accepted": True})

    def envelopes(self) -> list[dict]:
        with self._guard:
            return [envelope for _, envelope in self.events]

    def ids_accepted(self) -> Counter[str]:
        return Counter(envelope["id"] for envelope in self.envelopes())

    def ids_received(self) -> Counter[str]:
        """Every request's event id, whatever it was answered: how often each event was posted."""
        with self._guard:
            return Counter(r.headers.get("x-smsmobileapi-event-id", "") for _, r, _ in self.log)


class Redirecting(Receiver):
    """Answers every webhook 302 to another URL."""

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__()

    def accept(self, received: Received) -> Reply:
        return Reply(302, b"", "text/html", headers={"Location": self.location})


class Endless(Receiver):
    """Accepts every webhook with 202 and a 1 GiB answer, streamed until the client hangs up.

    `sent` counts the bytes of answer that went out before that.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        receiver = self

        class Streaming(self.server.RequestHandlerClass):
            def _answer(self, reply: Reply, body: bytes | None = None) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                chunk = b"x" * (1 << 16)
                try:
                    for _ in range(1 << 14):
                        self.wfile.write(chunk)
                        receiver.sent += len(chunk)
                except OSError:
                    pass
                self.close_connection = True

        self.server.RequestHandlerClass = Streaming

    def accept(self, received: Received) -> Reply:
        return Reply(202, b"", "text/plain")


# --- helpers ---------------------------------------------------------------------------------------------


def wait_for(check: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    """Return check()'s first truthy value, polling until `timeout`; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def events_in(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every stored event by id, read straight from the bridge's SQLite file."""
    path = data_dir / "webhooks.sqlite3"
    if not path.exists():
        return {}
    with closing(sqlite3.connect(path, timeout=5)) as db:
        db.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in db.execute("SELECT * FROM webhook_events")}


def event_in(data_dir: Path, event_id: str) -> dict[str, Any]:
    return events_in(data_dir)[event_id]


def data_dir_of(bridge: LiveBridge) -> Path:
    return bridge.app.extensions["smsbridge"].settings.data_dir


def urls_of(bridge: LiveBridge, client: str = "default") -> dict[str, str]:
    return source_urls(bridge.app.extensions["smsbridge"], client)


def mobsms_post(url: str, event: str, data: dict) -> requests.Response:
    """Post to the bridge as mobsms's webhooks and callback_url do: {"event", "data", "timestamp"}."""
    body = {"event": event, "data": data, "timestamp": iso(None)}
    return requests.post(
        url,
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json", "Connection": "close"},
        timeout=10,
    )


def park(flask_app: Flask) -> None:
    """Make a finished test's deliverer thread idle, so it never posts to a later test's receiver."""
    flask_app.extensions["smsbridge"].deliverer._dispatch = lambda: 0


def gunicorn_source_url(bridge: Gunicorn, source: str = "mobsms", client: str = "default") -> str:
    """The source URL a bridge served by gunicorn with TOKEN_SECRET gives out."""
    state = SimpleNamespace(
        settings=SimpleNamespace(public_url=bridge.url), tokens=TokenSigner(TOKEN_SECRET.encode(), 3600)
    )
    return source_urls(state, client)[source]
