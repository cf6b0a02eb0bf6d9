"""mobsms: a JSON REST gateway, driven by translating SMSMobileAPI sends to `POST /api/sms`.

Its webhooks (incoming SMS, delivery status, a message's callback_url) are read here too
(`webhook_event`) and pointed at the bridge with `register_webhooks` (PUT /api/webhooks);
app/fronts/webhook_sources.py serves the URL they are posted to.
"""

from __future__ import annotations

import contextlib
import json
import logging
from urllib.parse import quote

from app.backends.base import Backend, Headers, WebhookEvent, check_option_values
from app.config import Settings
from app.errors import (
    BackendBadAnswer,
    BackendBadJson,
    BackendFailed,
    BridgeError,
    CredentialRefused,
    InvalidParameter,
    MessageTooLong,
    NoDeviceAvailable,
    NotAllowed,
    NotResendable,
    ResendInFlight,
    StorageUnavailable,
    UnknownMessage,
    UnsupportedByBackend,
    UpstreamRateLimited,
)
from app.phone import to_e164
from app.state import mobsms_state
from app.upstream import Answer, UpstreamHttp
from app.vocabulary import (
    Credential,
    Device,
    ReceivedSms,
    ResendReceipt,
    SendOptions,
    SendReceipt,
    SendRequest,
    SentSms,
    unix_seconds,
)

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

log = logging.getLogger(__name__)


class MobsmsBackend(Backend):
    """Translate sends to mobsms's JSON API and its `{success, data, message}` answers back."""

    name = "mobsms"
    receives_webhooks = True

    def __init__(self, settings: Settings, http: UpstreamHttp | None = None) -> None:
        super().__init__(settings)
        self.base_url = settings.mobsms_url.rstrip("/")
        self.http = http or UpstreamHttp(settings, self.name)
        self.store = mobsms_state(settings)

    def send(self, request: SendRequest) -> SendReceipt:
        """Queue the SMS with mobsms: one recipient with /api/sms, several with /api/sms/bulk."""
        refuse_unsupported(request.options)
        check_option_values(request.options)
        numbers = tuple(to_e164(r, self.settings.default_region) for r in request.recipients)
        if len(request.message) > MAX_MESSAGE_CHARS:
            raise MessageTooLong(
                f"the message has {len(request.message)} characters; mobsms takes at most {MAX_MESSAGE_CHARS}"
            )
        body: dict[str, object] = {"message": request.message}
        if request.idempotency_key:
            # The caller's idempotency key travels as mobsms's own client reference (my_id).
            body["my_id"] = request.idempotency_key
        if len(numbers) == 1:
            path, body["recipient_number"] = "/api/sms", numbers[0]
        else:
            path, body["recipients"] = "/api/sms/bulk", _bulk_recipients(numbers, request.message)
        if request.options.sIdentifiant:
            body["device_id"] = request.options.sIdentifiant
        data = self._call("POST", path, request.credential, body)
        items = data if isinstance(data, list) else [data]
        ids = _message_ids(items, len(numbers))
        return SendReceipt(message_ids=ids, note=_note(items))

    # --- history, translated ---------------------------------------------------------------------------

    def sent_log(self, credential: Credential, guid: str | None = None) -> list[SentSms]:
        """Read outbound messages from `GET /api/sms` (one message when `guid` is given)."""
        if guid is not None:
            message = self._message(credential, guid)
            if message is None or message.get("direction", "outbound") != "outbound":
                return []
            return [_sent_sms(message)]
        return [_sent_sms(m) for m in self._pages(credential, "outbound")]

    def received(self, credential: Credential) -> list[ReceivedSms]:
        """Read inbound messages from `GET /api/sms`, with the bridge's read flags and aliases."""
        flags = self.store.received_flags(credential.account)
        received = []
        for message in self._pages(credential, "inbound"):
            guid = _guid(message)
            read, alias = flags.get(guid, (False, None))
            received.append(
                ReceivedSms(
                    id=int(message.get("id") or 0),
                    guid=guid,
                    number=str(message.get("sender_number") or ""),
                    message=str(message.get("message") or ""),
                    received_at=_unix(message.get("created_at")),
                    device=_text(message.get("device_id")),
                    alias=alias,
                    read=read,
                )
            )
        return received

    def mark_read(self, credential: Credential, guid: str) -> None:
        """Keep the read flag in the bridge's store: mobsms has none."""
        self.store.mark_read(credential.account, self._inbound_guid(credential, guid))

    def set_alias(self, credential: Credential, guid: str, alias: str) -> None:
        """Keep the alias in the bridge's store: mobsms has none."""
        self.store.set_alias(credential.account, self._inbound_guid(credential, guid), alias or None)

    def resend(self, credential: Credential, guid: str) -> ResendReceipt:
        """Send a failed message again, to the same number with the same text, and count the attempt.

        The attempt is claimed in the state store before anything is read or sent, as an idempotency
        key is: of two resends at once, one sends and the other answers 409 `resend_in_flight`. A
        claim whose call may have sent (no answer came) is kept until its deadline, so that an
        immediate repeat cannot send a second copy; one that provably sent nothing is released.
        """
        message = self._message(credential, guid)
        if message is None or message.get("direction", "outbound") != "outbound":
            raise UnknownMessage(f"no sent message has the guid {guid!r}")
        # Two upstream calls (the latest copy's status, the send) and a margin.
        hold = 2 * (self.settings.connect_timeout + self.settings.read_timeout) + 5
        if not self.store.claim_resend(credential.account, guid, hold):
            raise ResendInFlight(
                f"another resend of the message {guid} is under way; nothing was sent: ask the "
                "message's status (or resend again) in a moment"
            )
        keep_claim = False
        try:
            copies = self.store.resends(credential.account, guid)
            latest = self._message(credential, copies[-1]) if copies else message
            status = str((latest or {}).get("status", "unknown"))
            if status != "failed":
                raise NotResendable(
                    f"the message {guid} is not in an error state ({status}); it is not resent"
                )
            body = {
                "message": message.get("message", ""),
                "recipient_number": message.get("recipient_number"),
            }
            try:
                data = self._call("POST", "/api/sms", credential, body)
            except BridgeError as error:
                keep_claim = not error.nothing_sent
                raise
            keep_claim = True  # until the copy is recorded, which ends the claim
            [new_id] = _message_ids([data], 1)
            try:
                attempt = self.store.add_resend(credential.account, guid, new_id)
            except StorageUnavailable as error:
                # mobsms took the copy: its caller hears so. The claim stays until its deadline.
                log.error("a resend was accepted by mobsms but could not be recorded (%s)", error.trouble)
                attempt = len(copies) + 1
            return ResendReceipt(attempt=attempt, message_id=new_id)
        finally:
            if not keep_claim:
                # Never in place of the error being raised: a claim left behind only waits out its hold.
                with contextlib.suppress(StorageUnavailable):
                    self.store.release_resend(credential.account, guid)

    def delete_sent(self, credential: Credential, guids: list[str]) -> int:
        """Delete each message with `DELETE /api/sms/{id}`; count those mobsms deleted."""
        deleted = 0
        for guid in guids:
            if (
                self._call("DELETE", f"/api/sms/{quote(guid, safe='')}", credential, missing_ok=True)
                is not None
            ):
                deleted += 1
        return deleted

    def devices(self, credential: Credential) -> list[Device]:
        """Read the phones from `GET /api/devices`."""
        data = self._call("GET", "/api/devices", credential)
        if not isinstance(data, list):
            raise BackendBadAnswer("mobsms answered /api/devices without a list of devices")
        return [
            Device(
                # Messages name their phone by this number (device_id), so the dialect's sid is it too.
                sid=_text(d.get("id") or d.get("device_id")),
                label=_text(d.get("device_name")),
                phone_number=_text(d.get("phone_number")),
                active=bool(d.get("is_active", True)),
            )
            for d in data
            if isinstance(d, dict)
        ]

    # --- its webhooks ---------------------------------------------------------------------------------

    @classmethod
    def webhook_event(cls, document: dict, headers: Headers) -> WebhookEvent | None:
        """Map mobsms's {event, data, timestamp} to an event (mobsms gives no event id: one is derived)."""
        data: dict = document["data"] if isinstance(document.get("data"), dict) else document
        kind = str(document.get("event") or document.get("type") or "")
        guid = str(data.get("message_id") or data.get("id") or "")
        if kind in ("incoming", "inbound", "sms.received") or data.get("direction") == "inbound":
            return WebhookEvent(
                "sms.received",
                {
                    "guid": guid,
                    "from": str(data.get("sender_number") or ""),
                    "message": str(data.get("message") or ""),
                    "received_at": unix_seconds(data.get("created_at")) or 0,
                    "alias": None,
                    "device_id": str(data.get("device_id") or ""),
                },
            )
        status = str(data.get("status") or "")
        if status in ("sent", "delivered"):
            return WebhookEvent(
                "sms.sent", {"guid": guid, "to": str(data.get("recipient_number") or ""), "status": status}
            )
        if status in ("failed", "cancelled"):
            return WebhookEvent(
                "sms.failed",
                {
                    "guid": guid,
                    "to": str(data.get("recipient_number") or ""),
                    "status": status,
                    "error": str(data.get("error_message") or status),
                },
            )
        return None

    def register_webhooks(self, credential: Credential, url: str) -> int:
        """Point the account's incoming and status webhooks at `url` (PUT /api/webhooks)."""
        answer = self.http.request(
            "PUT",
            self.base_url + "/api/webhooks",
            json={"webhook_url_incoming": url, "webhook_url_status": url},
            headers={"Authorization": f"Bearer {credential.secret}", "Accept": "application/json"},
        )
        return answer.status_code

    def cannot(self, what: str) -> UnsupportedByBackend:
        """Say what mobsms lacks, and that the rest of the dialect still works."""
        return UnsupportedByBackend(
            f"the mobsms backend does not support {what}: mobsms's API offers nothing to translate it to"
        )

    # --- mobsms's HTTP API ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        credential: Credential,
        body: dict | None = None,
        params: dict | None = None,
        *,
        missing_ok: bool = False,
    ) -> object:
        """Call mobsms; return `data` of a success, None for a 404 when `missing_ok`, else raise."""
        if any(segment in (".", "..") for segment in path.split("/")):  # an id of ".." would leave /api/sms
            raise InvalidParameter(f"{path.rpartition('/')[2]!r} is not a message id")
        response = self.http.request(
            method,
            self.base_url + path,
            params=params,
            data=None if body is None else json.dumps(body, ensure_ascii=False).encode(),
            headers={
                "Authorization": f"Bearer {credential.secret}",
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
            },
        )
        if missing_ok and response.status_code == 404:
            return None
        return _success_data(response, allow_empty=method == "DELETE")

    def _message(self, credential: Credential, guid: str) -> dict | None:
        data = self._call("GET", f"/api/sms/{quote(guid, safe='')}", credential, missing_ok=True)
        if data is not None and not isinstance(data, dict):
            raise BackendBadAnswer("mobsms answered /api/sms/{id} without a message")
        return data

    def _inbound_guid(self, credential: Credential, guid: str) -> str:
        """Return the guid getsms shows for a received message named by its guid or its number id."""
        message = self._message(credential, guid)
        if message is None or message.get("direction") != "inbound":
            raise UnknownMessage(f"no received SMS has the guid {guid!r}")
        return _guid(message)

    def _pages(self, credential: Credential, direction: str) -> list[dict]:
        """Follow `GET /api/sms?direction=...` pages, newest first, up to SMSBRIDGE_MOBSMS_MAX_PAGES."""
        messages: list[dict] = []
        for page in range(1, self.settings.mobsms_max_pages + 1):
            data = self._call("GET", "/api/sms", credential, params={"direction": direction, "page": page})
            rows = data.get("data") if isinstance(data, dict) else None
            if not isinstance(data, dict) or not isinstance(rows, list):
                raise BackendBadAnswer("mobsms answered /api/sms without a page of messages")
            messages += [row for row in rows if isinstance(row, dict)]
            last = data.get("last_page")
            if (
                not rows
                or (isinstance(last, int) and page >= last)
                or len(messages) >= _int(data.get("total"))
            ):
                break
        return messages


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


def _bulk_recipients(numbers: tuple[str, ...], message: str) -> list[object]:
    # mobsms replaces {name} in a bulk message with each recipient's name; naming every recipient
    # "{name}" keeps a literal "{name}" in the caller's text as it was written.
    if "{name}" in message:
        return [{"number": n, "name": "{name}"} for n in numbers]
    return list(numbers)


def _success_data(response: Answer, *, allow_empty: bool = False) -> object:
    """Return `data` from a successful answer, or raise the error the answer stands for."""
    try:
        document = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past what Python reads
        document = None
    said = document.get("message") if isinstance(document, dict) else None
    if 200 <= response.status_code < 300:
        if document is None:
            raise BackendBadJson(
                f"mobsms answered HTTP {response.status_code} with a body that is not JSON, or is cut "
                "short; the message may have been sent: check before sending it again"
            )
        if isinstance(document, dict) and document.get("success") is True:
            data = document.get("data")
            if isinstance(data, (dict, list)) and data:
                return data
            if allow_empty:
                return document
        raise BackendBadAnswer(
            f"mobsms answered HTTP {response.status_code} with JSON of an unexpected shape (no "
            "{success, data}); the message may have been sent: check before sending it again"
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
        return BackendFailed(
            f"mobsms answered with a server error, HTTP {status}; the message may have been sent: "
            "check before sending it again"
        )
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
            raise BackendBadAnswer(
                "mobsms answered without an id for a message; the message may have been sent: "
                "check before sending it again"
            )
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


def _sent_sms(message: dict) -> SentSms:
    """Map a mobsms outbound message to the sent log's vocabulary."""
    status = str(message.get("status", "pending"))
    failed = status in ("failed", "cancelled")
    return SentSms(
        guid=_guid(message),
        recipient=_text(message.get("recipient_number")),
        message=_text(message.get("message")),
        queued_at=_unix(message.get("created_at")),
        status="sent" if status in ("sent", "delivered") else "failed" if failed else "pending",
        sent_at=_unix(message.get("sent_at")) if message.get("sent_at") else None,
        device=_text(message.get("device_id")),
        error_api="cancelled" if status == "cancelled" else "",
        error_mobile=_text(message.get("error_message")) or "failed" if status == "failed" else "",
    )


def _guid(message: dict) -> str:
    """Return the id the dialect shows for a mobsms message: its message_id UUID, else its number."""
    return str(message.get("message_id") or message.get("id"))


def _unix(value: object) -> int:
    """Return an ISO 8601 time of mobsms's (such as 2026-06-08T10:00:00.000000Z) as UNIX seconds."""
    if not value:
        return 0
    seconds = unix_seconds(value)
    if seconds is None:
        raise BackendBadAnswer(f"mobsms gave a time the bridge cannot read: {str(value)[:40]!r}")
    return seconds


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 1 << 30
