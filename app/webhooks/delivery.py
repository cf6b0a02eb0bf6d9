"""Webhooks to the client: received SMS and delivery status, stored first, delivered until they land.

An event is stored (in the state store: SMSBRIDGE_STATE_URL) before its source is acknowledged: its
client, type and data, never where it goes. The target (URL, format, secret) is looked up when each attempt is
made, from the configuration as it is then: a secret rotated in the clients file signs the events
still pending, and an event whose client no longer has a target goes dead, with that reason (it is
kept, and replayable once the client has a target again).

A deliverer in every worker claims due events with a single UPDATE each, so each attempt has exactly
one deliverer however many workers share the host, and a claim whose worker died expires after
LEASE_SECONDS. Attempts run concurrently (threads, greenlets in gunicorn's gevent workers): at most
SMSBRIDGE_WEBHOOK_TARGET_CONCURRENCY at once per target (scheme, host and port) and MAX_ATTEMPTS_AT_ONCE
in all, per worker, so one slow receiver holds its own slots, never another client's events. A failed
attempt (timeout, refused, non-2xx) is retried with exponential backoff and jitter until
SMSBRIDGE_WEBHOOK_RETRY_HOURS have passed; then the event is dead: kept, listed and replayable
(`smsbridge webhooks dead|replay ID`), until replayed or purged (`smsbridge webhooks purge-dead`).
Delivered events are purged SMSBRIDGE_WEBHOOK_RETENTION_DAYS after delivery by a sweep that runs at
most once a minute per worker, on an index. Each event keeps one id, sent as the V2 event id and
Idempotency-Key, so receivers can drop repeats.

Storage trouble. Every use of the event store waits for a lock cooperatively (a few ms at a time in
SQLite, BUSY_TIMEOUT in all, never holding the gevent worker); a database still locked then, or a full
data disk, is StorageUnavailable: a source posting an event is answered 503 (retry, nothing was
stored), and the deliverer says so in one line (no traceback, at most once per
STORAGE_LOG_EVERY seconds while it lasts), waits longer between rounds (up to STORAGE_BACKOFF_SECONDS),
and keeps the outcomes of attempts it could not record, to record them when it can.

Formats: `v1`, the vendor's legacy payload {date, hour, time_received, message, number, guid}, for
received SMS only (v1 receivers know nothing else); `v2`, the signed envelope with the
X-SMSMobileAPI-* headers and `v1=` HMAC-SHA256 over `timestamp + "." + body`.

Targets (app/webhook_targets.py). A URL is parsed once, with urllib3's parser (the HTTP client's own),
and refused at configuration and again at delivery unless no other reader could take it for another
place: http or https only; printable ASCII only (no spaces, control characters or backslashes; an
international name in its xn-- form); no user:password@; no fragment; a host that is a DNS name or an
IP address written plainly (127.1, 2130706433, 0x7f.0.0.1 and other odd IPv4 forms are refused, as are
IPv6 zones).
Redirects are not followed and answers are not read past MAX_ANSWER_BYTES. Unless
SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE is set, the name is resolved once per attempt, the attempt is refused if
any of its addresses is private, loopback, link-local, reserved, multicast or otherwise not global, and
the connection goes to the address checked (the name kept for Host, TLS SNI and the certificate); the
address connected to is checked once more before anything is written. Through an egress proxy
(SMSBRIDGE_UPSTREAM_PROXY, HTTPS_PROXY...) the bridge checks its own resolution and the proxy resolves
the name again: make the proxy refuse private addresses too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from app.errors import BackendError, StorageUnavailable
from app.state.base import Outbox, Record
from app.webhook_targets import Endpoint, Target, UnsafeTarget, parse_target

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

API_VERSION = "2026-09-23"
EVENT_TYPES = ("sms.received", "sms.sent", "sms.failed")
MAX_ANSWER_BYTES = 64 * 1024
#: the most attempts one worker runs at once, whatever their targets
MAX_ATTEMPTS_AT_ONCE = 32
#: while the event store fails (locked, disk full), the deliverer says so at most this often
STORAGE_LOG_EVERY = 60.0
#: and waits up to this long between two rounds (doubling from its poll interval)
STORAGE_BACKOFF_SECONDS = 30.0


def render(event: Record, target: Target) -> tuple[bytes, dict[str, str]] | None:
    """Return the body and headers that deliver `event` in `target`'s format (None: not for it)."""
    data = json.loads(event["data"])
    if target.format == "v1":
        if event["type"] != "sms.received":
            return None
        received = datetime.fromtimestamp(float(data["received_at"]), UTC)
        legacy = {
            "date": f"{received:%Y-%m-%d}",
            "hour": f"{received:%H:%M:%S}",
            "time_received": f"{received:%Y-%m-%d %H:%M:%S}",
            "message": data["message"],
            "number": data["from"],
            "guid": data["guid"],
        }
        return json.dumps(legacy, ensure_ascii=False).encode(), {"Content-Type": "application/json"}
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
    signature = hmac.new(target.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
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


def configured_targets(settings: Settings) -> Callable[[str], Target | None]:
    """Return the target lookup of a bridge without a clients file: SMSBRIDGE_WEBHOOK_URL for everyone.

    A managed bridge passes its clients' lookup (`Access.webhook_for`) instead; without it, its
    events find no target.
    """

    def target_for(client: str) -> Target | None:
        if settings.clients_file or not settings.webhook_url:
            return None
        return Target(settings.webhook_url, settings.webhook_format, settings.webhook_secret or "")

    return target_for


@dataclass
class _Outcome:
    """What one attempt came to, recorded by the dispatching thread."""

    event: Record
    #: "delivered", "failed" (retried until the window closes) or "dead" (never retried)
    status: str
    error: str = ""


class Deliverer:
    """A dispatcher thread that runs due events' attempts concurrently, capped per target."""

    def __init__(
        self,
        store: Outbox,
        *,
        timeout: float,
        retry_window: float,
        allow_private: bool,
        settings: Settings | None = None,
        poll: float = 0.5,
        targets: Callable[[str], Target | None] | None = None,
    ) -> None:
        # Imported here, in the worker: gunicorn's master imports this module (app/startup.py prepares
        # its database), and an ssl module imported there would come before gevent's monkey-patching in
        # the workers.
        from app.config import Settings
        from app.upstream import UpstreamHttp

        settings = settings or Settings()
        self.store = store
        self.timeout = timeout
        self.retry_window = retry_window
        self.allow_private = allow_private
        self.poll = poll
        #: the target of a client's events now (None: it has none)
        self.targets = targets or configured_targets(settings)
        self.per_target = settings.webhook_target_concurrency
        self.retention = settings.webhook_retention_days * 86400
        self._wake = threading.Event()
        # The bridge's one HTTP stack: its pools, deadline and egress proxy, with the webhook timeout,
        # and the system's CAs (SMSBRIDGE_UPSTREAM_CA_BUNDLE is for the upstream, not for receivers).
        # The address each new connection reached is checked again there, before a byte is written.
        self._http = UpstreamHttp(
            settings,
            "webhook",
            timeout=(timeout, timeout),
            trust_ca_bundle=False,
            peer_check=None if allow_private else _refuse_private,
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: one dispatcher at a time (the thread, or a caller of deliver_due)
        self._dispatching = threading.Lock()
        #: guards what follows, and is notified when an attempt ends
        self._state = threading.Condition(threading.Lock())
        self._running = 0
        self._in_flight: Counter[tuple[str, str, int]] = Counter()
        self._clients_at: dict[tuple[str, str, int], Counter[str]] = {}
        self._finished: list[_Outcome] = []
        #: called with the event type of each failed attempt (metrics count them)
        self.on_failure: Callable[[str], None] = lambda event_type: None
        #: while the event store fails: when that was last logged (monotonic), and the pause between rounds
        self._trouble_logged: float | None = None
        self._pause: float | None = None

    def start(self) -> None:
        """Start the dispatcher thread (once per process: gunicorn workers each start their own)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-deliverer", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        """Look for due events now rather than at the next poll."""
        self._wake.set()

    def deliver_due(self) -> int:
        """Attempt every due event, wait for those attempts to end; return how many were made."""
        attempts = 0
        while True:
            started = self._dispatch()
            attempts += started
            with self._state:
                self._state.wait_for(lambda: self._running == 0)
            self._record_finished()
            if not started:
                return attempts

    def _run(self) -> None:
        while True:
            try:
                self.store.sweep(self.retention)
                self._dispatch()
            except StorageUnavailable as error:
                self._storage_trouble(error)
            except Exception:
                log.exception("webhook deliverer failed; it goes on")
            else:
                self._storage_back()
            pause = self._pause or self.poll
            # Shared state: wait on the database's notifications, so that an event another host received
            # (or the command line replayed) is attempted at once. One host: the in-process wake-up.
            if self._wake.is_set() or self.store.wait_for_events(pause) is None:
                self._wake.wait(pause)
            self._wake.clear()

    def _storage_trouble(self, error: StorageUnavailable) -> None:
        """Back off while the event store fails; say so in one line, at most once per STORAGE_LOG_EVERY."""
        self._pause = min(max(self._pause or 0.0, self.poll) * 2, STORAGE_BACKOFF_SECONDS)
        now = time.monotonic()
        if self._trouble_logged is None or now - self._trouble_logged >= STORAGE_LOG_EVERY:
            self._trouble_logged = now
            log.error(
                "webhook deliverer paused: the event store failed: %s; events wait, none is lost; it "
                "tries again every %g s at most and says so again in %g s if this lasts",
                self._what_failed(error),
                STORAGE_BACKOFF_SECONDS,
                STORAGE_LOG_EVERY,
            )

    def _what_failed(self, error: StorageUnavailable) -> str:
        """Say what failed in the store in a few words (no path, no data)."""
        return error.trouble

    def _storage_back(self) -> None:
        """End a pause for storage trouble, saying so once."""
        if self._trouble_logged is not None:
            self._trouble_logged = None
            log.warning("webhook deliverer resumed: its event store answers again")
        self._pause = None

    def _dispatch(self) -> int:
        """Record the attempts that ended, then start attempts for due events while slots are free."""
        with self._dispatching:
            self._record_finished()
            started = 0
            with self._state:
                skip = {
                    client
                    for origin, clients in self._clients_at.items()
                    if self._in_flight[origin] >= self.per_target
                    for client in clients
                }
            while True:
                with self._state:
                    if self._running >= MAX_ATTEMPTS_AT_ONCE:
                        return started
                event = self.store.claim(skip_clients=frozenset(skip))
                if event is None:
                    return started
                resolved = self._target_of(event)
                if resolved is None:
                    continue
                target, endpoint = resolved
                with self._state:
                    if self._in_flight[endpoint.origin] >= self.per_target:
                        full = True
                    else:
                        full = False
                        self._running += 1
                        self._in_flight[endpoint.origin] += 1
                        self._clients_at.setdefault(endpoint.origin, Counter())[event["client"]] += 1
                if full:
                    self.store.release(event["id"])
                    skip.add(event["client"])
                    continue
                threading.Thread(
                    target=self._attempt_and_report,
                    args=(event, target, endpoint),
                    name="webhook-attempt",
                    daemon=True,
                ).start()
                started += 1

    def _target_of(self, event: Record) -> tuple[Target, Endpoint] | None:
        """Return the event's target as configured now, parsed; record it dead when there is none."""
        target = self.targets(event["client"])
        if target is None:
            self._record(_Outcome(event, "dead", "the client has no webhook target now"))
            return None
        try:
            return target, parse_target(target.url)
        except UnsafeTarget as exc:
            self._record(_Outcome(event, "dead", f"refused: {exc}"))
            return None

    def _attempt_and_report(self, event: Record, target: Target, endpoint: Endpoint) -> None:
        try:
            outcome = self._attempt(event, target, endpoint)
        except Exception as exc:
            # The kind only, no traceback: a message could hold the URL, and a URL can hold a secret.
            outcome = _Outcome(event, "failed", f"the attempt failed unexpectedly: {type(exc).__name__}")
        with self._state:
            self._running -= 1
            self._in_flight[endpoint.origin] -= 1
            clients = self._clients_at[endpoint.origin]
            clients[event["client"]] -= 1
            if self._in_flight[endpoint.origin] <= 0:
                del self._in_flight[endpoint.origin], self._clients_at[endpoint.origin]
            elif clients[event["client"]] <= 0:
                del clients[event["client"]]
            self._finished.append(outcome)
            self._state.notify_all()
        self._wake.set()

    def _attempt(self, event: Record, target: Target, endpoint: Endpoint) -> _Outcome:
        """Make one attempt (in its own thread or greenlet); touch no database."""
        try:
            rendered = render(event, target)
        except (KeyError, TypeError, ValueError) as exc:
            # An event this bridge cannot render will not render later either: keep it, as dead.
            return _Outcome(event, "dead", f"cannot render: {type(exc).__name__}: {exc}")
        if rendered is None:
            return _Outcome(event, "delivered")
        body, headers = rendered
        try:
            address = self._address_for(endpoint)
            # A redirect is not followed: the receiver is the URL the client gave, nothing else.
            answer = self._http.request(
                "POST",
                endpoint.url,
                data=body,
                headers=headers,
                answer_limit=MAX_ANSWER_BYTES,
                connect_to=address,
            )
        except UnsafeTarget as exc:
            return _Outcome(event, "failed", str(exc))
        except BackendError as exc:
            return _Outcome(event, "failed", exc.note)  # what failed, never the URL (it may hold a secret)
        except (ValueError, OSError) as exc:
            # Name the kind only: a message could hold the URL, which may hold a receiver's secret.
            return _Outcome(event, "failed", type(exc).__name__)
        if 200 <= answer.status_code < 300:
            return _Outcome(event, "delivered")
        return _Outcome(event, "failed", f"HTTP {answer.status_code}")

    def _address_for(self, endpoint: Endpoint) -> str | None:
        """Resolve the host once and check every address; return the one to connect to (None: any)."""
        if self.allow_private:
            return None
        if endpoint.address is not None:
            _refuse_private(str(endpoint.address), endpoint.host)
            return str(endpoint.address)
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise UnsafeTarget("the receiver's host name could not be resolved") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise UnsafeTarget("the receiver's host name has no address")
        # Every address, not only the one used: a name answering public and private alike is refused.
        for address in addresses:
            _refuse_private(address, endpoint.host)
        return addresses[0]

    def _record(self, outcome: _Outcome) -> None:
        event = outcome.event
        if outcome.status == "delivered":
            self.store.delivered(event["id"], attempt=event["attempts"])
            log.info("webhook %s %s delivered (attempt %d)", event["id"], event["type"], event["attempts"])
            return
        # Recorded first: an outcome the store could not take yet is recorded again later, counted once.
        self.store.failed(event, outcome.error, 0 if outcome.status == "dead" else self.retry_window)
        self.on_failure(event["type"])
        log.warning(
            "webhook %s %s failed (attempt %d%s): %s",
            event["id"],
            event["type"],
            event["attempts"],
            ", kept as dead" if outcome.status == "dead" else "",
            outcome.error,
        )

    def _record_finished(self) -> None:
        with self._state:
            finished, self._finished = self._finished, []
        for index, outcome in enumerate(finished):
            try:
                self._record(outcome)
            except StorageUnavailable:
                # Kept, to be recorded when the store answers again (before its lease lets another
                # deliverer attempt it once more).
                with self._state:
                    self._finished[:0] = finished[index:]
                raise


def _refuse_private(address: str, host: str | None = None) -> None:
    """Raise UnsafeTarget unless `address` is a global unicast address."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    ):
        raise UnsafeTarget(
            f"refused: {host or 'the target'} is a private, loopback, link-local or otherwise non-public "
            "address (SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE=true allows it)"
        )
