"""Idempotency keys in PostgreSQL, shared by every host: the rules are app.state.base.IdempotencyStore's.

A claim is one INSERT ... ON CONFLICT, committed before the send it guards: a second host claiming the
same scope at the same moment waits for the first's row and finds it held. Expired keys are swept on
their index at most once per SWEEP_SECONDS per process, and by one host at a time.
"""

from __future__ import annotations

import time

from app.state.base import SWEEP_SECONDS, IdempotencyStore, Record
from app.state.postgres.db import Connection, shared

STORE = "smsbridge's idempotency store"
UNDONE = "nothing was sent or changed"

CLAIM_SQL = (
    "INSERT INTO idempotency (scope, fingerprint, created_at, holder_until) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (scope) DO UPDATE SET fingerprint = excluded.fingerprint, done = 0,"
    " status = NULL, content_type = NULL, body = NULL, headers = NULL,"
    " created_at = excluded.created_at, holder_until = excluded.holder_until"
    " WHERE idempotency.created_at < %s"
)
SELECT_SQL = "SELECT * FROM idempotency WHERE scope = %s"
SWEEP_SQL = "DELETE FROM idempotency WHERE created_at < %s"


class PostgresIdempotency(IdempotencyStore):
    """Idempotency store in the shared PostgreSQL database at `url`."""

    def __init__(self, url: str) -> None:
        self._db = shared(url)
        self._next_sweep = 0.0

    def claim(self, scope: str, fingerprint: str, ttl: int, hold: float) -> Record | None:
        """Claim `scope` for a new request (None), or return the record of the request that holds it."""
        now = time.time()
        created = int(now)
        if created >= self._next_sweep:
            self._next_sweep = created + SWEEP_SECONDS
            # In a send's path: failing, it says what the send's own failure would (nothing was sent).
            self._db.housekeeping(
                lambda db: db.execute(SWEEP_SQL, (created - ttl,)).rowcount, store=STORE, undone=UNDONE
            )

        def claim(db: Connection) -> Record | None:
            # A row past its TTL that no sweep has removed yet is claimed over, as if it were gone.
            # One transaction: the INSERT ... ON CONFLICT DO UPDATE locks the row it found (even when its
            # WHERE keeps it), so a release cannot delete it before the SELECT reads it; and a claim
            # written to a server that froze is never committed by its thaw (its COMMIT was never sent).
            claimed = db.execute(CLAIM_SQL, (scope, fingerprint, created, now + hold, created - ttl)).rowcount
            if claimed:
                return None
            return db.execute(SELECT_SQL, (scope,)).fetchone()

        return self._db.run(claim, store=STORE, undone=UNDONE, atomic=True)

    def idempotent(self, scope: str) -> Record | None:
        """Return what is kept for `scope`, or None."""
        return self._db.run(
            lambda db: db.execute(SELECT_SQL, (scope,)).fetchone(), store=STORE, undone=UNDONE
        )

    def complete(self, scope: str, status: int, content_type: str, body: bytes, headers: str) -> None:
        """Keep the answer of the request that claimed `scope`, for its repeats."""
        self._db.run(
            lambda db: db.execute(
                "UPDATE idempotency SET done = 1, status = %s, content_type = %s, body = %s, headers = %s"
                " WHERE scope = %s",
                (status, content_type, body, headers, scope),
            ),
            store=STORE,
            undone="the answer was not kept for repeats",
        )

    def release(self, scope: str) -> None:
        """Give up a claim whose request sent nothing, so that a repeat may try again."""
        self._db.run(
            lambda db: db.execute("DELETE FROM idempotency WHERE scope = %s AND done = 0", (scope,)),
            store=STORE,
            undone=UNDONE,
        )
