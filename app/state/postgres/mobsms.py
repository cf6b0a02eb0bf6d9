"""mobsms's read flags, aliases and resends in PostgreSQL, shared by every host: app.state.base.MobsmsState.

A resend claim is one INSERT ... ON CONFLICT ... WHERE the claim held there is past its deadline: however
many hosts claim the same resend at once, one row is written and one claimer wins.
"""

from __future__ import annotations

import time

from app.state.base import MobsmsState
from app.state.postgres.db import Connection, shared

STORE = "smsbridge's state store"
UNDONE = "nothing was sent or changed"


class PostgresMobsmsState(MobsmsState):
    """mobsms's state in the shared PostgreSQL database at `url`."""

    def __init__(self, url: str) -> None:
        self._db = shared(url)

    def received_flags(self, account: str) -> dict[str, tuple[bool, str | None]]:
        """Return {guid: (read, alias)} for an account's received messages that have any."""
        rows = self._db.run(
            lambda db: db.execute(
                "SELECT guid, read, alias FROM received_flags WHERE account = %s", (account,)
            ).fetchall(),
            store=STORE,
            undone=UNDONE,
        )
        return {row["guid"]: (bool(row["read"]), row["alias"]) for row in rows}

    def mark_read(self, account: str, guid: str) -> None:
        """Remember that a received message was read."""
        self._db.run(
            lambda db: db.execute(
                "INSERT INTO received_flags (account, guid, read) VALUES (%s, %s, 1)"
                " ON CONFLICT (account, guid) DO UPDATE SET read = 1",
                (account, guid),
            ),
            store=STORE,
            undone=UNDONE,
        )

    def set_alias(self, account: str, guid: str, alias: str | None) -> None:
        """Remember (or, with None, forget) a received message's alias."""
        self._db.run(
            lambda db: db.execute(
                "INSERT INTO received_flags (account, guid, alias) VALUES (%s, %s, %s)"
                " ON CONFLICT (account, guid) DO UPDATE SET alias = excluded.alias",
                (account, guid, alias),
            ),
            store=STORE,
            undone=UNDONE,
        )

    def resends(self, account: str, guid: str) -> list[str]:
        """Return the ids of the copies sent for each resend of `guid`, first attempt first."""
        rows = self._db.run(
            lambda db: db.execute(
                "SELECT new_guid FROM resends WHERE account = %s AND guid = %s ORDER BY attempt",
                (account, guid),
            ).fetchall(),
            store=STORE,
            undone=UNDONE,
        )
        return [row["new_guid"] for row in rows]

    def claim_resend(self, account: str, guid: str, hold: float) -> bool:
        """Claim the next resend of `guid` for `hold` seconds; False while another holds it."""
        # The server's clock, the same for every host (as the rate-limit windows'): a host whose clock is
        # ahead must not see another's claim as expired. In a transaction: never committed by a thaw.
        return bool(
            self._db.run(
                lambda db: (
                    db.execute(
                        "INSERT INTO resend_claims (account, guid, until)"
                        " VALUES (%s, %s, extract(epoch FROM clock_timestamp()) + %s)"
                        " ON CONFLICT (account, guid) DO UPDATE SET until = excluded.until"
                        " WHERE resend_claims.until < extract(epoch FROM clock_timestamp())",
                        (account, guid, hold),
                    ).rowcount
                ),
                store=STORE,
                undone=UNDONE,
                atomic=True,
            )
        )

    def release_resend(self, account: str, guid: str) -> None:
        """Give up a resend claim (its resend is recorded, or provably sent nothing)."""
        self._db.run(
            lambda db: db.execute(
                "DELETE FROM resend_claims WHERE account = %s AND guid = %s", (account, guid)
            ),
            store=STORE,
            undone=UNDONE,
        )

    def add_resend(self, account: str, guid: str, new_guid: str) -> int:
        """Record a resend of `guid` as `new_guid`, end its claim and return its attempt number."""

        def add(db: Connection) -> int:
            row = db.execute(
                "INSERT INTO resends (account, guid, attempt, new_guid, created_at)"
                " SELECT %s, %s, COALESCE(MAX(attempt), 0) + 1, %s, %s FROM resends"
                " WHERE account = %s AND guid = %s RETURNING attempt",
                (account, guid, new_guid, int(time.time()), account, guid),
            ).fetchone()
            db.execute("DELETE FROM resend_claims WHERE account = %s AND guid = %s", (account, guid))
            assert row is not None  # an INSERT ... SELECT of an aggregate writes one row
            return int(row["attempt"])

        return self._db.run(add, store=STORE, undone=UNDONE, atomic=True)
