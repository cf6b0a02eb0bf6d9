"""The webhook outbox in PostgreSQL: one queue of events for every host, app.state.base.Outbox's rules.

An event is stored once by id (INSERT ... ON CONFLICT DO NOTHING), whichever host receives it, and the
insert notifies the channel NOTIFY_CHANNEL: a deliverer waiting in `wait_for_events` on any host wakes at
once rather than at its next poll. A claim is one statement: the next due event is selected FOR UPDATE
SKIP LOCKED (two deliverers claiming at once take two events, never one twice) and leased, its attempt
counted; outcomes are fenced by that attempt number. Sweeps of delivered events run on one host at a time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid

import psycopg

from app.state.base import (
    FIRST_RETRY_SECONDS,
    JITTER,
    LEASE_SECONDS,
    LONGEST_RETRY_SECONDS,
    SWEEP_SECONDS,
    Outbox,
    Record,
)
from app.state.postgres.db import CONNECT_TIMEOUT, OPERATION_SECONDS, Connection, TimedOut, shared, watchdog

log = logging.getLogger(__name__)

STORE = "smsbridge's webhook event store"
UNDONE = "nothing was stored or changed"
#: the channel an added event is announced on (its payload is empty: the event is read from the table)
NOTIFY_CHANNEL = "smsbridge_outbox"

ADD_SQL = (
    "INSERT INTO webhook_events (id, client, type, data, created_at, next_attempt_at, guid)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
#: the events about one message, on the partial index webhook_events_guid (the column `add` fills)
ABOUT_SQL = (
    "SELECT id, client, type, data, created_at, next_attempt_at, lease_until, attempts, status, last_error,"
    " delivered_at FROM webhook_events WHERE guid = %s ORDER BY created_at LIMIT %s"
)
#: a dead event's columns but its data (the console lists them; it never shows a message); LIMIT NULL: all
DEAD_SQL = (
    "SELECT id, client, type, created_at, next_attempt_at, lease_until, attempts, status, last_error,"
    " delivered_at FROM webhook_events WHERE status = 'dead' ORDER BY created_at LIMIT %s"
)
NOTIFY_SQL = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
#: Leases are taken and compared on the server's clock (unless a test gives `now`): a host whose clock ran
#: ahead of another's by more than LEASE_SECONDS would otherwise take over an attempt still being made.
CLAIM_SQL = (
    "WITH clock AS (SELECT COALESCE(%(now)s::float8, extract(epoch FROM clock_timestamp())) AS now),"
    " next AS ("
    " SELECT id FROM webhook_events, clock WHERE status = 'pending' AND next_attempt_at <= clock.now"
    " AND lease_until <= clock.now AND client <> ALL(%(skip)s::text[])"
    " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " UPDATE webhook_events AS e SET lease_until = clock.now + %(lease)s, attempts = e.attempts + 1"
    " FROM next, clock WHERE e.id = next.id RETURNING e.*"
)
COUNT_SQL = (
    "SELECT status, COUNT(*) AS n FROM webhook_events WHERE status IN ('pending', 'dead') GROUP BY status"
)
PURGE_SQL = "DELETE FROM webhook_events WHERE status = 'delivered' AND delivered_at < %s"
_DELIVERED = (
    "UPDATE webhook_events SET status = 'delivered', delivered_at = %s, lease_until = 0, last_error = ''"
    " WHERE id = %s"
)
_DELIVERED_ON_ATTEMPT = _DELIVERED + " AND attempts = %s AND status = 'pending'"


class PostgresOutbox(Outbox):
    """The events waiting, delivered and dead, in the shared PostgreSQL database at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = shared(url)
        self._next_sweep = 0.0
        self._listener: psycopg.Connection | None = None
        self._listener_pid = 0
        self._listener_lock = threading.Lock()

    def add(self, client: str, event_type: str, data: dict, *, event_id: str | None = None) -> str:
        """Store an event due now and return its id; an id already stored is not stored again.

        The deliverers listening on any host are told at commit (one transaction with the insert).
        """
        event_id = event_id or str(uuid.uuid4())
        now = time.time()
        row = (event_id, client, event_type, json.dumps(data), now, now, _guid_of(data))

        def add(db: Connection) -> None:
            if db.execute(ADD_SQL, row).rowcount:
                db.execute(NOTIFY_SQL)

        self._db.run(add, store=STORE, undone=UNDONE, atomic=True)
        return event_id

    def claim(self, now: float | None = None, *, skip_clients: frozenset[str] = frozenset()) -> Record | None:
        """Lease the next due event for one attempt (attempts + 1), skipping `skip_clients`' events."""
        args = {"now": now, "lease": LEASE_SECONDS, "skip": sorted(skip_clients)}
        # In a transaction: a claim written to a server that froze is never committed by its thaw.
        return self._db.run(
            lambda db: db.execute(CLAIM_SQL, args).fetchone(), store=STORE, undone=UNDONE, atomic=True
        )

    def release(self, event_id: str) -> None:
        """Give back a lease that made no attempt (attempts - 1)."""
        self._db.run(
            lambda db: db.execute(
                "UPDATE webhook_events SET lease_until = 0, attempts = attempts - 1 WHERE id = %s",
                (event_id,),
            ),
            store=STORE,
            undone=UNDONE,
        )

    def delivered(self, event_id: str, now: float | None = None, *, attempt: int | None = None) -> None:
        """Record a delivery; with `attempt`, only if the event is still pending on that attempt."""
        when = time.time() if now is None else now
        args: tuple[object, ...]
        if attempt is None:
            sql, args = _DELIVERED, (when, event_id)
        else:
            sql, args = _DELIVERED_ON_ATTEMPT, (when, event_id, attempt)
        self._db.run(lambda db: db.execute(sql, args), store=STORE, undone=UNDONE)

    def failed(self, event: Record, error: str, retry_window: float) -> None:
        """Record a failed attempt (fenced by its attempt): retry with backoff, or dead past the window."""
        now = time.time()
        wait = min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (event["attempts"] - 1))
        wait *= JITTER.uniform(0.5, 1.5)
        dead = now + wait - event["created_at"] > retry_window
        args = ("dead" if dead else "pending", now + wait, error[:300], event["id"], event["attempts"])
        self._db.run(
            lambda db: db.execute(
                "UPDATE webhook_events SET status = %s, next_attempt_at = %s, lease_until = 0,"
                " last_error = %s WHERE id = %s AND attempts = %s AND status = 'pending'",
                args,
            ),
            store=STORE,
            undone=UNDONE,
        )

    def dead(self, limit: int | None = None) -> list[Record]:
        """Return the events that exhausted their retries, oldest first (`limit` at most), without data."""
        rows = self._db.run(lambda db: db.execute(DEAD_SQL, (limit,)).fetchall(), store=STORE, undone=UNDONE)
        return list(rows)

    def replay(self, event_id: str) -> bool:
        """Make a dead event due again (same id, fresh window); False when there is no such dead event."""
        now = time.time()

        def replay(db: Connection) -> bool:
            made_due = db.execute(
                "UPDATE webhook_events SET status = 'pending', next_attempt_at = %s, created_at = %s,"
                " attempts = 0, lease_until = 0 WHERE id = %s AND status = 'dead'",
                (now, now, event_id),
            ).rowcount
            if made_due:
                db.execute(NOTIFY_SQL)
            return bool(made_due)

        return self._db.run(replay, store=STORE, undone=UNDONE, atomic=True)

    def purge_dead(self) -> int:
        """Delete every dead event and return how many."""
        return self._db.run(
            lambda db: db.execute("DELETE FROM webhook_events WHERE status = 'dead'").rowcount,
            store=STORE,
            undone="nothing was removed",
        )

    def sweep(self, retention: float, now: float | None = None) -> int:
        """Purge events delivered over `retention` seconds ago (at most once per SWEEP_SECONDS per process,
        and by one host at a time: a host finding another sweeping skips its turn)."""
        now = time.time() if now is None else now
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_SECONDS
        return self._db.housekeeping(
            lambda db: db.execute(PURGE_SQL, (now - retention,)).rowcount, store=STORE
        )

    def counts(self) -> dict[str, int]:
        """Return how many events are pending and dead (only the statuses there are)."""
        rows = self._db.run(lambda db: db.execute(COUNT_SQL).fetchall(), store=STORE, undone=UNDONE)
        return {row["status"]: int(row["n"]) for row in rows}

    def wait_for_events(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an event added (or replayed) on any host; True if one was.

        On its own connection (LISTEN holds a session), made at the first call. Never raises: while the
        server cannot be reached it waits the timeout out and returns False, and the deliverer's poll
        finds what is due when the server is back.
        """
        deadline = time.monotonic() + timeout
        try:
            with self._listener_lock:
                listener = self._listen()
                woken = False
                for _ in listener.notifies(timeout=timeout, stop_after=1):
                    woken = True
                return woken
        except (psycopg.Error, TimedOut) as error:
            log.debug("webhook events cannot be listened for now (%s)", type(error).__name__)
            self._drop_listener()
            time.sleep(max(deadline - time.monotonic(), 0.0))
            return False

    def _listen(self) -> psycopg.Connection:
        listener = self._listener
        if listener is None or listener.closed or self._listener_pid != os.getpid():
            # A listener made before a fork is the parent's session: this process makes its own.
            listener = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
            try:
                with watchdog(listener, OPERATION_SECONDS):
                    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except BaseException:
                listener.close()
                raise
            self._listener, self._listener_pid = listener, os.getpid()
        return listener

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and self._listener_pid == os.getpid():
            listener.close()

    def about(self, guid: str, limit: int = 50) -> list[Record]:
        """Return up to `limit` events whose data names message `guid`, oldest first (on the guid column).

        Never data::jsonb: JSON text may hold "\\u0000", which jsonb refuses. A guid holding NUL names no
        event (`add` stores none such), and PostgreSQL text cannot even be compared with one.
        """
        if "\x00" in guid:
            return []
        rows = self._db.run(
            lambda db: db.execute(ABOUT_SQL, (guid, limit)).fetchall(), store=STORE, undone=UNDONE
        )
        return list(rows)

    def close(self) -> None:
        """Close the listening connection, if any (the shared pool stays: other stores use it)."""
        with self._listener_lock:
            self._drop_listener()


def _guid_of(data: dict) -> str | None:
    """Return the message an event is about (data["guid"], a string without NUL), for its guid column."""
    guid = data.get("guid")
    return guid if isinstance(guid, str) and "\x00" not in guid else None
