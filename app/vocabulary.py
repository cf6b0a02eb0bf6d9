"""The internal vocabulary fronts and backends share: what a caller asked for and what came of it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


def key_digest(secret: str) -> str:
    """Return the SHA-256 hex digest of a key: how the clients file, the state and the logs name it.

    Keys are long random strings, so a plain digest is enough to name one without keeping it.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def unix_seconds(value: object) -> int | None:
    """Return an ISO 8601 time (2026-06-08T10:00:00.000000Z) as UNIX seconds; None when unreadable.

    A time without a zone is the host's local time, as the vendor's answers write it.
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return int(parsed.timestamp())


class CredentialSource(Enum):
    """Where the caller put its credential, so a passthrough puts it back in the same place."""

    QUERY = "query"
    FORM = "form"
    BEARER = "bearer"
    SOAP = "soap"


#: what an operator-held credential becomes wherever an answer to a caller quotes it
MASKED_SECRET = "***"  # noqa: S105 (a mask, not a secret)


@dataclass(frozen=True)
class Credential:
    """The caller's API key or token; `repr` never shows it."""

    secret: str = field(repr=False)
    source: CredentialSource
    #: the operator's own credential (managed clients, failover): never shown to a caller, masked in answers
    operator_held: bool = False

    @property
    def fingerprint(self) -> str:
        """Return a short, stable, non-reversible name for the key, fit for logs."""
        return self.account[:12]

    @property
    def account(self) -> str:
        """Return the name the bridge files this key's state under: its SHA-256, never the key."""
        return key_digest(self.secret)


@dataclass(frozen=True)
class HttpCall:
    """A REST call as the caller made it, minus its credential: what a passthrough forwards."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    form: tuple[tuple[str, str], ...]
    #: a body that is not a form (JSON, say), kept byte for byte, with its credential still inside
    body: bytes | None = field(default=None, repr=False)
    content_type: str = ""
    #: an Authorization header that is not the credential (HTTP Basic to /oauth2/token), as sent
    authorization: str = field(default="", repr=False)


@dataclass(frozen=True)
class SendOptions:
    """The optional SMSMobileAPI send parameters, as the caller wrote them ("" when absent)."""

    port: str = ""
    shorturl: str = ""
    sIdentifiant: str = ""
    sendwa: str = ""
    sendsms: str = ""
    encrypt_message: str = ""
    schedule_timestamp: str = ""
    waonly: str = ""
    url_media: str = ""
    pdf_with_image: str = ""
    url_media_shorted: str = ""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Return the parameter names, in the docs' order."""
        return tuple(cls.__dataclass_fields__)

    @property
    def via_whatsapp(self) -> bool:
        """Whether the caller asked for WhatsApp, alone or besides SMS."""
        return self.sendwa == "1" or self.waonly.lower() == "yes"

    @property
    def via_sms(self) -> bool:
        """Whether an SMS is to go out (not blocked by `sendsms=0`, not WhatsApp only)."""
        return self.sendsms != "0" and self.waonly.lower() != "yes"


@dataclass(frozen=True)
class SendRequest:
    """One send: a text to one or more recipients, with the caller's options."""

    credential: Credential
    recipients: tuple[str, ...]
    message: str = field(repr=False)
    options: SendOptions = field(default_factory=SendOptions)
    #: the REST call as made, for a backend that forwards it verbatim; None for SOAP
    http: HttpCall | None = None
    #: the caller's reference for this send (its idempotency key, else the request id)
    reference: str = ""
    #: the caller's Idempotency-Key, when it gave one
    idempotency_key: str = ""


@dataclass(frozen=True)
class UpstreamReply:
    """An upstream HTTP answer kept byte for byte, for a passthrough."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SendReceipt:
    """What came of a send that the backend accepted."""

    #: one message id per recipient, in the order of `SendRequest.recipients`
    message_ids: tuple[str, ...]
    note: str
    port: str | None = None
    via_whatsapp: bool = False
    encrypted: bool = False
    #: the backend's own result fields in SMSMobileAPI's vocabulary, when it speaks it
    upstream_fields: dict | None = None
    #: the backend's answer byte for byte, when the caller should get it unchanged
    verbatim: UpstreamReply | None = None


@dataclass(frozen=True)
class SentSms:
    """One message in the sent log."""

    guid: str
    recipient: str
    message: str = field(repr=False)
    #: when the bridge or backend queued it (UNIX seconds)
    queued_at: int
    #: "pending" (not yet sent by the phone), "sent", "delivered" (sent, and reported delivered), or "failed"
    status: str = "pending"
    sent_at: int | None = None
    device: str = ""
    port: int = 0
    error_api: str = ""
    error_mobile: str = ""
    via_whatsapp: bool = False
    #: when the delivery report came (UNIX seconds), for a delivered message
    delivered_at: int | None = None

    @property
    def was_sent(self) -> bool:
        """Whether the phone sent it (a delivered message was sent too)."""
        return self.status in ("sent", "delivered")


@dataclass(frozen=True)
class ReceivedSms:
    """One SMS (or WhatsApp message) received by a phone."""

    id: int
    guid: str
    number: str
    message: str = field(repr=False)
    received_at: int
    device: str = ""
    alias: str | None = None
    read: bool = False
    #: for WhatsApp: "text" or "audio"
    kind: str = "text"
    contact: str = ""


@dataclass(frozen=True)
class Device:
    """A phone connected to the gateway."""

    sid: str
    label: str = ""
    phone_number: str = ""
    active: bool = True
    last_seen: int | None = None
    battery: str = ""
    version: str = ""


@dataclass(frozen=True)
class ResendReceipt:
    """What came of resending a failed message."""

    attempt: int
    message_id: str = ""


@dataclass(frozen=True)
class CallRecord:
    """One call in a phone's call log: missed, incoming (answered) or outgoing."""

    id: int
    guid: str
    #: "missed", "incoming" or "outgoing"
    direction: str
    number: str
    #: when the call started (UNIX seconds)
    at: int
    #: the contact's name, as the phone has it (None: not a contact)
    name: str | None = None
    duration: int = 0
    device: str = ""


@dataclass(frozen=True)
class Notification:
    """An internal notification sent to a connected phone."""

    id: int
    sid: str
    title: str
    message: str = field(repr=False)
    created_at: int = 0
    type: str = "notification"
    #: whether the phone has taken it (the vendor's `distribued`)
    distributed: bool = False


@dataclass(frozen=True)
class EmailDraft:
    """An e-mail to send through a configured mailbox (`/sendemail/`), or one a sandbox mailbox receives."""

    sender_name: str
    sender_email: str
    recipient_email: str
    subject: str = field(repr=False)
    body: str = field(repr=False)
    #: the mailbox's key (`apikeybox`; "" for the sandbox's own mailbox): never shown
    mailbox_key: str = field(default="", repr=False)
    allow_self_signed: bool = False
    unsubscribe: bool = False
    attachment_name: str = ""
    attachment: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Email:
    """An e-mail kept in a mailbox folder (INBOX for arrivals, Sent for what was sent)."""

    id: int
    folder: str
    sender_name: str
    sender_email: str
    recipient_email: str
    subject: str = field(repr=False)
    body: str = field(repr=False)
    at: int = 0
    attachment_name: str = ""
    attachment_size: int = 0
