"""The interface every backend offers, and the checks of send options that backends share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from app.config import Settings
from app.errors import InvalidParameter, UnsupportedByBackend
from app.phone import plain_number
from app.phone import shown as _shown
from app.vocabulary import (
    Credential,
    Device,
    ReceivedSms,
    ResendReceipt,
    SendOptions,
    SendReceipt,
    SendRequest,
    SentSms,
)


class Backend(ABC):
    """An upstream that sends SMS: translate the internal vocabulary to it and back."""

    #: the value of SMSBRIDGE_BACKEND that selects this backend
    name: ClassVar[str]
    #: True for a backend that speaks the dialect itself: calls are forwarded, not translated
    passes_through: ClassVar[bool] = False

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
