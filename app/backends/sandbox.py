"""The built-in sandbox: accepts sends like a connected phone would, keeps them in SQLite, sends nothing."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time

from app.backends.base import Backend, check_option_values, check_phone_number
from app.config import Settings
from app.errors import CredentialRefused, InvalidParameter
from app.vocabulary import SendReceipt, SendRequest

SCHEMA = """
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
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_sms_account ON sent_sms (account, created_at);
"""
INSERT = "INSERT INTO sent_sms VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class SandboxBackend(Backend):
    """Accept every well-formed send and record it; nothing leaves the machine."""

    name = "sandbox"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = settings.data_dir / "sandbox.sqlite3"
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(SCHEMA)

    def send(self, request: SendRequest) -> SendReceipt:
        """Record one row per recipient and answer as a phone that accepted the message."""
        keys = self.settings.sandbox_api_keys
        if keys and not any(secrets.compare_digest(request.credential.secret, k) for k in keys):
            raise CredentialRefused("the API key is not one of the sandbox's keys")
        options = request.options
        check_option_values(options)
        if options.sIdentifiant and len(options.sIdentifiant) > 64:
            raise InvalidParameter("sIdentifiant is longer than 64 characters")
        numbers = [check_phone_number(r) for r in request.recipients]
        now = int(time.time())
        account = account_of(request.credential.secret)
        guids = tuple(secrets.token_hex(20) for _ in numbers)
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
                int(options.encrypt_message.lower() == "yes"),
                int(options.shorturl == "1"),
                options.url_media,
                int(options.schedule_timestamp) if options.schedule_timestamp else None,
                now,
            )
            for guid, number in zip(guids, numbers, strict=True)
        ]
        with self._connect() as db:
            db.executemany(INSERT, rows)
        return SendReceipt(
            message_ids=guids,
            note=_note(request),
            port=options.port if options.port in ("1", "2") else None,
            via_whatsapp=options.via_whatsapp,
            encrypted=options.encrypt_message.lower() == "yes",
        )

    def sent(self, secret: str) -> list[sqlite3.Row]:
        """Return what the sandbox accepted for the account of `secret`, oldest first."""
        db = self._connect()
        return db.execute(
            "SELECT * FROM sent_sms WHERE account = ? ORDER BY created_at, rowid",
            (account_of(secret),),
        ).fetchall()

    def close(self) -> None:
        """Close this thread's database connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db


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
