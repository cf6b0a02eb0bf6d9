"""The SMSMobileAPI REST endpoints beyond sending: logs, received SMS, conversations, phones, WhatsApp.

Each view reads the dialect's parameters, asks the backend in the internal vocabulary, applies the
dialect's filters (app/fronts/filters.py) and answers in the shape the vendor's docs show. A backend
that passes the vendor's API through does not use these views: every call goes to the vendor as made.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, g, jsonify

from app.errors import MissingParameter
from app.fronts import filters
from app.fronts.conversations import conversations
from app.fronts.dialect import require
from app.fronts.records import (
    device_entry,
    from_mobile_entry,
    local,
    received_entry,
    sent_entry,
    whatsapp_entry,
)
from app.fronts.rest import credential, parameters
from app.runtime import runtime

bp = Blueprint("rest_endpoints", __name__)


def endpoint(path: str):
    """Route `path` with and without its trailing slash, for GET and POST."""
    return bp.route(path, methods=["GET", "POST"], strict_slashes=False)


# --- sent SMS --------------------------------------------------------------------------------------------


@endpoint("/resend/")
def resend() -> Response:
    """Resend a message that is in an error state."""
    params, key = parameters(), credential()
    receipt = runtime().backend.resend(key, require("guid", params.get("guid")))
    return jsonify(
        result={
            "error": "0",
            "sms": "resent with successfully",
            "attempt": receipt.attempt,
            "id": receipt.message_id,
        }
    )


@endpoint("/log/sent/sms/")
def log_sent_sms() -> Response:
    """List the SMS sent through the API."""
    params, key = parameters(), credential()
    entries = runtime().backend.sent_log(key, params.get("guid_message", "").strip() or None)
    return jsonify(result={"error": "0", "sms": [sent_entry(s) for s in filters.sent_log(entries, params)]})


@endpoint("/log/sent/frommobile/")
def log_sent_from_mobile() -> Response:
    """List the SMS the phones sent (the last 7 days)."""
    params, key = parameters(), credential()
    rows, settings = filters.from_mobile(runtime().backend.sent_from_mobile(key), params)
    return jsonify(
        result={"error": "0", "count": len(rows), **settings, "sms": [from_mobile_entry(s) for s in rows]}
    )


@endpoint("/deletesms/")
def deletesms() -> Response:
    """Delete one message (guid_message), or a day's or a range's (date_start, date_end)."""
    params, key = parameters(), credential()
    choice = filters.deletion(params)
    backend = runtime().backend
    guids = filters.to_delete(backend.sent_log(key, choice[0]), choice)
    return jsonify(result={"error": None, "count_delete": backend.delete_sent(key, guids) if guids else 0})


# --- received SMS ----------------------------------------------------------------------------------------


@endpoint("/getsms/")
def getsms() -> Response:
    """List the SMS the phones received."""
    params, key = parameters(), credential()
    entries = filters.received(runtime().backend.received(key), params)
    return jsonify(result={"error": "", "sms": [received_entry(s, key.fingerprint) for s in entries]})


@endpoint("/getsms/set-read/")
def getsms_set_read() -> Response:
    """Mark a received SMS as read, in the API's view only."""
    params, key = parameters(), credential()
    guid = require("guid_message", params.get("guid_message"))
    runtime().backend.mark_read(key, guid)
    return jsonify(result={"error": "0", "guid_message": guid, "read": "1"})


@endpoint("/getsms/update/")
def getsms_update() -> Response:
    """Set, or with an empty value clear, the alias of a received SMS."""
    params, key = parameters(), credential()
    guid = require("guid", params.get("guid"))
    if "alias" not in params:
        raise MissingParameter("alias is missing: give alias= (empty clears it)")
    runtime().backend.set_alias(key, guid, params["alias"])
    return jsonify(result={"error": "0", "guid": guid, "alias": params["alias"] or None})


@endpoint("/conversation/sms/list/")
def conversation_list() -> Response:
    """List conversations: received and sent SMS grouped by number."""
    g.error_style = "success"
    params, key = parameters(), credential()
    backend = runtime().backend
    return jsonify(conversations(lambda: backend.sent_log(key), lambda: backend.received(key), params))


# --- phones ----------------------------------------------------------------------------------------------


@endpoint("/gateway/mobile/list/")
def mobile_list() -> Response:
    """List the connected phones."""
    params, key = parameters(), credential()
    devices = filters.devices(runtime().backend.devices(key), params)
    return jsonify(result={"error": "0", "mobiles": [device_entry(d) for d in devices]})


@endpoint("/gateway/mobile/update/")
def mobile_update() -> Response:
    """Change a phone's label (required, may be empty) and phone number (optional)."""
    params, key = parameters(), credential()
    sid = require("sid", params.get("sid"))
    if "label" not in params:
        raise MissingParameter("label is missing: give label= (it may be empty)")
    device = runtime().backend.update_device(key, sid, params["label"], params.get("phone_number") or None)
    return jsonify(result={"error": "0", **device_entry(device)})


@endpoint("/gateway/mobile/delete/")
def mobile_delete() -> Response:
    """Remove a phone and its history."""
    params, key = parameters(), credential()
    sid = require("sid", params.get("sid"))
    runtime().backend.delete_device(key, sid)
    return jsonify(result={"error": "0", "sid": sid, "deleted": "1"})


# --- WhatsApp --------------------------------------------------------------------------------------------


@endpoint("/resendwa/")
def resendwa() -> Response:
    """Resend a WhatsApp message that is in an error state."""
    params, key = parameters(), credential()
    receipt = runtime().backend.resend_whatsapp(key, require("guid", params.get("guid")))
    return jsonify(result={"error": "0", "whatsapp": "resent with successfully", "attempt": receipt.attempt})


@endpoint("/getwa/synchronisation/")
def getwa_synchronisation() -> Response:
    """Open a synchronisation, which /getwa/ needs before it can read messages."""
    key = credential()
    expires = runtime().backend.whatsapp_sync(key)
    return jsonify(
        error="0",
        messages="synchronized",
        expire_at=f"{local(expires):%Y-%m-%d %H:%M:%S}",
        expire_at_unix=str(expires),
    )


@endpoint("/getwa/")
def getwa() -> Response:
    """List the WhatsApp messages received (after a synchronisation): a JSON array."""
    params, key = parameters(), credential()
    entries = filters.whatsapp(runtime().backend.whatsapp_received(key), params)
    return jsonify([whatsapp_entry(s) for s in entries])


@endpoint("/getwa/active/")
def getwa_active() -> Response:
    """Read (no statut), set (0, 1) or toggle (x) WhatsApp."""
    params, key = parameters(), credential()
    return jsonify(error="0", statut=runtime().backend.whatsapp_active(key, params.get("statut", "").strip()))


@endpoint("/whatsapp/checknumber/")
def whatsapp_checknumber() -> Response:
    """Say whether a number is on WhatsApp."""
    params, key = parameters(), credential()
    number = require("recipients", params.get("recipients", "").strip())
    found = runtime().backend.whatsapp_check(key, number)
    return jsonify(error="0", recipients=number, whatsapp="1" if found else "0", checked_at=int(time.time()))
