"""The SMSMobileAPI REST endpoints beyond sending: logs, received SMS, conversations, phones, WhatsApp.

Each view reads the dialect's parameters, asks the backend in the internal vocabulary, applies the
dialect's filters (app/fronts/filters.py) and answers in the shape the vendor's docs show. A backend
that passes the vendor's API through does not use these views: every call goes to the vendor as made.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from flask import Blueprint, Response, jsonify

from app.fronts.smsmobileapi import filters
from app.fronts.smsmobileapi.conversations import conversations
from app.fronts.smsmobileapi.dialect import require, require_present
from app.fronts.smsmobileapi.records import (
    device_entry,
    from_mobile_entry,
    local,
    received_entry,
    sent_entry,
    whatsapp_entry,
)
from app.fronts.smsmobileapi.rest import http_call, parameters, passthrough_target, principal, verbatim
from app.service import Principal, current

bp = Blueprint("rest_endpoints", __name__)


View = Callable[[dict[str, str], Principal], Response]


def endpoint(path: str, *, error_style: str = "result") -> Callable[[View], View]:
    """Route `path` (with and without its trailing slash, GET and POST) to a view of (params, caller).

    A caller whose backend passes the vendor's API through never reaches the view: the call goes to
    the vendor as it was made.
    """

    def register(view: View) -> View:
        @functools.wraps(view)
        def serve() -> Response:
            current().error_style = error_style
            target = passthrough_target()
            if target is not None:
                backend, upstream = target
                return verbatim(backend.forward(http_call(), upstream))
            return view(parameters(), principal())

        bp.add_url_rule(path, view.__name__, serve, methods=["GET", "POST"], strict_slashes=False)
        return view

    return register


# --- sent SMS --------------------------------------------------------------------------------------------


@endpoint("/resend/")
def resend(params: dict[str, str], caller: Principal) -> Response:
    """Resend a message that is in an error state."""
    receipt = caller.backend.resend(caller.upstream, require("guid", params.get("guid")))
    return jsonify(
        result={
            "error": "0",
            "sms": "resent with successfully",
            "attempt": receipt.attempt,
            "id": receipt.message_id,
        }
    )


@endpoint("/log/sent/sms/")
def log_sent_sms(params: dict[str, str], caller: Principal) -> Response:
    """List the SMS sent through the API."""
    entries = caller.backend.sent_log(caller.upstream, params.get("guid_message", "").strip() or None)
    return jsonify(result={"error": "0", "sms": [sent_entry(s) for s in filters.sent_log(entries, params)]})


@endpoint("/log/sent/frommobile/")
def log_sent_from_mobile(params: dict[str, str], caller: Principal) -> Response:
    """List the SMS the phones sent (the last 7 days)."""
    rows, settings = filters.from_mobile(caller.backend.sent_from_mobile(caller.upstream), params)
    return jsonify(
        result={"error": "0", "count": len(rows), **settings, "sms": [from_mobile_entry(s) for s in rows]}
    )


@endpoint("/deletesms/")
def deletesms(params: dict[str, str], caller: Principal) -> Response:
    """Delete one message (guid_message), or a day's or a range's (date_start, date_end)."""
    choice = filters.deletion(params)
    backend, upstream = caller.backend, caller.upstream
    guids = filters.to_delete(backend.sent_log(upstream, choice[0]), choice)
    return jsonify(
        result={"error": None, "count_delete": backend.delete_sent(upstream, guids) if guids else 0}
    )


# --- received SMS ----------------------------------------------------------------------------------------


@endpoint("/getsms/")
def getsms(params: dict[str, str], caller: Principal) -> Response:
    """List the SMS the phones received."""
    entries = filters.received(caller.backend.received(caller.upstream), params)
    fingerprint = caller.upstream.fingerprint
    return jsonify(result={"error": "", "sms": [received_entry(s, fingerprint) for s in entries]})


@endpoint("/getsms/set-read/")
def getsms_set_read(params: dict[str, str], caller: Principal) -> Response:
    """Mark a received SMS as read, in the API's view only."""
    guid = require("guid_message", params.get("guid_message"))
    caller.backend.mark_read(caller.upstream, guid)
    return jsonify(result={"error": "0", "guid_message": guid, "read": "1"})


@endpoint("/getsms/update/")
def getsms_update(params: dict[str, str], caller: Principal) -> Response:
    """Set, or with an empty value clear, the alias of a received SMS."""
    guid = require("guid", params.get("guid"))
    alias = require_present(params, "alias", "empty clears it")
    caller.backend.set_alias(caller.upstream, guid, alias)
    return jsonify(result={"error": "0", "guid": guid, "alias": alias or None})


@endpoint("/conversation/sms/list/", error_style="success")
def conversation_list(params: dict[str, str], caller: Principal) -> Response:
    """List conversations: received and sent SMS grouped by number."""
    backend, upstream = caller.backend, caller.upstream
    return jsonify(
        conversations(
            lambda: backend.sent_log(upstream),
            lambda: backend.received(upstream),
            params,
            backend.settings.default_region,
        )
    )


# --- phones ----------------------------------------------------------------------------------------------


@endpoint("/gateway/mobile/list/")
def mobile_list(params: dict[str, str], caller: Principal) -> Response:
    """List the connected phones."""
    devices = filters.devices(caller.backend.devices(caller.upstream), params)
    return jsonify(result={"error": "0", "mobiles": [device_entry(d) for d in devices]})


@endpoint("/gateway/mobile/update/")
def mobile_update(params: dict[str, str], caller: Principal) -> Response:
    """Change a phone's label (required, may be empty) and phone number (optional)."""
    sid = require("sid", params.get("sid"))
    label = require_present(params, "label")
    device = caller.backend.update_device(caller.upstream, sid, label, params.get("phone_number") or None)
    return jsonify(result={"error": "0", **device_entry(device)})


@endpoint("/gateway/mobile/delete/")
def mobile_delete(params: dict[str, str], caller: Principal) -> Response:
    """Remove a phone and its history."""
    sid = require("sid", params.get("sid"))
    caller.backend.delete_device(caller.upstream, sid)
    return jsonify(result={"error": "0", "sid": sid, "deleted": "1"})


# --- WhatsApp --------------------------------------------------------------------------------------------


@endpoint("/resendwa/")
def resendwa(params: dict[str, str], caller: Principal) -> Response:
    """Resend a WhatsApp message that is in an error state."""
    receipt = caller.backend.resend_whatsapp(caller.upstream, require("guid", params.get("guid")))
    return jsonify(result={"error": "0", "whatsapp": "resent with successfully", "attempt": receipt.attempt})


@endpoint("/getwa/synchronisation/")
def getwa_synchronisation(params: dict[str, str], caller: Principal) -> Response:
    """Open a synchronisation, which /getwa/ needs before it can read messages."""
    expires = caller.backend.whatsapp_sync(caller.upstream)
    return jsonify(
        error="0",
        messages="synchronized",
        expire_at=f"{local(expires):%Y-%m-%d %H:%M:%S}",
        expire_at_unix=str(expires),
    )


@endpoint("/getwa/")
def getwa(params: dict[str, str], caller: Principal) -> Response:
    """List the WhatsApp messages received (after a synchronisation).

    An object, as the vendor's OpenAPI says (`{"error": "0", "count": N, "messages": [...]}`), beside the
    other /getwa/ answers' top-level `error`; the entries are shaped as in the vendor's WhatsApp docs.
    """
    entries = filters.whatsapp(caller.backend.whatsapp_received(caller.upstream), params)
    return jsonify(error="0", count=len(entries), messages=[whatsapp_entry(s) for s in entries])


@endpoint("/getwa/active/")
def getwa_active(params: dict[str, str], caller: Principal) -> Response:
    """Read (no statut), set (0, 1) or toggle (x) WhatsApp."""
    statut = caller.backend.whatsapp_active(caller.upstream, params.get("statut", "").strip())
    return jsonify(error="0", statut=statut)


@endpoint("/whatsapp/checknumber/")
def whatsapp_checknumber(params: dict[str, str], caller: Principal) -> Response:
    """Say whether a number is on WhatsApp."""
    number = require("recipients", params.get("recipients", "").strip())
    found = caller.backend.whatsapp_check(caller.upstream, number)
    return jsonify(error="0", recipients=number, whatsapp="1" if found else "0", checked_at=int(time.time()))
