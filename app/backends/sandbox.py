"""The built-in sandbox: behaves like an account with one connected phone, keeps everything in SQLite.

Nothing leaves the machine. Sends are accepted and logged as sent by the phone (or pending until their
`schedule_timestamp`); received SMS, WhatsApp messages and failures are made to happen through the
`simulate_*` methods, which `app/sandbox_console.py` serves over HTTP for testers.

Its database is the sandbox's upstream: every use waits for a lock cooperatively
(`ThreadConnections.run`, a few ms at a time in SQLite, BUSY_TIMEOUT in all, never holding the gevent
worker), and a database still locked then, or a full data disk, is StorageUnavailable (503, Server
fault: nothing was sent, try again).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from app.backends.base import Backend, check_option_values, check_phone_number
from app.config import Settings
from app.errors import (
    CredentialRefused,
    InvalidParameter,
    NoDeviceAvailable,
    NotResendable,
    SyncRequired,
    UnknownDevice,
    UnknownMessage,
)
from app.state.sqlite.db import BUSY_SLICE, Database, ThreadConnections
from app.vocabulary import (
    Credential,
    Device,
    ReceivedSms,
    ResendReceipt,
    SendReceipt,
    SendRequest,
    SentSms,
)

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
#: the file and its migrations, oldest first: append, never edit (its user_version counts those applied)
DATABASE = Database("sandbox.sqlite3", (SCHEMA,))
INSERT_SENT = """
INSERT INTO sent_sms (guid, account, recipient, message, port, sidentifiant, via_sms, via_whatsapp,
                      encrypted, shorturl, url_media, schedule_timestamp, created_at, status, sent_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

#: the phone every new sandbox account starts with
FIRST_DEVICE = ("sandbox-phone-1", "Sandbox phone", "+10000000001")
#: how long a WhatsApp synchronisation lets /getwa/ read messages
WHATSAPP_SYNC_SECONDS = 600


class SandboxBackend(Backend):
    """Accept every well-formed call and answer from SQLite; nothing leaves the machine."""

    name = "sandbox"
    simulates = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._db = ThreadConnections(
            settings.data_dir / DATABASE.file_name, DATABASE.migrations, busy_slice=BUSY_SLICE
        )

    # --- sending -------------------------------------------------------------------------------------

    def send(self, request: SendRequest) -> SendReceipt:
        """Record one row per recipient and answer as a phone that accepted the message."""
        account = self._account(request.credential)
        options = request.options
        check_option_values(options)
        if len(options.sIdentifiant) > 64:
            raise InvalidParameter("sIdentifiant is longer than 64 characters")
        numbers = [check_phone_number(r) for r in request.recipients]
        if not self.devices(request.credential):
            raise NoDeviceAvailable("the sandbox account has no connected phone; nothing was sent")
        if options.via_whatsapp and not self._whatsapp_on(account):
            raise InvalidParameter("WhatsApp sending is switched off for this account (see /getwa/active/)")
        now = int(time.time())
        scheduled = int(options.schedule_timestamp) if options.schedule_timestamp else None
        pending = scheduled is not None and scheduled > now
        guids = tuple(secrets.token_hex(20) for _ in numbers)
        encrypted = options.encrypt_message.lower() == "yes"
        rows = [
            (
                guid,
                account,
                number,
                request.message,
                options.port,
                options.sIdentifiant,
                int(options.via_sms),
                int(options.via_whatsapp),
                int(encrypted),
                int(options.shorturl == "1"),
                options.url_media,
                scheduled,
                now,
                "pending" if pending else "sent",
                None if pending else now,
            )
            for guid, number in zip(guids, numbers, strict=True)
        ]
        self._run(lambda db: db.executemany(INSERT_SENT, rows))
        return SendReceipt(
            message_ids=guids,
            note=_note(request),
            port=options.port if options.port in ("1", "2") else None,
            via_whatsapp=options.via_whatsapp,
            encrypted=encrypted,
        )

    def sent_log(self, credential: Credential, guid: str | None = None) -> list[SentSms]:
        """Return the SMS sent through the API, newest first."""
        return self._sent(credential, "via_sms = 1", guid)

    def sent_from_mobile(self, credential: Credential) -> list[SentSms]:
        """Return what the phone has sent: here, the API's SMS once the phone sent them."""
        return [sms for sms in self._sent(credential, "via_sms = 1") if sms.status == "sent"]

    def resend(self, credential: Credential, guid: str) -> ResendReceipt:
        """Send a failed SMS again."""
        return self._resend(credential, guid, "via_sms = 1", "SMS")

    def resend_whatsapp(self, credential: Credential, guid: str) -> ResendReceipt:
        """Send a failed WhatsApp message again."""
        return self._resend(credential, guid, "via_whatsapp = 1", "WhatsApp message")

    def delete_sent(self, credential: Credential, guids: list[str]) -> int:
        """Delete these messages from the sent log."""
        account = self._account(credential)
        return self._run(
            lambda db: sum(
                db.execute("DELETE FROM sent_sms WHERE account = ? AND guid = ?", (account, g)).rowcount
                for g in guids
            )
        )

    # --- receiving -----------------------------------------------------------------------------------

    def received(self, credential: Credential) -> list[ReceivedSms]:
        """Return the SMS received, newest first."""
        return self._received(credential, "sms")

    def mark_read(self, credential: Credential, guid: str) -> None:
        """Mark a received SMS as read."""
        self._update_received(credential, guid, "read = 1", ())

    def set_alias(self, credential: Credential, guid: str, alias: str) -> None:
        """Set or clear the alias of a received SMS."""
        self._update_received(credential, guid, "alias = ?", (alias or None,))

    # --- phones --------------------------------------------------------------------------------------

    def devices(self, credential: Credential) -> list[Device]:
        """Return the account's phones."""
        account = self._account(credential)
        rows = self._run(
            lambda db: db.execute(
                "SELECT * FROM devices WHERE account = ? ORDER BY sid", (account,)
            ).fetchall()
        )
        return [
            Device(
                sid=r["sid"],
                label=r["label"],
                phone_number=r["phone_number"],
                last_seen=r["last_seen"],
                battery="100",
                version="sandbox",
            )
            for r in rows
        ]

    def update_device(self, credential: Credential, sid: str, label: str, phone_number: str | None) -> Device:
        """Change a phone's label and, when given, its number."""
        account = self._account(credential)
        changed = self._run(
            lambda db: (
                db.execute(
                    "UPDATE devices SET label = ?, phone_number = COALESCE(?, phone_number)"
                    " WHERE account = ? AND sid = ?",
                    (label, phone_number, account, sid),
                ).rowcount
            )
        )
        if not changed:
            raise UnknownDevice(f"no connected phone has the sid {sid!r}")
        return next(d for d in self.devices(credential) if d.sid == sid)

    def delete_device(self, credential: Credential, sid: str) -> None:
        """Remove a phone and the messages it received."""
        account = self._account(credential)

        def delete(db: sqlite3.Connection) -> None:
            if not db.execute("DELETE FROM devices WHERE account = ? AND sid = ?", (account, sid)).rowcount:
                raise UnknownDevice(f"no connected phone has the sid {sid!r}")
            db.execute("DELETE FROM received_sms WHERE account = ? AND device = ?", (account, sid))

        self._run(delete)

    # --- WhatsApp ------------------------------------------------------------------------------------

    def whatsapp_sync(self, credential: Credential) -> int:
        """Open a window in which /getwa/ may read messages."""
        account = self._account(credential)
        expires = int(time.time()) + WHATSAPP_SYNC_SECONDS
        self._run(
            lambda db: db.execute(
                "UPDATE accounts SET whatsapp_sync_expires = ? WHERE account = ?", (expires, account)
            )
        )
        return expires

    def whatsapp_received(self, credential: Credential) -> list[ReceivedSms]:
        """Return the WhatsApp messages received, if a synchronisation is open."""
        account = self._account(credential)
        row = self._run(
            lambda db: db.execute(
                "SELECT whatsapp_sync_expires FROM accounts WHERE account = ?", (account,)
            ).fetchone()
        )
        if row["whatsapp_sync_expires"] < time.time():
            raise SyncRequired(
                "call /getwa/synchronisation/ first: messages are read after a synchronisation"
            )
        return self._received(credential, "whatsapp")

    def whatsapp_active(self, credential: Credential, statut: str) -> str:
        """Read, set or toggle WhatsApp sending."""
        account = self._account(credential)
        if statut and statut not in ("0", "1") and statut.lower() != "x":
            raise InvalidParameter(f"statut={statut!r} is not valid: expected 0, 1 or x")
        if statut in ("0", "1"):
            self._run(
                lambda db: db.execute(
                    "UPDATE accounts SET whatsapp_active = ? WHERE account = ?", (int(statut), account)
                )
            )
        elif statut:
            self._run(
                lambda db: db.execute(
                    "UPDATE accounts SET whatsapp_active = 1 - whatsapp_active WHERE account = ?", (account,)
                )
            )
        return "1" if self._whatsapp_on(account) else "0"

    def whatsapp_check(self, credential: Credential, number: str) -> bool:
        """Say a number is on WhatsApp unless it ends in 0 (a rule testers can rely on)."""
        self._account(credential)
        return not check_phone_number(number).endswith("0")

    # --- what a tester makes happen ------------------------------------------------------------------

    def simulate_inbound(
        self,
        credential: Credential,
        number: str,
        message: str,
        *,
        device: str = "",
        channel: str = "sms",
        kind: str = "text",
        contact: str = "",
        received_at: int | None = None,
    ) -> ReceivedSms:
        """Make a phone of the account receive an SMS (or a WhatsApp message)."""
        account = self._account(credential)
        check_phone_number(number)
        if channel not in ("sms", "whatsapp"):
            raise InvalidParameter("channel must be sms or whatsapp")
        if kind not in ("text", "audio"):
            raise InvalidParameter("message_type must be text or audio")
        phones = [d.sid for d in self.devices(credential)]
        if not phones:
            raise NoDeviceAvailable("the sandbox account has no connected phone to receive on")
        device = device or phones[0]
        if device not in phones:
            raise UnknownDevice(f"no connected phone has the sid {device!r}")
        guid = str(uuid.uuid4()).upper()
        row = (
            guid,
            account,
            channel,
            number,
            message,
            received_at or int(time.time()),
            device,
            kind,
            contact,
        )
        self._run(
            lambda db: db.execute(
                "INSERT INTO received_sms (guid, account, channel, number, message, received_at,"
                " device, kind, contact) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )
        return next(m for m in self._received(credential, channel) if m.guid == guid)

    def simulate_failure(
        self, credential: Credential, guid: str, error: str, where: str = "mobile"
    ) -> SentSms:
        """Make a sent message fail, on the phone (`error_mobile`) or in the API (`error_api`)."""
        column = {"mobile": "error_mobile", "api": "error_api"}.get(where)
        if column is None:
            raise InvalidParameter("where must be mobile or api")
        account = self._account(credential)
        changed = self._run(
            lambda db: (
                db.execute(
                    f"UPDATE sent_sms SET status = 'failed', sent_at = NULL, {column} = ?"  # noqa: S608 (a fixed name)
                    " WHERE account = ? AND guid = ?",
                    (error or "failed", account, guid),
                ).rowcount
            )
        )
        if not changed:
            raise UnknownMessage(f"no sent message has the guid {guid!r}")
        return self._sent(credential, "1 = 1", guid)[0]

    def add_device(self, credential: Credential, sid: str, label: str = "", phone_number: str = "") -> Device:
        """Connect another phone to the account."""
        account = self._account(credential)
        now = int(time.time())
        self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO devices (account, sid, label, phone_number, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (account, sid, label, phone_number, now),
            )
        )
        return next(d for d in self.devices(credential) if d.sid == sid)

    # --- storage -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close this thread's database connection."""
        self._db.close()

    def _account(self, credential: Credential) -> str:
        """Check the key, make its account on first use, and return the account's name."""
        keys = self.settings.sandbox_api_keys
        if keys and not any(secrets.compare_digest(credential.secret, k) for k in keys):
            raise CredentialRefused("the API key is not one of the sandbox's keys")
        account = account_of(credential.secret)
        known = self._run(
            lambda db: db.execute("SELECT 1 FROM accounts WHERE account = ?", (account,)).fetchone()
        )
        if known is None:
            now = int(time.time())

            def create(db: sqlite3.Connection) -> None:
                if db.execute("INSERT OR IGNORE INTO accounts (account) VALUES (?)", (account,)).rowcount:
                    db.execute(
                        "INSERT OR IGNORE INTO devices (account, sid, label, phone_number, last_seen)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (account, *FIRST_DEVICE, now),
                    )

            self._run(create)
        return account

    def _whatsapp_on(self, account: str) -> bool:
        row = self._run(
            lambda db: db.execute(
                "SELECT whatsapp_active FROM accounts WHERE account = ?", (account,)
            ).fetchone()
        )
        return bool(row["whatsapp_active"])

    def _sent(self, credential: Credential, where: str, guid: str | None = None) -> list[SentSms]:
        account = self._account(credential)
        sql = f"SELECT * FROM sent_sms WHERE account = ? AND {where}"  # noqa: S608 (fixed conditions)
        args: tuple = (account,)
        if guid is not None:
            sql += " AND guid = ?"
            args += (guid,)
        rows = self._run(
            lambda db: db.execute(sql + " ORDER BY created_at DESC, rowid DESC", args).fetchall()
        )
        return [
            SentSms(
                guid=r["guid"],
                recipient=r["recipient"],
                message=r["message"],
                queued_at=r["created_at"],
                status=r["status"],
                sent_at=r["sent_at"],
                device=r["sidentifiant"] or FIRST_DEVICE[0],
                port=int(r["port"] or 0),
                error_api=r["error_api"],
                error_mobile=r["error_mobile"],
                via_whatsapp=bool(r["via_whatsapp"]),
            )
            for r in rows
        ]

    def _resend(self, credential: Credential, guid: str, where: str, what: str) -> ResendReceipt:
        account = self._account(credential)
        found = self._sent(credential, where, guid)
        if not found:
            raise UnknownMessage(f"no sent {what} has the guid {guid!r}")
        [sms] = found
        if sms.status != "failed":
            raise NotResendable(
                f"the {what} {guid} is not in an error state ({sms.status}); it is not resent"
            )
        now = int(time.time())

        def resend(db: sqlite3.Connection) -> int:
            # Still failed when it is resent: of two resends at once, one resends and one is refused.
            resent = db.execute(
                "UPDATE sent_sms SET status = 'sent', sent_at = ?, error_api = '', error_mobile = '',"
                " attempts = attempts + 1 WHERE account = ? AND guid = ? AND status = 'failed'",
                (now, account, guid),
            ).rowcount
            if not resent:
                raise NotResendable(f"the {what} {guid} is being resent already; it is not resent again")
            [attempts] = db.execute(
                "SELECT attempts FROM sent_sms WHERE account = ? AND guid = ?", (account, guid)
            ).fetchone()
            return attempts

        attempts = self._run(resend)
        return ResendReceipt(attempt=attempts, message_id=guid)

    def _received(self, credential: Credential, channel: str) -> list[ReceivedSms]:
        account = self._account(credential)
        rows = self._run(
            lambda db: db.execute(
                "SELECT * FROM received_sms WHERE account = ? AND channel = ?"
                " ORDER BY received_at DESC, id DESC",
                (account, channel),
            ).fetchall()
        )
        return [
            ReceivedSms(
                id=r["id"],
                guid=r["guid"],
                number=r["number"],
                message=r["message"],
                received_at=r["received_at"],
                device=r["device"],
                alias=r["alias"],
                read=bool(r["read"]),
                kind=r["kind"],
                contact=r["contact"],
            )
            for r in rows
        ]

    def _update_received(self, credential: Credential, guid: str, assignment: str, args: tuple) -> None:
        account = self._account(credential)
        changed = self._run(
            lambda db: (
                db.execute(
                    f"UPDATE received_sms SET {assignment} WHERE account = ? AND guid = ?",  # noqa: S608
                    (*args, account, guid),
                ).rowcount
            )
        )
        if not changed:
            raise UnknownMessage(f"no received SMS has the guid {guid!r}")

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Return `work(db)` run in one transaction, waiting for a lock cooperatively (BUSY_TIMEOUT at most).

        A database still locked then, or a full data disk, is StorageUnavailable: for the sandbox, its
        database is the upstream, so nothing was sent.
        """
        return self._db.run_or_unavailable(
            work, store="the smsbridge sandbox's database", undone="nothing was sent or changed"
        )

    def sent(self, secret: str) -> list[sqlite3.Row]:
        """Return every row the sandbox accepted for the key `secret`, oldest first (for tests)."""
        return self._run(
            lambda db: db.execute(
                "SELECT * FROM sent_sms WHERE account = ? ORDER BY created_at, rowid", (account_of(secret),)
            ).fetchall()
        )


def account_of(secret: str) -> str:
    """Return the name the sandbox files a key's messages under: a hash, never the key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _note(request: SendRequest) -> str:
    options = request.options
    channel = "WhatsApp" if not options.via_sms else "mobile"
    if options.via_sms and options.via_whatsapp:
        channel = "mobile and WhatsApp"
    when = " (scheduled)" if options.schedule_timestamp else ""
    return f"sent by {channel}{when}; smsbridge sandbox: nothing left this machine"
