"""The sandbox's data in SQLite (sandbox.sqlite3 in the data directory): app.state.sandbox.SandboxStore.

Every use waits for a lock cooperatively (`ThreadConnections.run`, a few ms at a time in SQLite, BUSY_TIMEOUT
in all, never holding the gevent worker), and a database still locked then, or a full data disk, is
StorageUnavailable (503, Server fault: nothing was sent, try again).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from app.state.base import Record
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
from app.state.sqlite.db import BUSY_SLICE, Database, ThreadConnections

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    whatsapp_active INTEGER NOT NULL DEFAULT 1,
    whatsapp_sync_expires INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS devices (
    account TEXT NOT NULL,
    sid TEXT NOT NULL,
    label TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (account, sid)
);
CREATE TABLE IF NOT EXISTS sent_sms (
    guid TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    recipient TEXT NOT NULL,
    message TEXT NOT NULL,
    port TEXT NOT NULL,
    sidentifiant TEXT NOT NULL,
    via_sms INTEGER NOT NULL,
    via_whatsapp INTEGER NOT NULL,
    encrypted INTEGER NOT NULL,
    shorturl INTEGER NOT NULL,
    url_media TEXT NOT NULL,
    schedule_timestamp INTEGER,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    sent_at INTEGER,
    error_api TEXT NOT NULL DEFAULT '',
    error_mobile TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sent_sms_account ON sent_sms (account, created_at);
CREATE TABLE IF NOT EXISTS received_sms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    guid TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    channel TEXT NOT NULL,
    number TEXT NOT NULL,
    message TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    device TEXT NOT NULL,
    alias TEXT,
    read INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'text',
    contact TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS received_sms_account ON received_sms (account, channel, received_at);
"""
#: delivery reports of sent messages; calls, notifications and e-mail (the vendor's other endpoints)
EXTRAS = """
ALTER TABLE sent_sms ADD COLUMN delivered_at INTEGER;
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    guid TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    direction TEXT NOT NULL,
    number TEXT NOT NULL,
    name TEXT,
    device TEXT NOT NULL,
    at INTEGER NOT NULL,
    duration INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_account ON calls (account, direction, at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    sid TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    type TEXT NOT NULL,
    distributed INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_account ON notifications (account, created_at);
CREATE TABLE IF NOT EXISTS emails (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    folder TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    sender_email TEXT NOT NULL,
    recipient_email TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    at INTEGER NOT NULL,
    attachment_name TEXT NOT NULL,
    attachment_size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS emails_folder ON emails (account, mailbox, folder, at);
"""
#: the web inbox lists every account's messages newest first: an index on their age alone (its entries
#: end with the rowid, so the order is the inbox's own, read backwards, without sorting)
RECENT = """
CREATE INDEX IF NOT EXISTS sent_sms_recent ON sent_sms (created_at);
CREATE INDEX IF NOT EXISTS received_sms_recent ON received_sms (received_at);
"""
#: the file and its migrations, oldest first: append, never edit (its user_version counts those applied)
DATABASE = Database("sandbox.sqlite3", (SCHEMA, EXTRAS, RECENT))

INSERT_SENT = """
INSERT INTO sent_sms (guid, account, recipient, message, port, sidentifiant, via_sms, via_whatsapp,
                      encrypted, shorturl, url_media, schedule_timestamp, created_at, status, sent_at)
VALUES (:guid, :account, :recipient, :message, :port, :sidentifiant, :via_sms, :via_whatsapp,
        :encrypted, :shorturl, :url_media, :schedule_timestamp, :created_at, :status, :sent_at)
"""
INSERT_RECEIVED = """
INSERT INTO received_sms (guid, account, channel, number, message, received_at, device, kind, contact)
VALUES (:guid, :account, :channel, :number, :message, :received_at, :device, :kind, :contact)
RETURNING *
"""
#: the sent log's channel filters, and the error columns of a failure: fixed SQL, never a caller's text
_VIA = {None: "1 = 1", "sms": "via_sms = 1", "whatsapp": "via_whatsapp = 1"}
_ERROR_COLUMN = {"mobile": "error_mobile", "api": "error_api"}
#: the Unicode lower-casing the inbox's search uses (SQLite's own lower() folds ASCII only), registered
#: on each of the store's connections
LOWER = "unicode_lower"


def unicode_lower(value: str | bytes | int | float | None) -> str | bytes | int | float | None:
    """Return `value` lower-cased as Python does (Unicode), when it is text."""
    return value.lower() if isinstance(value, str) else value


class _Connections(ThreadConnections):
    """The store's connections, each of which knows LOWER (deterministic: usable anywhere in SQL)."""

    def get(self) -> sqlite3.Connection:
        db = super().get()
        if getattr(self._local, "knows_lower", None) is not db:
            db.create_function(LOWER, 1, unicode_lower, deterministic=True)
            self._local.knows_lower = db
        return db


def inbox_query(
    search: str = "", status: str | None = None, via: Via | None = None, limit: int = 100
) -> tuple[str, tuple[object, ...]]:
    """The web inbox's sent messages of every account: newest first on sent_sms_recent.

    Searched as plain text (instr, not LIKE), lower-cased by LOWER (Unicode) on both sides.
    """
    sql = f"SELECT * FROM sent_sms WHERE {_VIA[via]}"  # noqa: S608 (fixed conditions)
    args: tuple[object, ...] = ()
    if search:
        sql += f" AND (instr({LOWER}(recipient), {LOWER}(?)) > 0 OR instr({LOWER}(message), {LOWER}(?)) > 0)"
        args += (search, search)
    if status:
        sql += " AND status = ?"
        args += (status,)
    return sql + " ORDER BY created_at DESC, rowid DESC LIMIT ?", (*args, limit)


def inbox_received_query(search: str = "", limit: int = 100) -> tuple[str, tuple[object, ...]]:
    """The web inbox's received messages of every account: newest first on received_sms_recent."""
    sql = "SELECT * FROM received_sms"
    args: tuple[object, ...] = ()
    if search:
        sql += f" WHERE instr({LOWER}(number), {LOWER}(?)) > 0 OR instr({LOWER}(message), {LOWER}(?)) > 0"
        args = (search, search)
    return sql + " ORDER BY received_at DESC, id DESC LIMIT ?", (*args, limit)


class SqliteSandboxStore(SandboxStore):
    """The sandbox's data in sandbox.sqlite3."""

    def __init__(self, data_dir: Path) -> None:
        self._db = _Connections(data_dir / DATABASE.file_name, DATABASE.migrations, busy_slice=BUSY_SLICE)

    # --- accounts ------------------------------------------------------------------------------------

    def account(self, account: str) -> Record | None:
        return self._run(
            lambda db: db.execute("SELECT * FROM accounts WHERE account = ?", (account,)).fetchone()
        )

    def create_account(self, account: str, first_device: tuple[str, str, str], now: int) -> bool:
        def create(db: sqlite3.Connection) -> bool:
            if not db.execute("INSERT OR IGNORE INTO accounts (account) VALUES (?)", (account,)).rowcount:
                return False
            db.execute(
                "INSERT OR IGNORE INTO devices (account, sid, label, phone_number, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (account, *first_device, now),
            )
            return True

        return self._run(create)

    def set_whatsapp_active(self, account: str, active: bool | None) -> None:
        args: tuple[object, ...]
        if active is None:
            sql, args = (
                "UPDATE accounts SET whatsapp_active = 1 - whatsapp_active WHERE account = ?",
                (account,),
            )
        else:
            sql, args = "UPDATE accounts SET whatsapp_active = ? WHERE account = ?", (int(active), account)
        self._run(lambda db: db.execute(sql, args))

    def open_whatsapp_sync(self, account: str, until: int) -> None:
        self._run(
            lambda db: db.execute(
                "UPDATE accounts SET whatsapp_sync_expires = ? WHERE account = ?", (until, account)
            )
        )

    # --- phones --------------------------------------------------------------------------------------

    def devices(self, account: str) -> list[Record]:
        return self._run(
            lambda db: db.execute(
                "SELECT * FROM devices WHERE account = ? ORDER BY sid", (account,)
            ).fetchall()
        )

    def put_device(self, account: str, sid: str, label: str, phone_number: str, last_seen: int) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO devices (account, sid, label, phone_number, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (account, sid, label, phone_number, last_seen),
            )
        )

    def update_device(self, account: str, sid: str, label: str, phone_number: str | None) -> bool:
        return self._changed(
            "UPDATE devices SET label = ?, phone_number = COALESCE(?, phone_number)"
            " WHERE account = ? AND sid = ?",
            (label, phone_number, account, sid),
        )

    def delete_device(self, account: str, sid: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            if not db.execute("DELETE FROM devices WHERE account = ? AND sid = ?", (account, sid)).rowcount:
                return False
            db.execute("DELETE FROM received_sms WHERE account = ? AND device = ?", (account, sid))
            return True

        return self._run(delete)

    # --- sent ----------------------------------------------------------------------------------------

    def add_sent(self, rows: Sequence[NewSent]) -> None:
        self._run(lambda db: db.executemany(INSERT_SENT, rows))

    def sent(
        self, account: str, *, via: Via | None = None, guid: str | None = None, oldest_first: bool = False
    ) -> list[Record]:
        sql = f"SELECT * FROM sent_sms WHERE account = ? AND {_VIA[via]}"  # noqa: S608 (fixed conditions)
        args: tuple[str, ...] = (account,)
        if guid is not None:
            sql += " AND guid = ?"
            args += (guid,)
        sql += " ORDER BY created_at, rowid" if oldest_first else " ORDER BY created_at DESC, rowid DESC"
        return self._run(lambda db: db.execute(sql, args).fetchall())

    def delete_sent(self, account: str, guids: Sequence[str]) -> int:
        return self._run(
            lambda db: sum(
                db.execute("DELETE FROM sent_sms WHERE account = ? AND guid = ?", (account, g)).rowcount
                for g in guids
            )
        )

    def fail_sent(self, account: str, guid: str, error: str, where: FailedWhere) -> bool:
        column = _ERROR_COLUMN[where]
        return self._changed(
            f"UPDATE sent_sms SET status = 'failed', sent_at = NULL, {column} = ?"  # noqa: S608 (a fixed name)
            " WHERE account = ? AND guid = ?",
            (error, account, guid),
        )

    def resend(self, account: str, guid: str, now: int) -> int | None:
        # Still failed when it is resent: of two resends at once, one resends and one is refused.
        rows = self._run(
            lambda db: db.execute(
                "UPDATE sent_sms SET status = 'sent', sent_at = ?, error_api = '', error_mobile = '',"
                " attempts = attempts + 1 WHERE account = ? AND guid = ? AND status = 'failed'"
                " RETURNING attempts",
                (now, account, guid),
            ).fetchall()  # every row of a RETURNING: the statement ends before the commit
        )
        return int(rows[0]["attempts"]) if rows else None

    # --- received ------------------------------------------------------------------------------------

    def add_received(self, row: NewReceived) -> Record:
        return self._run(lambda db: db.execute(INSERT_RECEIVED, row).fetchall()[0])

    def received(self, account: str, channel: str) -> list[Record]:
        return self._run(
            lambda db: db.execute(
                "SELECT * FROM received_sms WHERE account = ? AND channel = ?"
                " ORDER BY received_at DESC, id DESC",
                (account, channel),
            ).fetchall()
        )

    def mark_read(self, account: str, guid: str) -> bool:
        return self._changed(
            "UPDATE received_sms SET read = 1 WHERE account = ? AND guid = ?", (account, guid)
        )

    def set_alias(self, account: str, guid: str, alias: str | None) -> bool:
        return self._changed(
            "UPDATE received_sms SET alias = ? WHERE account = ? AND guid = ?", (alias, account, guid)
        )

    # --- delivery reports, calls, notifications, e-mail ----------------------------------------------

    def deliver_sent(self, account: str, guid: str, now: int) -> bool:
        return self._changed(
            "UPDATE sent_sms SET status = 'delivered', delivered_at = ?"
            " WHERE account = ? AND guid = ? AND status = 'sent'",
            (now, account, guid),
        )

    def add_call(self, row: NewCall) -> Record:
        return self._insert(
            "INSERT INTO calls (guid, account, direction, number, name, device, at, duration)"
            " VALUES (:guid, :account, :direction, :number, :name, :device, :at, :duration) RETURNING *",
            row,
        )

    def calls(self, account: str, direction: str) -> list[Record]:
        return self._run(
            lambda db: db.execute(
                "SELECT * FROM calls WHERE account = ? AND direction = ? ORDER BY at DESC, id DESC",
                (account, direction),
            ).fetchall()
        )

    def add_notification(self, row: NewNotification) -> Record:
        return self._insert(
            "INSERT INTO notifications (account, sid, title, message, type, distributed, created_at)"
            " VALUES (:account, :sid, :title, :message, :type, :distributed, :created_at) RETURNING *",
            row,
        )

    def notifications(self, account: str) -> list[Record]:
        return self._run(
            lambda db: db.execute(
                "SELECT * FROM notifications WHERE account = ? ORDER BY created_at DESC, id DESC", (account,)
            ).fetchall()
        )

    def add_email(self, row: NewEmail) -> Record:
        return self._insert(
            "INSERT INTO emails (account, mailbox, folder, sender_name, sender_email, recipient_email,"
            " subject, body, at, attachment_name, attachment_size)"
            " VALUES (:account, :mailbox, :folder, :sender_name, :sender_email, :recipient_email,"
            " :subject, :body, :at, :attachment_name, :attachment_size) RETURNING *",
            row,
        )

    def emails(self, account: str, mailbox: str, folder: str) -> list[Record]:
        return self._run(
            lambda db: db.execute(
                "SELECT * FROM emails WHERE account = ? AND mailbox = ? AND folder = ?"
                " ORDER BY at DESC, id DESC",
                (account, mailbox, folder),
            ).fetchall()
        )

    def _insert(self, sql: str, row: Mapping[str, object]) -> Record:
        """Run one INSERT ... RETURNING * and return the row it made."""
        return self._run(lambda db: db.execute(sql, row).fetchall()[0])

    def close(self) -> None:
        """Close this thread's database connection."""
        self._db.close()

    # --- the web inbox -------------------------------------------------------------------------------

    def inbox(
        self, *, search: str = "", status: str | None = None, via: Via | None = None, limit: int = 100
    ) -> list[Record]:
        sql, args = inbox_query(search, status, via, limit)
        return self._run(lambda db: db.execute(sql, args).fetchall())

    def sent_message(self, guid: str) -> Record | None:
        return self._run(lambda db: db.execute("SELECT * FROM sent_sms WHERE guid = ?", (guid,)).fetchone())

    def inbox_received(self, *, search: str = "", limit: int = 100) -> list[Record]:
        sql, args = inbox_received_query(search, limit)
        return self._run(lambda db: db.execute(sql, args).fetchall())

    # --- helpers -------------------------------------------------------------------------------------

    def _changed(self, sql: str, args: tuple[object, ...]) -> bool:
        """Run one UPDATE and say whether it changed a row."""
        return bool(self._run(lambda db: db.execute(sql, args).rowcount))

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Return `work(db)` run in one transaction, waiting for a lock cooperatively (BUSY_TIMEOUT at most).

        A database still locked then, or a full data disk, is StorageUnavailable: for the sandbox, its
        database is the upstream, so nothing was sent.
        """
        return self._db.run_or_unavailable(
            work, store="the smsbridge sandbox's database", undone="nothing was sent or changed"
        )
