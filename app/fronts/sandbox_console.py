"""The sandbox's console: make happen what a phone would, so integrations can be tested end to end.

Served only with the sandbox backend, under /sandbox/, with the account's own API key:
    POST /sandbox/inbound   number, message [, sIdentifiantPhone, channel=sms|whatsapp, message_type, contact]
    POST /sandbox/fail      guid [, error, where=mobile|api]
    POST /sandbox/devices   sid [, label, phone_number]
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from app.errors import NotAllowed
from app.fronts.smsmobileapi.dialect import require
from app.fronts.smsmobileapi.rest import parameters, principal
from app.service import Principal, runtime

bp = Blueprint("sandbox_console", __name__, url_prefix="/sandbox")


def _sandbox() -> Principal:
    """Return the caller, if its backend simulates (the sandbox): only such callers may use the console."""
    caller = principal()
    if not caller.backend.simulates:
        raise NotAllowed(
            f"the sandbox console is for sandbox clients; this key's backend is {caller.backend.name}"
        )
    return caller


@bp.post("/inbound")
def inbound() -> Response:
    """Make the account's phone receive an SMS or a WhatsApp message."""
    params, caller = parameters(), _sandbox()
    received = caller.backend.simulate_inbound(
        caller.upstream,
        require("number", params.get("number", "").strip()),
        require("message", params.get("message")),
        device=params.get("sIdentifiantPhone", "").strip(),
        channel=params.get("channel", "sms").strip() or "sms",
        kind=params.get("message_type", "text").strip() or "text",
        contact=params.get("contact", ""),
    )
    runtime().emit(
        caller.client,
        "whatsapp.received"
        if received.kind and params.get("channel", "sms").strip() == "whatsapp"
        else "sms.received",
        {
            "guid": received.guid,
            "from": received.number,
            "message": received.message,
            "received_at": received.received_at,
            "alias": received.alias,
            "device_id": received.device,
        },
    )
    return jsonify(result={"error": 0, "id": received.id, "guid": received.guid})


@bp.post("/fail")
def fail() -> Response:
    """Make a sent message fail, so that resend and error_mobile=1 can be exercised."""
    params, caller = parameters(), _sandbox()
    guid = require("guid", params.get("guid", "").strip())
    sms = caller.backend.simulate_failure(
        caller.upstream,
        guid,
        params.get("error", "") or "failed",
        params.get("where", "mobile").strip() or "mobile",
    )
    runtime().emit(
        caller.client,
        "sms.failed",
        {
            "guid": sms.guid,
            "to": sms.recipient,
            "status": "failed",
            "error": sms.error_mobile or sms.error_api,
        },
    )
    return jsonify(result={"error": 0, "guid": sms.guid, "status": sms.status})


@bp.post("/devices")
def add_device() -> Response:
    """Connect another phone to the account."""
    params, caller = parameters(), _sandbox()
    device = caller.backend.add_device(
        caller.upstream,
        require("sid", params.get("sid", "").strip()),
        params.get("label", ""),
        params.get("phone_number", ""),
    )
    return jsonify(result={"error": 0, "sid": device.sid, "label": device.label})


def init_app(app: Flask) -> None:
    """Serve the console."""
    app.register_blueprint(bp)
