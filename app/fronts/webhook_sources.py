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
`smsbridge webhooks urls CLIENT` prints a client's URLs; `smsbridge webhooks register-mobsms CLIENT` sets them
with mobsms (PUT /api/webhooks).
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Flask, Response, jsonify, request

from app.errors import CredentialRefused, InvalidParameter
from app.fronts.smsmobileapi.dialect import parse_json
from app.service import Runtime, backend_class, current, runtime, webhook_source_names
from app.vocabulary import Credential, CredentialSource

bp = Blueprint("webhook_sources", __name__, url_prefix="/webhooks")


def source_urls(state: Runtime, client: str) -> dict[str, str]:
    """Return the URLs an upstream posts `client`'s events to (one per backend that receives webhooks)."""
    base = state.settings.public_url.rstrip("/") + "/webhooks"
    return {
        source: f"{base}/{source}/{client}?key={state.tokens.label(f'{source}:{client}')}"
        for source in webhook_source_names()
    }


#: the longest `key` a source URL can carry (the bridge's own are about 30 characters)
MAX_TAG_LENGTH = 200


def signed_source() -> tuple[str, str] | None:
    """Return (source, client) of the source URL this request was posted to, if the bridge gave it out.

    The limiter counts a source's posts under the pair (one count per source and client), and the view
    refuses any other URL: checked once per request (an HMAC and a client lookup), for both.
    """
    ctx = current()
    if ctx.signed_source is None:
        ctx.signed_source = _signed_source() or ()
    return ctx.signed_source or None


def _signed_source() -> tuple[str, str] | None:
    args = request.view_args or {}
    source, client = str(args.get("source", "")), str(args.get("client", ""))
    tag = request.args.get("key", "")
    if source not in webhook_source_names() or not _printable_ascii(tag, MAX_TAG_LENGTH):
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
    """Store the event an upstream posted, then acknowledge it.

    The backend named `source` reads the post (`verify_webhook`, `webhook_event`); this view checks the
    URL, reads the body as JSON, stores the event under a stable id and answers.
    """
    state = runtime()
    if signed_source() != (source, client):
        raise CredentialRefused("this webhook URL is not one the bridge gave out")
    upstream = backend_class(source)
    raw = request.get_data()
    upstream.verify_webhook(raw, request.headers, _webhook_secret(state, client))
    try:
        document = parse_json(raw)
    except ValueError:
        raise InvalidParameter("the webhook body is not JSON, or is nested too deep") from None
    if not isinstance(document, dict):
        raise InvalidParameter("the webhook body is not a JSON object")
    event = upstream.webhook_event(document, request.headers)
    if event is None:
        return jsonify(success=True, stored=False)
    stable = event.id or _derived_id(source, client, event.type, event.data)
    event_id = state.emit(client, event.type, event.data, event_id=stable)
    return jsonify(success=True, stored=event_id is not None, id=event_id)


def _webhook_secret(state: Runtime, client: str) -> str:
    """Return the secret the client's upstream signs webhooks with: its own, else the bridge's, or ""."""
    entry = state.access.client_named(client) if state.access.managed else None
    return (entry.vendor_webhook_secret if entry else "") or state.settings.vendor_webhook_secret or ""


def _derived_id(source: str, client: str, event_type: str, data: dict) -> str:
    """Return the same id for the same event posted again (same message, same state)."""
    name = f"{source}:{client}:{event_type}:{data.get('guid')}:{data.get('status', '')}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


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
    credential = Credential(key, CredentialSource.BEARER, operator_held=True)
    return {"status": state.backend_for("mobsms").register_webhooks(credential, url), "url": url}


def init_app(app: Flask) -> None:
    """Serve the source endpoints."""
    app.register_blueprint(bp)
