"""The interface every backend offers, and the checks of send options that backends share.

A backend says what it can do in two ways. Its class attributes name the capabilities a front looks at
before it calls anything: `passes_through` (calls are forwarded as made, `forward`), `receives_webhooks`
(its upstream posts events to /webhooks/<name>/<client>, `verify_webhook` and `webhook_event`) and
`simulates` (a tester makes events happen, the sandbox console). Its methods do the work; every one but
`send` and `verify_webhook` has a default that refuses with UnsupportedByBackend, naming the backend and
the call (`verify_webhook`'s default checks nothing: a backend whose upstream signs its posts overrides it).

This module imports no setting at import time (`Settings` is a type only): app/config.py reads the
registry's names (app/backends/__init__.py), which imports this module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from app.errors import InvalidParameter, UnsupportedByBackend
from app.phone import plain_number
from app.phone import shown as _shown
from app.vocabulary import (
    CallRecord,
    Credential,
    Device,
    Email,
    EmailDraft,
    HttpCall,
    Notification,
    ReceivedSms,
    ResendReceipt,
    SendOptions,
    SendReceipt,
    SendRequest,
    SentSms,
    UpstreamReply,
)

if TYPE_CHECKING:
    from app.config import Settings


class Headers(Protocol):
    """A post's headers, looked up by name in any case (werkzeug's request headers)."""

    def get(self, key: str, default: str) -> str:
        """Return the first value of the header `key`, or `default`."""
        ...


@dataclass(frozen=True)
class WebhookEvent:
    """An upstream's event in the bridge's webhook vocabulary (app/webhooks/delivery.py sends it)."""

    #: sms.received, sms.sent, sms.failed...
    type: str
    data: dict = field(default_factory=dict)
    #: the upstream's own id of the event (a UUID) when it gives one, so a repeat is stored once;
    #: None: the bridge derives one from the message and its state
    id: str | None = None


class Backend(ABC):
    """An upstream that sends SMS: translate the internal vocabulary to it and back."""

    #: the value of SMSBRIDGE_BACKEND that selects this backend
    name: ClassVar[str]
    #: True for a backend that speaks the dialect itself: calls are forwarded (`forward`), not translated
    passes_through: ClassVar[bool] = False
    #: True for a backend whose upstream posts webhooks to /webhooks/<name>/<client> (`webhook_event`)
    receives_webhooks: ClassVar[bool] = False
    #: True for a backend whose events a tester can make happen (`simulate_*`, the sandbox console)
    simulates: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def send(self, request: SendRequest) -> SendReceipt:
        """Send `request`; return the receipt, or raise a BridgeError saying why not."""

    # What follows is optional: a backend that cannot do it says so, and the caller is told which
    # backend and which call. Lists are newest first; the fronts apply the dialect's filters.

    def sent_log(self, credential: Credential, guid: str | None = None) -> list[SentSms]:
        """Return the messages sent through the API (only `guid`, when given)."""
        raise self.cannot("the sent log")

    def resend(self, credential: Credential, guid: str) -> ResendReceipt:
        """Send a failed message again; refuse one that did not fail."""
        raise self.cannot("resending")

    def delete_sent(self, credential: Credential, guids: list[str]) -> int:
        """Delete these messages from the sent log; return how many were deleted."""
        raise self.cannot("deleting from the sent log")

    def sent_from_mobile(self, credential: Credential) -> list[SentSms]:
        """Return the SMS the phones sent, by the API or by hand, as synchronised from them."""
        raise self.cannot("the log of SMS sent from the phone itself")

    def received(self, credential: Credential) -> list[ReceivedSms]:
        """Return the SMS the phones received, with the bridge's read flags and aliases."""
        raise self.cannot("received SMS")

    def mark_read(self, credential: Credential, guid: str) -> None:
        """Mark a received SMS as read (in the API's view only)."""
        raise self.cannot("read flags on received SMS")

    def set_alias(self, credential: Credential, guid: str, alias: str) -> None:
        """Set (or, with "", clear) the alias of a received SMS."""
        raise self.cannot("aliases on received SMS")

    def devices(self, credential: Credential) -> list[Device]:
        """Return the connected phones."""
        raise self.cannot("listing connected phones")

    def update_device(self, credential: Credential, sid: str, label: str, phone_number: str | None) -> Device:
        """Change a phone's label (and phone number, when given)."""
        raise self.cannot("renaming a phone")

    def delete_device(self, credential: Credential, sid: str) -> None:
        """Remove a phone and its history."""
        raise self.cannot("removing a phone")

    def whatsapp_sync(self, credential: Credential) -> int:
        """Start a WhatsApp synchronisation; return when it expires (UNIX seconds)."""
        raise self.cannot("WhatsApp")

    def whatsapp_received(self, credential: Credential) -> list[ReceivedSms]:
        """Return the WhatsApp messages received, once synchronised."""
        raise self.cannot("WhatsApp")

    def whatsapp_active(self, credential: Credential, statut: str) -> str:
        """Read ("" ), set ("0", "1") or toggle ("x") WhatsApp sending; return the state."""
        raise self.cannot("WhatsApp")

    def whatsapp_check(self, credential: Credential, number: str) -> bool:
        """Say whether `number` is on WhatsApp."""
        raise self.cannot("WhatsApp")

    def resend_whatsapp(self, credential: Credential, guid: str) -> ResendReceipt:
        """Send a failed WhatsApp message again."""
        raise self.cannot("WhatsApp")

    # --- pass-through (passes_through = True) ---------------------------------------------------------

    def forward(self, call: HttpCall, credential: Credential | None) -> UpstreamReply:
        """Make `call` upstream as the caller made it, with `credential` put back; return the answer.

        Only a backend that speaks the dialect itself does this; the fronts ask `passes_through` first.
        """
        raise self.cannot("passing calls through to the vendor's API")

    # --- webhooks its upstream posts (receives_webhooks = True) ---------------------------------------
    # Class methods: reading a post needs no connection, so no backend is built for it.

    @classmethod  # noqa: B027 (by default there is nothing to verify)
    def verify_webhook(cls, body: bytes, headers: Headers, secret: str) -> None:
        """Raise CredentialRefused when a post's signature does not verify under `secret`.

        `secret` is the one the operator configured for the client's upstream webhooks ("" for none);
        by default nothing is signed, so nothing is checked (the signed source URL is the check).
        """

    @classmethod
    def webhook_event(cls, document: dict, headers: Headers) -> WebhookEvent | None:
        """Return the event a posted JSON object stands for, or None for one the bridge does not relay."""
        raise UnsupportedByBackend(f"the {cls.name} backend does not receive webhooks")

    def register_webhooks(self, credential: Credential, url: str) -> int:
        """Tell the upstream to post the account's events to `url`; return the upstream's HTTP status."""
        raise self.cannot("registering webhook URLs")

    # --- what a tester makes happen (simulates = True) ------------------------------------------------

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
        raise self.cannot("simulating received messages")

    def simulate_failure(
        self, credential: Credential, guid: str, error: str, where: str = "mobile"
    ) -> SentSms:
        """Make a sent message fail, on the phone (`error_mobile`) or in the API (`error_api`)."""
        raise self.cannot("simulating failed messages")

    def add_device(self, credential: Credential, sid: str, label: str = "", phone_number: str = "") -> Device:
        """Connect another phone to the account."""
        raise self.cannot("connecting phones")

    # --- calls, notifications, e-mail (the vendor's other endpoints) ----------------------------------

    def calls(self, credential: Credential, direction: str) -> list[CallRecord]:
        """Return the phones' calls of one `direction` (missed, incoming, outgoing), newest first."""
        raise self.cannot("call logs")

    def send_notification(
        self, credential: Credential, sid: str, title: str, message: str, kind: str = "notification"
    ) -> Notification:
        """Send an internal notification to a phone (`sid`; "" for the account's first phone)."""
        raise self.cannot("notifications to phones")

    def notifications(self, credential: Credential) -> list[Notification]:
        """Return the notifications sent to the phones, newest first."""
        raise self.cannot("notifications to phones")

    def send_email(self, credential: Credential, draft: EmailDraft) -> Email:
        """Send an e-mail through a configured mailbox; return it as kept in the mailbox."""
        raise self.cannot("e-mail")

    def emails(self, credential: Credential, mailbox_key: str, folder: str) -> list[Email]:
        """Return a mailbox folder's e-mail, newest first."""
        raise self.cannot("e-mail")

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
        """Make a phone of the account log a call (missed, incoming or outgoing)."""
        raise self.cannot("simulating calls")

    def simulate_email(self, credential: Credential, draft: EmailDraft) -> Email:
        """Make a mailbox of the account receive an e-mail (in its INBOX)."""
        raise self.cannot("simulating e-mail")

    def simulate_delivery(self, credential: Credential, guid: str) -> SentSms:
        """Make a sent message delivered (its delivery report arrived)."""
        raise self.cannot("simulating delivery reports")

    def cannot(self, what: str) -> UnsupportedByBackend:
        """Return the error for a call this backend has no way to answer."""
        return UnsupportedByBackend(f"the {self.name} backend does not support {what}")

    def close(self) -> None:  # noqa: B027 (most backends hold nothing to release)
        """Release what the backend holds (connections, files)."""


_ALLOWED_VALUES = {
    "port": ("", "0", "1", "2"),
    "shorturl": ("", "0", "1"),
    "sendwa": ("", "0", "1"),
    "sendsms": ("", "0", "1"),
    "encrypt_message": ("", "yes", "no"),
    "waonly": ("", "yes", "no"),
    "pdf_with_image": ("", "yes", "no"),
    "url_media_shorted": ("", "yes", "no"),
}


def check_option_values(options: SendOptions) -> None:
    """Refuse option values the SMSMobileAPI docs do not define, naming the parameter."""
    for name, allowed in _ALLOWED_VALUES.items():
        value = getattr(options, name).lower()
        if value not in allowed:
            shown = ", ".join(repr(v) for v in allowed if v) + " or empty"
            raise InvalidParameter(f"{name}={_shown(value)} is not valid: expected {shown}")
    if options.schedule_timestamp and not options.schedule_timestamp.isdigit():
        raise InvalidParameter(
            f"schedule_timestamp={_shown(options.schedule_timestamp)} is not valid: "
            "expected a UNIX timestamp in seconds (GMT 0)"
        )
    if options.url_media and not options.url_media.lower().startswith("https://"):
        raise InvalidParameter("url_media must be a public https:// URL")
    if not options.via_sms and not options.via_whatsapp:
        raise InvalidParameter("sendsms=0 blocks SMS and WhatsApp was not asked for: nothing to send")


def check_phone_number(recipient: str) -> str:
    """Return the number with its punctuation removed, or raise InvalidRecipient naming it."""
    # Only its shape: the sandbox keeps numbers as written; translating backends use app.phone.to_e164.
    return plain_number(recipient)
