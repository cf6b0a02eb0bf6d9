"""The built-in sandbox: behaves like an account with one connected phone, keeps everything in its store.

Nothing leaves the machine. Sends are accepted and logged as sent by the phone (or pending until their
`schedule_timestamp`); received SMS, WhatsApp messages and failures are made to happen through the
`simulate_*` methods, which `app/fronts/sandbox_console.py` serves over HTTP for testers.

This module keeps the sandbox's rules (ids, statuses, WhatsApp, what a tester makes happen); its rows are
a SandboxStore's (app/state/sandbox.py: SQLite by default, PostgreSQL to share them across hosts). The
store is the sandbox's upstream: a store that cannot be used is StorageUnavailable (503, Server fault:
nothing was sent, try again).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

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
from app.state import sandbox_store
from app.state.base import Record
from app.state.sandbox import NewCall, NewEmail, NewNotification, NewReceived, NewSent, SandboxStore, Via
from app.vocabulary import (
    CallRecord,
    Credential,
    Device,
    Email,
    EmailDraft,
    Notification,
    ReceivedSms,
    ResendReceipt,
    SendReceipt,
    SendRequest,
    SentSms,
)

#: the phone every new sandbox account starts with
FIRST_DEVICE = ("sandbox-phone-1", "Sandbox phone", "+10000000001")
#: how long a WhatsApp synchronisation lets /getwa/ read messages
WHATSAPP_SYNC_SECONDS = 600
#: the call logs a tester fills (`simulate_call`) and /call/<direction>/list/ reads
CALL_DIRECTIONS = ("missed", "incoming", "outgoing")
#: the mailbox folders: arrivals (`simulate_email`) and what /sendemail/ sent
INBOX, SENT_FOLDER = "INBOX", "Sent"


class SandboxBackend(Backend):
    """Accept every well-formed call and answer from the sandbox's store; nothing leaves the machine."""

    name = "sandbox"
    simulates = True

    def __init__(self, settings: Settings, store: SandboxStore | None = None) -> None:
        super().__init__(settings)
        self._store = store if store is not None else sandbox_store(settings)

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
            NewSent(
                guid=guid,
                account=account,
                recipient=number,
                message=request.message,
                port=options.port,
                sidentifiant=options.sIdentifiant,
                via_sms=int(options.via_sms),
                via_whatsapp=int(options.via_whatsapp),
                encrypted=int(encrypted),
                shorturl=int(options.shorturl == "1"),
                url_media=options.url_media,
                schedule_timestamp=scheduled,
                created_at=now,
                status="pending" if pending else "sent",
                sent_at=None if pending else now,
            )
            for guid, number in zip(guids, numbers, strict=True)
        ]
        self._store.add_sent(rows)
        return SendReceipt(
            message_ids=guids,
            note=_note(request),
            port=options.port if options.port in ("1", "2") else None,
            via_whatsapp=options.via_whatsapp,
            encrypted=encrypted,
        )

    def sent_log(self, credential: Credential, guid: str | None = None) -> list[SentSms]:
        """Return the SMS sent through the API, newest first."""
        return self._sent(credential, "sms", guid)

    def sent_from_mobile(self, credential: Credential) -> list[SentSms]:
        """Return what the phone has sent: here, the API's SMS once the phone sent them."""
        return [sms for sms in self._sent(credential, "sms") if sms.was_sent]

    def resend(self, credential: Credential, guid: str) -> ResendReceipt:
        """Send a failed SMS again."""
        return self._resend(credential, guid, "sms", "SMS")

    def resend_whatsapp(self, credential: Credential, guid: str) -> ResendReceipt:
        """Send a failed WhatsApp message again."""
        return self._resend(credential, guid, "whatsapp", "WhatsApp message")

    def delete_sent(self, credential: Credential, guids: list[str]) -> int:
        """Delete these messages from the sent log."""
        return self._store.delete_sent(self._account(credential), guids)

    # --- receiving -----------------------------------------------------------------------------------

    def received(self, credential: Credential) -> list[ReceivedSms]:
        """Return the SMS received, newest first."""
        return self._received(credential, "sms")

    def mark_read(self, credential: Credential, guid: str) -> None:
        """Mark a received SMS as read."""
        if not self._store.mark_read(self._account(credential), guid):
            raise UnknownMessage(f"no received SMS has the guid {guid!r}")

    def set_alias(self, credential: Credential, guid: str, alias: str) -> None:
        """Set or clear the alias of a received SMS."""
        if not self._store.set_alias(self._account(credential), guid, alias or None):
            raise UnknownMessage(f"no received SMS has the guid {guid!r}")

    # --- phones --------------------------------------------------------------------------------------

    def devices(self, credential: Credential) -> list[Device]:
        """Return the account's phones."""
        return [
            Device(
                sid=r["sid"],
                label=r["label"],
                phone_number=r["phone_number"],
                last_seen=r["last_seen"],
                battery="100",
                version="sandbox",
            )
            for r in self._store.devices(self._account(credential))
        ]

    def update_device(self, credential: Credential, sid: str, label: str, phone_number: str | None) -> Device:
        """Change a phone's label and, when given, its number."""
        if not self._store.update_device(self._account(credential), sid, label, phone_number):
            raise UnknownDevice(f"no connected phone has the sid {sid!r}")
        return next(d for d in self.devices(credential) if d.sid == sid)

    def delete_device(self, credential: Credential, sid: str) -> None:
        """Remove a phone and the messages it received."""
        if not self._store.delete_device(self._account(credential), sid):
            raise UnknownDevice(f"no connected phone has the sid {sid!r}")

    # --- WhatsApp ------------------------------------------------------------------------------------

    def whatsapp_sync(self, credential: Credential) -> int:
        """Open a window in which /getwa/ may read messages."""
        account = self._account(credential)
        expires = int(time.time()) + WHATSAPP_SYNC_SECONDS
        self._store.open_whatsapp_sync(account, expires)
        return expires

    def whatsapp_received(self, credential: Credential) -> list[ReceivedSms]:
        """Return the WhatsApp messages received, if a synchronisation is open."""
        if self._account_record(self._account(credential))["whatsapp_sync_expires"] < time.time():
            raise SyncRequired(
                "call /getwa/synchronisation/ first: messages are read after a synchronisation"
            )
        return self._received(credential, "whatsapp")

    def whatsapp_active(self, credential: Credential, statut: str) -> str:
        """Read, set or toggle WhatsApp sending."""
        account = self._account(credential)
        if statut and statut not in ("0", "1") and statut.lower() != "x":
            raise InvalidParameter(f"statut={statut!r} is not valid: expected 0, 1 or x")
        if statut:
            self._store.set_whatsapp_active(account, statut == "1" if statut in ("0", "1") else None)
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
        row = self._store.add_received(
            NewReceived(
                guid=str(uuid.uuid4()).upper(),
                account=account,
                channel=channel,
                number=number,
                message=message,
                received_at=received_at or int(time.time()),
                device=device,
                kind=kind,
                contact=contact,
            )
        )
        return _received_sms(row)

    def simulate_failure(
        self, credential: Credential, guid: str, error: str, where: str = "mobile"
    ) -> SentSms:
        """Make a sent message fail, on the phone (`error_mobile`) or in the API (`error_api`)."""
        if where not in ("mobile", "api"):
            raise InvalidParameter("where must be mobile or api")
        account = self._account(credential)
        if not self._store.fail_sent(
            account, guid, error or "failed", "mobile" if where == "mobile" else "api"
        ):
            raise UnknownMessage(f"no sent message has the guid {guid!r}")
        return self._sent(credential, None, guid)[0]

    def add_device(self, credential: Credential, sid: str, label: str = "", phone_number: str = "") -> Device:
        """Connect another phone to the account."""
        self._store.put_device(self._account(credential), sid, label, phone_number, int(time.time()))
        return next(d for d in self.devices(credential) if d.sid == sid)

    # --- storage -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close this thread's connections to the sandbox's store."""
        self._store.close()

    def _account(self, credential: Credential) -> str:
        """Check the key, make its account on first use, and return the account's name."""
        if isinstance(credential, StoredAccount):  # the web inbox acts for an account it lists, keyless
            return credential.name
        keys = self.settings.sandbox_api_keys
        if keys and not any(secrets.compare_digest(credential.secret, k) for k in keys):
            raise CredentialRefused("the API key is not one of the sandbox's keys")
        account = account_of(credential.secret)
        if self._store.account(account) is None:
            self._store.create_account(account, FIRST_DEVICE, int(time.time()))
        return account

    def _account_record(self, account: str) -> Record:
        """Return the record of an account `_account` has made."""
        record = self._store.account(account)
        assert record is not None, "accounts are never deleted"
        return record

    def _whatsapp_on(self, account: str) -> bool:
        return bool(self._account_record(account)["whatsapp_active"])

    def _sent(self, credential: Credential, via: Via | None, guid: str | None = None) -> list[SentSms]:
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
                delivered_at=r["delivered_at"],
            )
            for r in self._store.sent(self._account(credential), via=via, guid=guid)
        ]

    def _resend(self, credential: Credential, guid: str, via: Via, what: str) -> ResendReceipt:
        account = self._account(credential)
        found = self._sent(credential, via, guid)
        if not found:
            raise UnknownMessage(f"no sent {what} has the guid {guid!r}")
        [sms] = found
        if sms.status != "failed":
            raise NotResendable(
                f"the {what} {guid} is not in an error state ({sms.status}); it is not resent"
            )
        # The store resends only a message still failed: of two resends at once, one resends.
        attempts = self._store.resend(account, guid, int(time.time()))
        if attempts is None:
            raise NotResendable(f"the {what} {guid} is being resent already; it is not resent again")
        return ResendReceipt(attempt=attempts, message_id=guid)

    def _received(self, credential: Credential, channel: str) -> list[ReceivedSms]:
        return [_received_sms(r) for r in self._store.received(self._account(credential), channel)]

    def sent(self, secret: str) -> list[Record]:
        """Return every row the sandbox accepted for the key `secret`, oldest first (for tests)."""
        return self._store.sent(account_of(secret), oldest_first=True)

    # --- calls, notifications, e-mail (simulated: see docs/backends.md) ------------------------------

    def calls(self, credential: Credential, direction: str) -> list[CallRecord]:
        """Return the calls the tester made happen in one direction, newest first."""
        if direction not in CALL_DIRECTIONS:
            raise InvalidParameter(f"direction must be one of {', '.join(CALL_DIRECTIONS)}")
        return [_call(r) for r in self._store.calls(self._account(credential), direction)]

    def send_notification(
        self, credential: Credential, sid: str, title: str, message: str, kind: str = "notification"
    ) -> Notification:
        """Store a notification for a phone ("": the first); the sandbox's phones take it at once."""
        account = self._account(credential)
        row = self._store.add_notification(
            NewNotification(
                account=account,
                sid=self._phone(credential, sid),
                title=title,
                message=message,
                type=kind,
                distributed=1,
                created_at=int(time.time()),
            )
        )
        return _notification(row)

    def notifications(self, credential: Credential) -> list[Notification]:
        """Return the notifications sent to the account's phones, newest first."""
        return [_notification(r) for r in self._store.notifications(self._account(credential))]

    def send_email(self, credential: Credential, draft: EmailDraft) -> Email:
        """Keep the e-mail in the mailbox's Sent folder: nothing is sent anywhere."""
        return self._keep_email(credential, draft, SENT_FOLDER)

    def emails(self, credential: Credential, mailbox_key: str, folder: str) -> list[Email]:
        """Return a folder (INBOX, Sent; any other is empty) of a mailbox, newest first."""
        rows = self._store.emails(self._account(credential), mailbox_of(mailbox_key), _folder(folder))
        return [_email(r) for r in rows]

    def simulate_call(
        self,
        credential: Credential,
        direction: str,
        number: str,
        *,
        name: str | None = None,
        duration: int = 0,
        device: str = "",
        at: int | None = None,
    ) -> CallRecord:
        """Log a call on a phone of the account ("": the first); a missed call lasts 0 s."""
        account = self._account(credential)
        if direction not in CALL_DIRECTIONS:
            raise InvalidParameter(f"direction must be one of {', '.join(CALL_DIRECTIONS)}")
        check_phone_number(number)
        if duration < 0 or (direction == "missed" and duration):
            raise InvalidParameter("duration must be at least 0 seconds, and 0 for a missed call")
        row = self._store.add_call(
            NewCall(
                guid=str(uuid.uuid4()).upper(),
                account=account,
                direction=direction,
                number=number,
                name=name or None,
                device=self._phone(credential, device),
                at=at or int(time.time()),
                duration=duration,
            )
        )
        return _call(row)

    def simulate_email(self, credential: Credential, draft: EmailDraft) -> Email:
        """Make the mailbox (`draft.mailbox_key`; "": the sandbox's own) receive an e-mail in its INBOX."""
        return self._keep_email(credential, draft, INBOX)

    def simulate_delivery(self, credential: Credential, guid: str) -> SentSms:
        """Make a sent message delivered; refuse one that is pending or failed."""
        account = self._account(credential)
        if not self._store.deliver_sent(account, guid, int(time.time())):
            found = self._sent(credential, None, guid)
            if not found:
                raise UnknownMessage(f"no sent message has the guid {guid!r}")
            if found[0].status != "delivered":
                raise InvalidParameter(
                    f"the message {guid} is {found[0].status}: only a sent message can be delivered"
                )
        return self._sent(credential, None, guid)[0]

    def _phone(self, credential: Credential, sid: str) -> str:
        """Return the sid of a phone of the account: `sid`, or with "" the first; refuse any other."""
        phones = [d.sid for d in self.devices(credential)]
        if not phones:
            raise NoDeviceAvailable("the sandbox account has no connected phone")
        if not sid:
            return phones[0]
        if sid not in phones:
            raise UnknownDevice(f"no connected phone has the sid {sid!r}")
        return sid

    def _keep_email(self, credential: Credential, draft: EmailDraft, folder: str) -> Email:
        row = self._store.add_email(
            NewEmail(
                account=self._account(credential),
                mailbox=mailbox_of(draft.mailbox_key),
                folder=folder,
                sender_name=draft.sender_name,
                sender_email=draft.sender_email,
                recipient_email=draft.recipient_email,
                subject=draft.subject,
                body=draft.body,
                at=int(time.time()),
                attachment_name=draft.attachment_name,
                attachment_size=len(draft.attachment),
            )
        )
        return _email(row)


@dataclass(frozen=True)
class StoredAccount(Credential):
    """An account the store holds, named by its digest: how the web inbox (app/service/inbox.py) acts
    for it without its key (the inbox is the operator's; it is closed by SMSBRIDGE_UI_PASSWORD)."""

    name: str = ""


def account_of(secret: str) -> str:
    """Return the name the sandbox files a key's messages under: a hash, never the key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def mailbox_of(key: str) -> str:
    """Return the name a mailbox's e-mail is filed under: "" for the sandbox's own, else its key's digest."""
    return hashlib.sha256(key.encode()).hexdigest()[:32] if key else ""


def _folder(name: str) -> str:
    """Return a folder's name as stored: IMAP's INBOX in any case, other names as given."""
    return INBOX if name.upper() == INBOX else name


def _call(r: Record) -> CallRecord:
    return CallRecord(
        id=r["id"],
        guid=r["guid"],
        direction=r["direction"],
        number=r["number"],
        at=r["at"],
        name=r["name"],
        duration=r["duration"],
        device=r["device"],
    )


def _notification(r: Record) -> Notification:
    return Notification(
        id=r["id"],
        sid=r["sid"],
        title=r["title"],
        message=r["message"],
        created_at=r["created_at"],
        type=r["type"],
        distributed=bool(r["distributed"]),
    )


def _email(r: Record) -> Email:
    return Email(
        id=r["id"],
        folder=r["folder"],
        sender_name=r["sender_name"],
        sender_email=r["sender_email"],
        recipient_email=r["recipient_email"],
        subject=r["subject"],
        body=r["body"],
        at=r["at"],
        attachment_name=r["attachment_name"],
        attachment_size=r["attachment_size"],
    )


def _received_sms(r: Record) -> ReceivedSms:
    return ReceivedSms(
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


def _note(request: SendRequest) -> str:
    options = request.options
    channel = "WhatsApp" if not options.via_sms else "mobile"
    if options.via_sms and options.via_whatsapp:
        channel = "mobile and WhatsApp"
    when = " (scheduled)" if options.schedule_timestamp else ""
    return f"sent by {channel}{when}; smsbridge sandbox: nothing left this machine"
