"""Where upstreams post events, turned into the client's webhook events.

    POST /webhooks/mobsms/<client>?key=<tag>        mobsms's incoming-SMS and delivery-status webhooks,
                                                    and messages' callback_url
    POST /webhooks/smsmobileapi/<client>?key=<tag>  the vendor's webhooks (V1, or V2 verified when a
                                                    vendor secret is configured), relayed

`<tag>` is an itsdangerous signature of the source and the client's name under the bridge's token
secrets (under a salt of its own: never a token's): only whoever was given the URL can post to it.
It travels in the query string, which neither the request log nor gunicorn's access log writes down.
In passthrough mode the client is `default`. Each event gets a stable id (the vendor's own V2 event
id; for mobsms, one derived from the message and its state), so an upstream that posts the same event
twice does not make the client get it twice.
An event that cannot be stored now (the event store locked past its wait, a full data disk) is answered
503 `storage_unavailable` with `Retry-After: 1`, never acknowledged: the upstream posts it again, and
its stable id keeps a repeat from reaching the client twice.
`python -m app.webhook_sources urls CLIENT` prints a client's URLs; `register-mobsms CLIENT` sets them
with mobsms (PUT /api/webhooks).
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
import uuid

from flask import Blueprint, Flask, Response, jsonify, request

from app.errors import CredentialRefused, InvalidParameter
from app.fronts.dialect import parse_json
from app.runtime import Runtime, runtime
from app.vocabulary import unix_seconds

bp = Blueprint("webhook_sources", __name__, url_prefix="/webhooks")

#: a V2 timestamp further off than this is refused, as the vendor's receivers do
MAX_SKEW_SECONDS = 300


def source_urls(state: Runtime, client: str) -> dict[str, str]:
    """Return the URLs an upstream posts `client`'s events to."""
    base = state.settings.public_url.rstrip("/") + "/webhooks"
    return {
        source: f"{base}/{source}/{client}?key={state.tokens.label(f'{source}:{client}')}"
        for source in ("mobsms", "smsmobileapi")
    }


#: the longest `key` a source URL can carry (the bridge's own are about 30 characters)
MAX_TAG_LENGTH = 200


def signed_source() -> tuple[str, str] | None:
    """Return (source, client) of the source URL this request was posted to, if the bridge gave it out.

    The limiter counts a source's posts under the pair (one count per source and client), and the view
    refuses any other URL.
    """
    args = request.view_args or {}
    source, client = str(args.get("source", "")), str(args.get("client", ""))
    tag = request.args.get("key", "")
    if source not in ("mobsms", "smsmobileapi") or not _printable_ascii(tag, MAX_TAG_LENGTH):
        return None
    state = runtime()
    known = client == "default" if not state.access.managed else state.access.client_named(client) is not None
    if not known or not state.tokens.verify_label(f"{source}:{client}", tag):
        return None
    return source, client


def _printable_ascii(value: str, longest: int) -> bool:
    return value.isascii() and value.isprintable() and 0 < len(value) <= longest


@bp.post("/<source>/<client>")
def receive(source: str, client: str) -> Response:
    """Store the event an upstream posted, then acknowledge it."""
    state = runtime()
    if signed_source() != (source, client):
        raise CredentialRefused("this webhook URL is not one the bridge gave out")
    raw = request.get_data()
    if source == "smsmobileapi":
        _verify_vendor_signature(state, client, raw)
    try:
        document = parse_json(raw)
    except ValueError:
        raise InvalidParameter("the webhook body is not JSON, or is nested too deep") from None
    if not isinstance(document, dict):
        raise InvalidParameter("the webhook body is not a JSON object")
    event = _from_mobsms(document) if source == "mobsms" else _from_vendor(document)
    if event is None:
        return jsonify(success=True, stored=False)
    event_type, data = event
    if source == "smsmobileapi":
        given = request.headers.get("X-SMSMobileAPI-Event-ID") or document.get("id") or ""
        stable = _uuid(str(given)) or _derived_id(source, client, event_type, data)
    else:
        stable = _derived_id(source, client, event_type, data)
    event_id = state.emit(client, event_type, data, event_id=stable)
    return jsonify(success=True, stored=event_id is not None, id=event_id)


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _derived_id(source: str, client: str, event_type: str, data: dict) -> str:
    """Return the same id for the same event posted again (same message, same state)."""
    name = f"{source}:{client}:{event_type}:{data.get('guid')}:{data.get('status', '')}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _from_mobsms(document: dict) -> tuple[str, dict] | None:
    """Map mobsms's {event, data, timestamp} to an event type and data."""
    data = document.get("data") if isinstance(document.get("data"), dict) else document
    kind = str(document.get("event") or document.get("type") or "")
    guid = str(data.get("message_id") or data.get("id") or "")
    if kind in ("incoming", "inbound", "sms.received") or data.get("direction") == "inbound":
        return "sms.received", {
            "guid": guid,
            "from": str(data.get("sender_number") or ""),
            "message": str(data.get("message") or ""),
            "received_at": _unix(data.get("created_at")),
            "alias": None,
            "device_id": str(data.get("device_id") or ""),
        }
    status = str(data.get("status") or "")
    if status in ("sent", "delivered"):
        return "sms.sent", {"guid": guid, "to": str(data.get("recipient_number") or ""), "status": status}
    if status in ("failed", "cancelled"):
        return "sms.failed", {
            "guid": guid,
            "to": str(data.get("recipient_number") or ""),
            "status": status,
            "error": str(data.get("error_message") or status),
        }
    return None


def _from_vendor(document: dict) -> tuple[str, dict] | None:
    """Map the vendor's V2 envelope, or its V1 payload, to an event type and data."""
    if "type" in document and isinstance(document.get("data"), dict):
        data = dict(document["data"])
        if isinstance(data.get("received_at"), str):
            data["received_at"] = _unix(data["received_at"]) or int(time.time())
        return str(document["type"]), data
    if "number" in document and "message" in document:
        when = f"{document.get('date', '')} {document.get('hour', '')}".strip()
        return "sms.received", {
            "guid": str(document.get("guid") or ""),
            "from": str(document["number"]),
            "message": str(document["message"]),
            "received_at": _unix(when) or int(time.time()),
            "alias": None,
            "device_id": "",
        }
    return None


def _verify_vendor_signature(state: Runtime, client: str, raw: bytes) -> None:
    entry = state.access.client_named(client) if state.access.managed else None
    secret = (entry.vendor_webhook_secret if entry else "") or state.settings.vendor_webhook_secret or ""
    if not secret:
        return
    timestamp = request.headers.get("X-SMSMobileAPI-Timestamp", "")
    signature = request.headers.get("X-SMSMobileAPI-Signature", "")
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    fresh = (
        timestamp.isascii() and timestamp.isdigit() and abs(time.time() - int(timestamp)) <= MAX_SKEW_SECONDS
    )
    # As bytes: compare_digest refuses str with a character past ASCII (a header's Latin-1 byte).
    if not fresh or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise CredentialRefused("the vendor webhook's signature or timestamp does not verify")


def _unix(value: object) -> int:
    return unix_seconds(value) or 0


def register_mobsms(state: Runtime, client: str) -> dict:
    """Point mobsms's webhooks (PUT /api/webhooks) for `client`'s mobsms key at the bridge."""
    if state.access.managed:
        entry = state.access.client_named(client)
        if entry is None or entry.backend != "mobsms":
            raise ValueError(f"{client} is not a mobsms client of this bridge")
        key = entry.upstream_key
    else:
        raise ValueError("in passthrough mode, give mobsms the URLs from `urls default` yourself")
    url = source_urls(state, client)["mobsms"]
    backend = state.backend_for("mobsms")
    answer = backend.http.request(
        "PUT",
        backend.base_url + "/api/webhooks",
        json={"webhook_url_incoming": url, "webhook_url_status": url},
        headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
    )
    return {"status": answer.status_code, "url": url}


def init_app(app: Flask) -> None:
    """Serve the source endpoints."""
    app.register_blueprint(bp)


def main(argv: list[str]) -> int:
    """Print a client's source URLs, or register them with mobsms."""
    from app import create_app

    if len(argv) != 2 or argv[0] not in ("urls", "register-mobsms"):
        print("usage: python -m app.webhook_sources urls|register-mobsms CLIENT", file=sys.stderr)
        return 2
    app = create_app()
    state = app.extensions["smsbridge"]
    if argv[0] == "urls":
        for source, url in source_urls(state, argv[1]).items():
            print(f"{source}: {url}")
        return 0
    print(register_mobsms(state, argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
