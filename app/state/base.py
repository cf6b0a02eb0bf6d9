"""What smsbridge must never lose or repeat, one interface per kind of state.

Each kind has an implementation per engine (app/state/sqlite/ and app/state/postgres/). The rules are
written for a store that several hosts share, so that an engine keeps them without in-process locks:

- a claim is a row written before the work it guards (an idempotency key before the send, a resend before
  the upstream call), carrying its holder's deadline; a claim past its deadline belongs to a holder that died;
- a lease is a claim that ends by itself (an outbox event taken for one attempt); an outcome is recorded only
  if its attempt still holds the event (fencing by attempt number), so a deliverer whose lease expired can
  never overwrite a newer attempt;
- housekeeping (expiry sweeps, purges) is rate-limited per process and runs on an index, never as a scan
  per request.

Every method raises app.errors.StorageUnavailable when the store cannot be used (locked, full, down): the
fronts answer it in the caller's dialect, retryable, saying what was not done.

Records are read by column name (`record["fingerprint"]`): a sqlite3.Row, or a dict from another engine.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Mapping
from typing import Any

#: a stored row, read by column name
Record = Mapping[str, Any]

#: how long an outbox claim keeps other deliverers off an event: well above one attempt (timeouts up to 30 s)
LEASE_SECONDS = 120
#: the first retry of a failed webhook attempt, doubling up to the longest (jitter ±50 %)
FIRST_RETRY_SECONDS = 2.0
LONGEST_RETRY_SECONDS = 3600.0
#: the retries' jitter draws from a generator of its own: the random module's shared one is the whole
#: process's (a library seeding or checking it, as hypothesis does in the tests, must not see the
#: deliverer's draws, nor change them)
JITTER = random.Random()  # noqa: S311 (jitter, not a secret)
#: how often, at most, a process sweeps expired rows (idempotency keys, delivered events)
SWEEP_SECONDS = 60


class IdempotencyStore(abc.ABC):
    """Idempotency keys: one claim per scope (a client and its key), its answer kept for repeats.

    A record has: fingerprint, done (0/1), status, content_type, body, headers (JSON), created_at,
    holder_until (the claimer's deadline, or None for claims made before deadlines were kept).
    """

    @abc.abstractmethod
    def claim(self, scope: str, fingerprint: str, ttl: int, hold: float) -> Record | None:
        """Claim `scope` for a new request (None), or return the record of the request that holds it.

        A record past `ttl` seconds is claimed over as if it were gone; `hold` is the new holder's deadline.
        """

    @abc.abstractmethod
    def idempotent(self, scope: str) -> Record | None:
        """Return what is kept for `scope`, or None."""

    @abc.abstractmethod
    def complete(self, scope: str, status: int, content_type: str, body: bytes, headers: str) -> None:
        """Keep the answer of the request that claimed `scope`, for its repeats."""

    @abc.abstractmethod
    def release(self, scope: str) -> None:
        """Give up an unanswered claim whose request sent nothing, so that a repeat may try again."""

    def close(self) -> None:  # noqa: B027 (an engine without connections has nothing to close)
        """Close this thread's connections."""


class MobsmsState(abc.ABC):
    """What mobsms has no notion of, per account: read flags, aliases, resends and their claims."""

    @abc.abstractmethod
    def received_flags(self, account: str) -> dict[str, tuple[bool, str | None]]:
        """Return {guid: (read, alias)} for an account's received messages that have any."""

    @abc.abstractmethod
    def mark_read(self, account: str, guid: str) -> None:
        """Remember that a received message was read."""

    @abc.abstractmethod
    def set_alias(self, account: str, guid: str, alias: str | None) -> None:
        """Remember (or, with None, forget) a received message's alias."""

    @abc.abstractmethod
    def resends(self, account: str, guid: str) -> list[str]:
        """Return the ids of the copies sent for each resend of `guid`, first attempt first."""

    @abc.abstractmethod
    def claim_resend(self, account: str, guid: str, hold: float) -> bool:
        """Claim the next resend of `guid` for `hold` seconds; False while another holds it."""

    @abc.abstractmethod
    def release_resend(self, account: str, guid: str) -> None:
        """Give up a resend claim (its resend is recorded, or provably sent nothing)."""

    @abc.abstractmethod
    def add_resend(self, account: str, guid: str, new_guid: str) -> int:
        """Record a resend of `guid` as `new_guid`, end its claim and return its attempt number."""

    def close(self) -> None:  # noqa: B027
        """Close this thread's connections."""


class Outbox(abc.ABC):
    """Webhook events: stored once by id, leased to one deliverer per attempt, retried, dead, replayed.

    A record has: id, client, type, data (JSON text), created_at, next_attempt_at, lease_until, attempts,
    status ('pending', 'delivered', 'dead'), last_error, delivered_at. No target: where an event goes,
    and with what secret, is looked up when it is delivered.
    """

    @abc.abstractmethod
    def add(self, client: str, event_type: str, data: dict, *, event_id: str | None = None) -> str:
        """Store an event due now and return its id; an id already stored is not stored again."""

    @abc.abstractmethod
    def claim(self, now: float | None = None, *, skip_clients: frozenset[str] = frozenset()) -> Record | None:
        """Lease the next due event for one attempt (attempts + 1), skipping `skip_clients`' events."""

    @abc.abstractmethod
    def release(self, event_id: str) -> None:
        """Give back a lease that made no attempt (attempts - 1)."""

    @abc.abstractmethod
    def delivered(self, event_id: str, now: float | None = None, *, attempt: int | None = None) -> None:
        """Record a delivery; with `attempt`, only if the event is still pending on that attempt."""

    @abc.abstractmethod
    def failed(self, event: Record, error: str, retry_window: float) -> None:
        """Record a failed attempt (fenced by its attempt): retry with backoff, or dead past the window."""

    @abc.abstractmethod
    def dead(self, limit: int | None = None) -> list[Record]:
        """Return the events that exhausted their retries, oldest first (`limit` of them at most).

        Their records hold every column but `data`: what lists them shows their id, type, client,
        attempts and last error, never the message the event carries.
        """

    @abc.abstractmethod
    def replay(self, event_id: str) -> bool:
        """Make a dead event due again (same id, fresh window); False when there is no such dead event."""

    @abc.abstractmethod
    def purge_dead(self) -> int:
        """Delete every dead event and return how many."""

    @abc.abstractmethod
    def sweep(self, retention: float, now: float | None = None) -> int:
        """Purge events delivered over `retention` seconds ago (at most once per SWEEP_SECONDS)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Return how many events are pending and dead (only the statuses there are)."""

    def wait_for_events(self, timeout: float) -> bool | None:
        """Wait up to `timeout` s for an event added or replayed on any host: True if one was, else False.

        None at once when the engine cannot tell (SQLite: one host, whose adds wake the deliverer directly).
        """
        return None

    def close(self) -> None:  # noqa: B027
        """Close this thread's connections."""

    @abc.abstractmethod
    def about(self, guid: str, limit: int = 50) -> list[Record]:
        """Return up to `limit` events whose data names message `guid` (data["guid"]), oldest first.

        For the web inbox, whose message page asks every few seconds: read on an index, never a scan.
        """
