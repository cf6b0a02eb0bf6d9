"""mobsms's read flags, aliases and resends in SQLite (state.sqlite3): app.state.base.MobsmsState."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.state.base import MobsmsState
from app.state.sqlite.state_file import StateFile

T = TypeVar("T")


class SqliteMobsmsState(MobsmsState):
    """State store in state.sqlite3."""

    def __init__(self, data_dir: Path) -> None:
        self._file = StateFile(data_dir, "smsbridge's state store", "nothing was sent or changed")

    def received_flags(self, account: str) -> dict[str, tuple[bool, str | None]]:
        """Return {guid: (read, alias)} for an account's received messages that have any."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT guid, read, alias FROM received_flags WHERE account = ?", (account,)
            ).fetchall()
        )
        return {guid: (bool(read), alias) for guid, read, alias in rows}

    def mark_read(self, account: str, guid: str) -> None:
        """Remember that a received message was read."""
        self._run(
            lambda db: db.execute(
                "INSERT INTO received_flags (account, guid, read) VALUES (?, ?, 1)"
                " ON CONFLICT (account, guid) DO UPDATE SET read = 1",
                (account, guid),
            )
        )

    def set_alias(self, account: str, guid: str, alias: str | None) -> None:
        """Remember (or, with None, forget) a received message's alias."""
        self._run(
            lambda db: db.execute(
                "INSERT INTO received_flags (account, guid, alias) VALUES (?, ?, ?)"
                " ON CONFLICT (account, guid) DO UPDATE SET alias = excluded.alias",
                (account, guid, alias),
            )
        )

    def resends(self, account: str, guid: str) -> list[str]:
        """Return the ids of the copies sent for each resend of `guid`, first attempt first."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT new_guid FROM resends WHERE account = ? AND guid = ? ORDER BY attempt",
                (account, guid),
            ).fetchall()
        )
        return [new_guid for (new_guid,) in rows]

    def claim_resend(self, account: str, guid: str, hold: float) -> bool:
        """Claim the next resend of `guid` for `hold` seconds; False when another holds it still."""
        now = time.time()
        return bool(
            self._run(
                lambda db: (
                    db.execute(
                        "INSERT INTO resend_claims (account, guid, until) VALUES (?, ?, ?)"
                        " ON CONFLICT (account, guid) DO UPDATE SET until = excluded.until"
                        " WHERE resend_claims.until < ?",
                        (account, guid, now + hold, now),
                    ).rowcount
                )
            )
        )

    def release_resend(self, account: str, guid: str) -> None:
        """Give up a resend claim (its resend is recorded, or provably sent nothing)."""
        self._run(
            lambda db: db.execute("DELETE FROM resend_claims WHERE account = ? AND guid = ?", (account, guid))
        )

    def add_resend(self, account: str, guid: str, new_guid: str) -> int:
        """Record a resend of `guid` as `new_guid` and end its claim; return its attempt number."""

        def add(db: sqlite3.Connection) -> int:
            (attempt,) = db.execute(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM resends WHERE account = ? AND guid = ?",
                (account, guid),
            ).fetchone()
            db.execute(
                "INSERT INTO resends (account, guid, attempt, new_guid, created_at) VALUES (?, ?, ?, ?, ?)",
                (account, guid, attempt, new_guid, int(time.time())),
            )
            db.execute("DELETE FROM resend_claims WHERE account = ? AND guid = ?", (account, guid))
            return attempt

        return self._run(add)

    def close(self) -> None:
        """Close this thread's database connection."""
        self._file.close()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._file.run(work)
