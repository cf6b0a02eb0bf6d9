"""mobsms: a JSON REST gateway, driven by translating SMSMobileAPI sends to `POST /api/sms`."""

from __future__ import annotations

import json
import re

import requests

from app.backends.base import Backend, check_option_values, check_phone_number
from app.config import Settings
from app.errors import (
    BackendBadAnswer,
    BackendFailed,
    BridgeError,
    CredentialRefused,
    InvalidParameter,
    InvalidRecipient,
    MessageTooLong,
    NoDeviceAvailable,
    NotAllowed,
    UnsupportedByBackend,
    UpstreamRateLimited,
)
from app.upstream import UpstreamHttp
from app.vocabulary import SendOptions, SendReceipt, SendRequest

MAX_MESSAGE_CHARS = 1600

#: SMSMobileAPI options mobsms has no way to honour, and the values that ask for them
_UNSUPPORTED = {
    "sendwa": ("WhatsApp", lambda v: v == "1"),
    "waonly": ("WhatsApp", lambda v: v.lower() == "yes"),
    "url_media": ("WhatsApp media", bool),
    "pdf_with_image": ("WhatsApp PDF previews", lambda v: v.lower() == "yes"),
    "url_media_shorted": ("WhatsApp short media links", lambda v: v.lower() == "yes"),
    "port": ("choosing the SIM port", lambda v: v in ("1", "2")),
    "encrypt_message": ("encrypted messages", lambda v: v.lower() == "yes"),
    "shorturl": ("short URLs", lambda v: v == "1"),
    "schedule_timestamp": ("scheduled sending", bool),
    "sendsms": ("blocking SMS (sendsms=0)", lambda v: v == "0"),
}


class MobsmsBackend(Backend):
    """Translate sends to mobsms's JSON API and its `{success, data, message}` answers back."""

    name = "mobsms"

    def __init__(self, settings: Settings, http: UpstreamHttp | None = None) -> None:
        super().__init__(settings)
        self.base_url = settings.mobsms_url.rstrip("/")
        self.http = http or UpstreamHttp(settings, self.name)

    def send(self, request: SendRequest) -> SendReceipt:
        """Queue the SMS with mobsms: one recipient with /api/sms, several with /api/sms/bulk."""
        refuse_unsupported(request.options)
        check_option_values(request.options)
        numbers = tuple(to_e164(r) for r in request.recipients)
        if len(request.message) > MAX_MESSAGE_CHARS:
            raise MessageTooLong(
                f"the message has {len(request.message)} characters; mobsms takes at most {MAX_MESSAGE_CHARS}"
            )
        body: dict[str, object] = {"message": request.message}
        if len(numbers) == 1:
            path, body["recipient_number"] = "/api/sms", numbers[0]
        else:
            path, body["recipients"] = "/api/sms/bulk", _bulk_recipients(numbers, request.message)
        if request.options.sIdentifiant:
            body["device_id"] = request.options.sIdentifiant
        response = self.http.request(
            "POST",
            self.base_url + path,
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers={
                "Authorization": f"Bearer {request.credential.secret}",
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
            },
        )
        data = _success_data(response)
        items = data if isinstance(data, list) else [data]
        ids = _message_ids(items, len(numbers))
        return SendReceipt(message_ids=ids, note=_note(items))


def refuse_unsupported(options: SendOptions) -> None:
    """Raise UnsupportedByBackend naming every option whose value asks for what mobsms lacks."""
    asked = [
        (name, feature) for name, (feature, asks) in _UNSUPPORTED.items() if asks(getattr(options, name))
    ]
    if asked:
        named = "; ".join(f"{name} ({feature})" for name, feature in asked)
        raise UnsupportedByBackend(
            f"the mobsms backend cannot honour {named}; remove the parameter or ask the operator "
            "for a backend that supports it"
        )


def to_e164(recipient: str) -> str:
    """Return `recipient` as E.164 (+ and digits), or raise InvalidRecipient saying why."""
    digits = check_phone_number(recipient)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif digits.startswith("0"):
        raise InvalidRecipient(
            f"recipient {recipient!r} is a national number; mobsms needs the international form "
            "with the country code, such as +32470123456"
        )
    elif not digits.startswith("+"):
        digits = "+" + digits
    if not re.fullmatch(r"\+[1-9][0-9]{6,14}", digits):
        raise InvalidRecipient(
            f"recipient {recipient!r} cannot be written in E.164 (+, country code, 7 to 15 digits)"
        )
    return digits


def _bulk_recipients(numbers: tuple[str, ...], message: str) -> list[object]:
    # mobsms replaces {name} in a bulk message with each recipient's name; naming every recipient
    # "{name}" keeps a literal "{name}" in the caller's text as it was written.
    if "{name}" in message:
        return [{"number": n, "name": "{name}"} for n in numbers]
    return list(numbers)


def _success_data(response: requests.Response) -> object:
    """Return `data` from a successful answer, or raise the error the answer stands for."""
    try:
        document = response.json()
    except ValueError:
        document = None
    said = document.get("message") if isinstance(document, dict) else None
    if 200 <= response.status_code < 300:
        if isinstance(document, dict) and document.get("success") is True:
            data = document.get("data")
            if isinstance(data, (dict, list)) and data:
                return data
        raise BackendBadAnswer(
            f"mobsms answered HTTP {response.status_code} without the expected "
            "{success, data} body; the message may have been queued: check before sending again"
        )
    raise _error_for(response.status_code, said, document, response.headers.get("Retry-After"))


def _error_for(status: int, said: object, document: object, retry_after: str | None) -> BridgeError:
    words = f": {str(said)[:200]}" if said else ""
    if status == 401:
        return CredentialRefused(f"mobsms refused the API key{words}")
    if status == 403:
        return NotAllowed(f"mobsms does not allow this for the key's plan{words}")
    if status == 422 and isinstance(said, str) and "no active device" in said.lower():
        return NoDeviceAvailable("mobsms has no active device to send from; nothing was sent")
    if status == 422:
        return InvalidParameter(f"mobsms refused the request{words}{_field_errors(document)}")
    if status == 429:
        return UpstreamRateLimited(
            f"mobsms says too many requests{words}",
            retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    if status >= 500:
        return BackendFailed(f"mobsms answered with a server error, HTTP {status}")
    return BackendBadAnswer(f"mobsms answered HTTP {status}, which the bridge does not expect")


def _field_errors(document: object) -> str:
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, dict):
        return ""
    parts = []
    for field_name, problems in list(errors.items())[:5]:
        text = problems[0] if isinstance(problems, list) and problems else problems
        parts.append(f"{field_name}: {str(text)[:120]}")
    return " (" + "; ".join(parts) + ")"


def _message_ids(items: list, count: int) -> tuple[str, ...]:
    """Return one id per recipient, in the caller's order (mobsms answers in the order it was sent)."""
    ids = []
    for item in items:
        ident = item.get("message_id") or item.get("id") if isinstance(item, dict) else None
        if ident in (None, ""):
            raise BackendBadAnswer("mobsms queued the messages but gave no id for one of them")
        ids.append(str(ident))
    if len(ids) != count:
        raise BackendBadAnswer(
            f"mobsms answered with {len(ids)} queued messages for {count} recipients; "
            "check its log before sending again"
        )
    return tuple(ids)


def _note(items: list) -> str:
    statuses = sorted({str(item.get("status", "pending")) for item in items})
    return f"queued by mobsms ({', '.join(statuses)})"
