"""Webhooks to the client: received SMS and delivery status, stored first, delivered until they land.

An event is stored (SQLite in SMSBRIDGE_DATA_DIR) before its source is acknowledged. A deliverer
thread in every worker claims due events one at a time with a single UPDATE, so each attempt has
exactly one deliverer however many workers share the host, and a claim whose worker died expires
after LEASE_SECONDS. A failed attempt (timeout, refused, non-2xx) is retried with exponential backoff
and jitter until SMSBRIDGE_WEBHOOK_RETRY_HOURS have passed; then the event is dead: kept, listed and
replayable (`python -m app.webhooks dead|replay ID`). Each event keeps one id, sent as the V2 event id
and Idempotency-Key, so receivers can drop repeats.

Formats: `v1`, the vendor's legacy payload {date, hour, time_received, message, number, guid}, for
received SMS only (v1 receivers know nothing else); `v2`, the signed envelope with the
X-SMSMobileAPI-* headers and `v1=` HMAC-SHA256 over `timestamp + "." + body`.

Targets are http or https, redirects are not followed, answers are not read past MAX_ANSWER_BYTES, and
private, loopback and link-local addresses are refused unless SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE is set.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.errors import BackendError
from app.sqlite_db import Database, ThreadConnections

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)

API_VERSION = "2026-09-23"
EVENT_TYPES = ("sms.received", "sms.sent", "sms.failed")
#: how long a claim keeps other deliverers off an event: well above one attempt (timeouts up to 30 s)
LEASE_SECONDS = 120
MAX_ANSWER_BYTES = 64 * 1024
FIRST_RETRY_SECONDS = 2.0
LONGEST_RETRY_SECONDS = 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    url TEXT NOT NULL,
    format TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (status, next_attempt_at);
"""
#: the file and its migrations, oldest first: append, never edit (its user_version counts those applied)
DATABASE = Database("webhooks.sqlite3", (SCHEMA,))


@dataclass(frozen=True)
class Target:
    """Where a client's events go."""

    url: str
    format: str = "v2"
    secret: str = field(default="", repr=False)


def check_target(url: str, fmt: str, where: str) -> None:
    """Raise ValueError unless `url` and `fmt` make a valid target."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: the webhook URL must be http:// or https://")
    if fmt not in ("v1", "v2"):
        raise ValueError(f"{where}: the webhook format must be v1 or v2")


class EventStore:
    """The events waiting, delivered and dead."""

    def __init__(self, data_dir: Path) -> None:
        self._connections = ThreadConnections(
            data_dir / DATABASE.file_name, DATABASE.migrations, autocommit=True
        )

    def add(
        self, client: str, event_type: str, data: dict, target: Target, *, event_id: str | None = None
    ) -> str:
        """Store an event for delivery now and return its id; an id already stored is not stored again."""
        event_id = event_id or str(uuid.uuid4())
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO webhook_events (id, client, type, data, url, format, secret,"
                " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    client,
                    event_type,
                    json.dumps(data),
                    target.url,
                    target.format,
                    target.secret,
                    now,
                    now,
                ),
            )
        return event_id

    def claim(self, now: float | None = None) -> sqlite3.Row | None:
        """Take the next due event for one attempt (no other deliverer can take it meanwhile)."""
        now = time.time() if now is None else now
        with self._db() as db:
            return db.execute(
                "UPDATE webhook_events SET lease_until = ?, attempts = attempts + 1 WHERE id = ("
                " SELECT id FROM webhook_events WHERE status = 'pending' AND next_attempt_at <= ?"
                " AND lease_until <= ? ORDER BY next_attempt_at LIMIT 1) RETURNING *",
                (now + LEASE_SECONDS, now, now),
            ).fetchone()

    def delivered(self, event_id: str) -> None:
        """Record a delivery."""
        with self._db() as db:
            db.execute(
                "UPDATE webhook_events SET status = 'delivered', delivered_at = ?, lease_until = 0,"
                " last_error = '' WHERE id = ?",
                (time.time(), event_id),
            )

    def failed(self, event: sqlite3.Row, error: str, retry_window: float) -> None:
        """Record a failed attempt: retry later with backoff and jitter, or give up after the window."""
        now = time.time()
        wait = min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (event["attempts"] - 1))
        wait *= random.uniform(0.5, 1.5)  # noqa: S311 (jitter, not a secret)
        dead = now + wait - event["created_at"] > retry_window
        with self._db() as db:
            db.execute(
                "UPDATE webhook_events SET status = ?, next_attempt_at = ?, lease_until = 0, last_error = ?"
                " WHERE id = ?",
                ("dead" if dead else "pending", now + wait, error[:300], event["id"]),
            )

    def dead(self) -> list[sqlite3.Row]:
        """Return the events that exhausted their retries."""
        return (
            self._db()
            .execute("SELECT * FROM webhook_events WHERE status = 'dead' ORDER BY created_at")
            .fetchall()
        )

    def replay(self, event_id: str) -> bool:
        """Deliver a dead event again (same id), with a fresh retry window."""
        now = time.time()
        with self._db() as db:
            return bool(
                db.execute(
                    "UPDATE webhook_events SET status = 'pending', next_attempt_at = ?, created_at = ?,"
                    " attempts = 0, lease_until = 0 WHERE id = ? AND status = 'dead'",
                    (now, now, event_id),
                ).rowcount
            )

    def counts(self) -> dict[str, int]:
        """Return how many events are pending, delivered and dead."""
        rows = self._db().execute("SELECT status, COUNT(*) FROM webhook_events GROUP BY status").fetchall()
        return {status: n for status, n in rows}

    def close(self) -> None:
        """Close this thread's database connection."""
        self._connections.close()

    def _db(self) -> sqlite3.Connection:
        return self._connections.get()


def render(event: sqlite3.Row) -> tuple[bytes, dict[str, str]] | None:
    """Return the body and headers that deliver `event` in its target's format (None: not for it)."""
    data = json.loads(event["data"])
    if event["format"] == "v1":
        if event["type"] != "sms.received":
            return None
        received = datetime.fromtimestamp(float(data["received_at"]), UTC)
        body = {
            "date": f"{received:%Y-%m-%d}",
            "hour": f"{received:%H:%M:%S}",
            "time_received": f"{received:%Y-%m-%d %H:%M:%S}",
            "message": data["message"],
            "number": data["from"],
            "guid": data["guid"],
        }
        return json.dumps(body, ensure_ascii=False).encode(), {"Content-Type": "application/json"}
    created = _iso(event["created_at"])
    if isinstance(data.get("received_at"), int | float):
        data["received_at"] = _iso(data["received_at"])
    occurred = data.pop("occurred_at", None) or data.get("received_at") or created
    envelope = {
        "id": event["id"],
        "type": event["type"],
        "api_version": API_VERSION,
        "created_at": created,
        "occurred_at": occurred,
        "data": data,
    }
    body = json.dumps(envelope, ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    signature = hmac.new(
        event["secret"].encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-SMSMobileAPI-Event": event["type"],
        "X-SMSMobileAPI-Event-ID": event["id"],
        "X-SMSMobileAPI-Timestamp": timestamp,
        "X-SMSMobileAPI-Signature": f"v1={signature}",
        "Idempotency-Key": event["id"],
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class UnsafeTarget(ValueError):
    """A target the deliverer will not connect to."""


class Deliverer:
    """A thread that delivers due events, one attempt at a time."""

    def __init__(
        self,
        store: EventStore,
        *,
        timeout: float,
        retry_window: float,
        allow_private: bool,
        settings: Settings | None = None,
        poll: float = 0.5,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.retry_window = retry_window
        self.allow_private = allow_private
        self.poll = poll
        self._wake = threading.Event()
        # Imported here, in the worker: gunicorn's master imports this module (for `check_target`), and
        # an ssl module imported there would come before gevent's monkey-patching in the workers.
        from app.config import Settings
        from app.upstream import UpstreamHttp

        # The bridge's one HTTP stack: its pools, deadline and egress proxy, with the webhook timeout,
        # and the system's CAs (SMSBRIDGE_UPSTREAM_CA_BUNDLE is for the upstream, not for receivers).
        self._http = UpstreamHttp(
            settings or Settings(),
            "webhook",
            timeout=(timeout, timeout),
            trust_ca_bundle=False,
            peer_check=None if allow_private else _refuse_private,
        )
        # requests' API on those pools: only the status matters, so a long answer is cut, not refused.
        self._session = self._http.session(answer_limit=MAX_ANSWER_BYTES)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: called with the event type of each failed attempt (metrics count them)
        self.on_failure: Callable[[str], None] = lambda event_type: None

    def start(self) -> None:
        """Start the thread (once per process: gunicorn workers each start their own)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-deliverer", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        """Look for due events now rather than at the next poll."""
        self._wake.set()

    def deliver_due(self) -> int:
        """Deliver every due event once; return how many attempts were made."""
        attempts = 0
        while (event := self.store.claim()) is not None:
            attempts += 1
            self._attempt(event)
        return attempts

    def _run(self) -> None:
        while True:
            try:
                self.deliver_due()
            except Exception:
                log.exception("webhook deliverer failed; it goes on")
            self._wake.wait(self.poll)
            self._wake.clear()

    def _attempt(self, event: sqlite3.Row) -> None:
        try:
            rendered = render(event)
        except (KeyError, TypeError, ValueError) as exc:
            # An event this bridge cannot render will not render later either: keep it, as dead.
            self.store.failed(event, f"cannot render: {type(exc).__name__}: {exc}", retry_window=0)
            log.error("webhook %s %s cannot be rendered: %s", event["id"], event["type"], type(exc).__name__)
            return
        if rendered is None:
            self.store.delivered(event["id"])
            return
        body, headers = rendered
        try:
            self._check_address(event["url"])
            # A redirect is not followed: the receiver is the URL the client gave, nothing else.
            answer = self._session.post(event["url"], data=body, headers=headers, allow_redirects=False)
            ok = 200 <= answer.status_code < 300
            error = "" if ok else f"HTTP {answer.status_code}"
        except UnsafeTarget as exc:
            ok, error = False, str(exc)
        except BackendError as exc:
            ok, error = False, exc.note  # says what failed, never the URL (it may hold a receiver's secret)
        except (ValueError, OSError) as exc:
            # Name the kind only: a message could hold the URL, which may hold a receiver's secret.
            ok, error = False, type(exc).__name__
        if ok:
            self.store.delivered(event["id"])
            log.info("webhook %s %s delivered (attempt %d)", event["id"], event["type"], event["attempts"])
        else:
            self.on_failure(event["type"])
            self.store.failed(event, error, self.retry_window)
            log.warning(
                "webhook %s %s failed (attempt %d): %s", event["id"], event["type"], event["attempts"], error
            )

    def _check_address(self, url: str) -> None:
        host = urlsplit(url).hostname or ""
        if self.allow_private:
            return
        # Every address of the name, before connecting; the one connected to is checked again then.
        for info in socket.getaddrinfo(host, None):
            _refuse_private(info[4][0], host)


def _refuse_private(address: str, host: str | None = None) -> None:
    """Raise UnsafeTarget if `address` is private, loopback, link-local or reserved."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) is not part of it
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved:
        raise UnsafeTarget(
            f"refused: {host or 'the target'} is a private, loopback or link-local address "
            "(SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE=true allows it)"
        )


def main(argv: list[str]) -> int:
    """`python -m app.webhooks dead` lists dead events; `replay ID` delivers one again."""
    from app.config import Settings

    store = EventStore(Settings.from_env().data_dir)
    if argv[:1] == ["dead"]:
        for event in store.dead():
            print(event["id"], event["type"], event["client"], event["attempts"], event["last_error"])
        return 0
    if argv[:1] == ["replay"] and len(argv) == 2:
        return 0 if store.replay(argv[1]) else 1
    print("usage: python -m app.webhooks dead | replay EVENT_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
