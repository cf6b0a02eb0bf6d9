"""The sandbox's data in PostgreSQL, shared by every host: app.state.sandbox.SandboxStore.

The tables are SQLite's (app/state/sqlite/sandbox.py) with a `sandbox_` prefix, so that a record reads the
same whichever engine it comes from; the sent log keeps its insertion order in `seq` (SQLite's rowid).
Where hosts could race, one statement decides: an account is made by one INSERT ... ON CONFLICT DO NOTHING
(its first phone with it, in the same transaction), and a resend is one UPDATE ... WHERE status = 'failed'
(the second of two at once waits for the first's row lock, then finds the message sent: it resends nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from app.state.base import Record
from app.state.postgres.db import Connection, PostgresDatabase, shared
from app.state.sandbox import (
    FailedWhere,
    NewCall,
    NewEmail,
    NewNotification,
    NewReceived,
    NewSent,
    SandboxStore,
    Via,
)

T = TypeVar("T")

STORE = "the smsbridge sandbox's database"
UNDONE = "nothing was sent or changed"

#: the sandbox's tables: a migration of app.state.postgres.MIGRATIONS (appended there, never edited)
INSERT_SENT = """
INSERT INTO sandbox_sent (guid, account, recipient, message, port, sidentifiant, via_sms, via_whatsapp,
                          encrypted, shorturl, url_media, schedule_timestamp, created_at, status, sent_at)
VALUES (%(guid)s, %(account)s, %(recipient)s, %(message)s, %(port)s, %(sidentifiant)s, %(via_sms)s,
        %(via_whatsapp)s, %(encrypted)s, %(shorturl)s, %(url_media)s, %(schedule_timestamp)s, %(created_at)s,
        %(status)s, %(sent_at)s)
"""
INSERT_RECEIVED = """
INSERT INTO sandbox_received (guid, account, channel, number, message, received_at, device, kind, contact)
VALUES (%(guid)s, %(account)s, %(channel)s, %(number)s, %(message)s, %(received_at)s, %(device)s, %(kind)s,
        %(contact)s)
RETURNING *
"""
#: the sent log's channel filters, and the error columns of a failure: fixed SQL, never a caller's text
_VIA = {None: "TRUE", "sms": "via_sms = 1", "whatsapp": "via_whatsapp = 1"}
_ERROR_COLUMN = {"mobile": "error_mobile", "api": "error_api"}


def inbox_query(
    search: str = "", status: str | None = None, via: Via | None = None, limit: int = 100
) -> tuple[str, tuple[object, ...]]:
    """The web inbox's sent messages of every account: newest first on sandbox_sent_recent.

    Searched as plain text (strpos, not LIKE), lower-cased by smsbridge_lower (Unicode, whatever the
    database's locale) on both sides.
    """
    sql = f"SELECT * FROM sandbox_sent WHERE {_VIA[via]}"  # noqa: S608 (fixed conditions)
    args: tuple[object, ...] = ()
    if search:
        sql += (
            " AND (strpos(smsbridge_lower(recipient), smsbridge_lower(%s)) > 0"
            " OR strpos(smsbridge_lower(message), smsbridge_lower(%s)) > 0)"
        )
        args += (search, search)
    if status:
        sql += " AND status = %s"
        args += (status,)
    return sql + " ORDER BY created_at DESC, seq DESC LIMIT %s", (*args, limit)


def inbox_received_query(search: str = "", limit: int = 100) -> tuple[str, tuple[object, ...]]:
    """The web inbox's received messages of every account: newest first on sandbox_received_recent."""
    sql = "SELECT * FROM sandbox_received"
    args: tuple[object, ...] = ()
    if search:
        sql += (
            " WHERE strpos(smsbridge_lower(number), smsbridge_lower(%s)) > 0"
            " OR strpos(smsbridge_lower(message), smsbridge_lower(%s)) > 0"
        )
        args = (search, search)
    return sql + " ORDER BY received_at DESC, id DESC LIMIT %s", (*args, limit)


class PostgresSandboxStore(SandboxStore):
    """The sandbox's data in the shared PostgreSQL database at `url` (or in `database`, its pool)."""

    def __init__(self, url: str, database: PostgresDatabase | None = None) -> None:
        self._db = database if database is not None else shared(url)

    # --- accounts ------------------------------------------------------------------------------------

    def account(self, account: str) -> Record | None:
        return self._run(
            lambda db: db.execute("SELECT * FROM sandbox_accounts WHERE account = %s", (account,)).fetchone()
        )

    def create_account(self, account: str, first_device: tuple[str, str, str], now: int) -> bool:
        def create(db: Connection) -> bool:
            made = db.execute(
                "INSERT INTO sandbox_accounts (account) VALUES (%s) ON CONFLICT DO NOTHING", (account,)
            ).rowcount
            if not made:
                return False
            db.execute(
                "INSERT INTO sandbox_devices (account, sid, label, phone_number, last_seen)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (account, *first_device, now),
            )
            return True

        return self._run(create, atomic=True)

    def set_whatsapp_active(self, account: str, active: bool | None) -> None:
        args: tuple[object, ...]
        if active is None:
            sql = "UPDATE sandbox_accounts SET whatsapp_active = 1 - whatsapp_active WHERE account = %s"
            args = (account,)
        else:
            sql = "UPDATE sandbox_accounts SET whatsapp_active = %s WHERE account = %s"
            args = (int(active), account)
        self._run(lambda db: db.execute(sql, args))

    def open_whatsapp_sync(self, account: str, until: int) -> None:
        self._run(
            lambda db: db.execute(
                "UPDATE sandbox_accounts SET whatsapp_sync_expires = %s WHERE account = %s", (until, account)
            )
        )

    # --- phones --------------------------------------------------------------------------------------

    def devices(self, account: str) -> list[Record]:
        return self._all("SELECT * FROM sandbox_devices WHERE account = %s ORDER BY sid", (account,))

    def put_device(self, account: str, sid: str, label: str, phone_number: str, last_seen: int) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT INTO sandbox_devices (account, sid, label, phone_number, last_seen)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (account, sid) DO UPDATE SET"
                " label = excluded.label, phone_number = excluded.phone_number,"
                " last_seen = excluded.last_seen",
                (account, sid, label, phone_number, last_seen),
            )
        )

    def update_device(self, account: str, sid: str, label: str, phone_number: str | None) -> bool:
        return self._changed(
            "UPDATE sandbox_devices SET label = %s, phone_number = COALESCE(%s, phone_number)"
            " WHERE account = %s AND sid = %s",
            (label, phone_number, account, sid),
        )

    def delete_device(self, account: str, sid: str) -> bool:
        def delete(db: Connection) -> bool:
            gone = db.execute(
                "DELETE FROM sandbox_devices WHERE account = %s AND sid = %s", (account, sid)
            ).rowcount
            if not gone:
                return False
            db.execute("DELETE FROM sandbox_received WHERE account = %s AND device = %s", (account, sid))
            return True

        return self._run(delete, atomic=True)

    # --- sent ----------------------------------------------------------------------------------------

    def add_sent(self, rows: Sequence[NewSent]) -> None:
        def add(db: Connection) -> None:
            with db.cursor() as cursor:
                cursor.executemany(INSERT_SENT, rows)

        self._run(add, atomic=True)

    def sent(
        self, account: str, *, via: Via | None = None, guid: str | None = None, oldest_first: bool = False
    ) -> list[Record]:
        sql = f"SELECT * FROM sandbox_sent WHERE account = %s AND {_VIA[via]}"  # noqa: S608 (fixed conditions)
        args: tuple[str, ...] = (account,)
        if guid is not None:
            sql += " AND guid = %s"
            args += (guid,)
        sql += " ORDER BY created_at, seq" if oldest_first else " ORDER BY created_at DESC, seq DESC"
        return self._all(sql, args)

    def delete_sent(self, account: str, guids: Sequence[str]) -> int:
        return self._run(
            lambda db: (
                db.execute(
                    "DELETE FROM sandbox_sent WHERE account = %s AND guid = ANY(%s)", (account, list(guids))
                ).rowcount
            )
        )

    def fail_sent(self, account: str, guid: str, error: str, where: FailedWhere) -> bool:
        column = _ERROR_COLUMN[where]
        return self._changed(
            f"UPDATE sandbox_sent SET status = 'failed', sent_at = NULL, {column} = %s"  # noqa: S608 (a fixed name)
            " WHERE account = %s AND guid = %s",
            (error, account, guid),
        )

    def resend(self, account: str, guid: str, now: int) -> int | None:
        row = self._run(
            lambda db: db.execute(
                "UPDATE sandbox_sent SET status = 'sent', sent_at = %s, error_api = '', error_mobile = '',"
                " attempts = attempts + 1 WHERE account = %s AND guid = %s AND status = 'failed'"
                " RETURNING attempts",
                (now, account, guid),
            ).fetchone()
        )
        return None if row is None else int(row["attempts"])

    # --- received ------------------------------------------------------------------------------------

    def add_received(self, row: NewReceived) -> Record:
        def add(db: Connection) -> Record:
            record = db.execute(INSERT_RECEIVED, dict(row)).fetchone()
            assert record is not None  # an INSERT ... RETURNING of one row
            return record

        return self._run(add)

    def received(self, account: str, channel: str) -> list[Record]:
        return self._all(
            "SELECT * FROM sandbox_received WHERE account = %s AND channel = %s"
            " ORDER BY received_at DESC, id DESC",
            (account, channel),
        )

    def mark_read(self, account: str, guid: str) -> bool:
        return self._changed(
            "UPDATE sandbox_received SET read = 1 WHERE account = %s AND guid = %s", (account, guid)
        )

    def set_alias(self, account: str, guid: str, alias: str | None) -> bool:
        return self._changed(
            "UPDATE sandbox_received SET alias = %s WHERE account = %s AND guid = %s", (alias, account, guid)
        )

    # --- delivery reports, calls, notifications, e-mail ----------------------------------------------

    def deliver_sent(self, account: str, guid: str, now: int) -> bool:
        return self._changed(
            "UPDATE sandbox_sent SET status = 'delivered', delivered_at = %s"
            " WHERE account = %s AND guid = %s AND status = 'sent'",
            (now, account, guid),
        )

    def add_call(self, row: NewCall) -> Record:
        return self._insert(
            "INSERT INTO sandbox_calls (guid, account, direction, number, name, device, at, duration)"
            " VALUES (%(guid)s, %(account)s, %(direction)s, %(number)s, %(name)s, %(device)s, %(at)s,"
            " %(duration)s) RETURNING *",
            dict(row),
        )

    def calls(self, account: str, direction: str) -> list[Record]:
        return self._all(
            "SELECT * FROM sandbox_calls WHERE account = %s AND direction = %s ORDER BY at DESC, id DESC",
            (account, direction),
        )

    def add_notification(self, row: NewNotification) -> Record:
        return self._insert(
            "INSERT INTO sandbox_notifications (account, sid, title, message, type, distributed, created_at)"
            " VALUES (%(account)s, %(sid)s, %(title)s, %(message)s, %(type)s, %(distributed)s,"
            " %(created_at)s) RETURNING *",
            dict(row),
        )

    def notifications(self, account: str) -> list[Record]:
        return self._all(
            "SELECT * FROM sandbox_notifications WHERE account = %s ORDER BY created_at DESC, id DESC",
            (account,),
        )

    def add_email(self, row: NewEmail) -> Record:
        return self._insert(
            "INSERT INTO sandbox_emails (account, mailbox, folder, sender_name, sender_email,"
            " recipient_email, subject, body, at, attachment_name, attachment_size)"
            " VALUES (%(account)s, %(mailbox)s, %(folder)s, %(sender_name)s, %(sender_email)s,"
            " %(recipient_email)s, %(subject)s, %(body)s, %(at)s, %(attachment_name)s,"
            " %(attachment_size)s) RETURNING *",
            dict(row),
        )

    def emails(self, account: str, mailbox: str, folder: str) -> list[Record]:
        return self._all(
            "SELECT * FROM sandbox_emails WHERE account = %s AND mailbox = %s AND folder = %s"
            " ORDER BY at DESC, id DESC",
            (account, mailbox, folder),
        )

    def _insert(self, sql: str, row: dict[str, object]) -> Record:
        """Run one INSERT ... RETURNING * and return the row it made."""

        def insert(db: Connection) -> Record:
            record = db.execute(sql, row).fetchone()
            assert record is not None  # an INSERT ... RETURNING of one row
            return record

        return self._run(insert)

    # The pool is the process's (app.state.postgres.db.shared): close() leaves it to the others using it.

    # --- the web inbox -------------------------------------------------------------------------------

    def inbox(
        self, *, search: str = "", status: str | None = None, via: Via | None = None, limit: int = 100
    ) -> list[Record]:
        return self._all(*inbox_query(search, status, via, limit))

    def sent_message(self, guid: str) -> Record | None:
        return self._run(
            lambda db: db.execute("SELECT * FROM sandbox_sent WHERE guid = %s", (guid,)).fetchone()
        )

    def inbox_received(self, *, search: str = "", limit: int = 100) -> list[Record]:
        return self._all(*inbox_received_query(search, limit))

    # --- helpers -------------------------------------------------------------------------------------

    def _all(self, sql: str, args: tuple[object, ...]) -> list[Record]:
        """Return every row of one SELECT."""
        return self._run(lambda db: list[Record](db.execute(sql, args).fetchall()))

    def _changed(self, sql: str, args: tuple[object, ...]) -> bool:
        """Run one UPDATE and say whether it changed a row."""
        return bool(self._run(lambda db: db.execute(sql, args).rowcount))

    def _run(self, work: Callable[[Connection], T], *, atomic: bool = False) -> T:
        """Return `work(db)` within the pool's bounds; any failure is StorageUnavailable (nothing sent)."""
        return self._db.run(work, store=STORE, undone=UNDONE, atomic=atomic)
