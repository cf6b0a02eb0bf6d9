"""The interface every backend offers, and the checks of send options that backends share."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

from app.config import Settings
from app.errors import InvalidParameter, InvalidRecipient
from app.vocabulary import SendOptions, SendReceipt, SendRequest


class Backend(ABC):
    """An upstream that sends SMS: translate the internal vocabulary to it and back."""

    #: the value of SMSBRIDGE_BACKEND that selects this backend
    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def send(self, request: SendRequest) -> SendReceipt:
        """Send `request`; return the receipt, or raise a BridgeError saying why not."""

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

_PHONE = re.compile(r"\+?[0-9][0-9 ().\-]*")


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
    digits = re.sub(r"[ ().\-]", "", recipient)
    if not _PHONE.fullmatch(recipient) or not 3 <= len(digits.lstrip("+")) <= 15:
        raise InvalidRecipient(
            f"recipient {_shown(recipient)} is not a phone number "
            "(expected digits, optionally starting with + and the country code)"
        )
    return digits


def _shown(value: str, limit: int = 40) -> str:
    """Quote a caller's value for an error note, cut short so a note stays readable."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
