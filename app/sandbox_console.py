"""The sandbox's console: make happen what a phone would, so integrations can be tested end to end.

Served only with the sandbox backend, under /sandbox/, with the account's own API key:
    POST /sandbox/inbound   number, message [, sIdentifiantPhone, channel=sms|whatsapp, message_type, contact]
    POST /sandbox/fail      guid [, error, where=mobile|api]
    POST /sandbox/devices   sid [, label, phone_number]
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from app.backends.sandbox import SandboxBackend
from app.fronts.dialect import require
from app.fronts.rest import credential, parameters
from app.runtime import runtime

bp = Blueprint("sandbox_console", __name__, url_prefix="/sandbox")


def _sandbox() -> SandboxBackend:
    backend = runtime().backend
    assert isinstance(backend, SandboxBackend)
    return backend


@bp.post("/inbound")
def inbound() -> Response:
    """Make the account's phone receive an SMS or a WhatsApp message."""
    params, key = parameters(), credential()
    received = _sandbox().simulate_inbound(
        key,
        require("number", params.get("number", "").strip()),
        require("message", params.get("message")),
        device=params.get("sIdentifiantPhone", "").strip(),
        channel=params.get("channel", "sms").strip() or "sms",
        kind=params.get("message_type", "text").strip() or "text",
        contact=params.get("contact", ""),
    )
    return jsonify(result={"error": 0, "id": received.id, "guid": received.guid})


@bp.post("/fail")
def fail() -> Response:
    """Make a sent message fail, so that resend and error_mobile=1 can be exercised."""
    params, key = parameters(), credential()
    guid = require("guid", params.get("guid", "").strip())
    sms = _sandbox().simulate_failure(
        key, guid, params.get("error", "") or "failed", params.get("where", "mobile").strip() or "mobile"
    )
    return jsonify(result={"error": 0, "guid": sms.guid, "status": sms.status})


@bp.post("/devices")
def add_device() -> Response:
    """Connect another phone to the account."""
    params, key = parameters(), credential()
    device = _sandbox().add_device(
        key,
        require("sid", params.get("sid", "").strip()),
        params.get("label", ""),
        params.get("phone_number", ""),
    )
    return jsonify(result={"error": 0, "sid": device.sid, "label": device.label})


def init_app(app: Flask) -> None:
    """Serve the console."""
    app.register_blueprint(bp)
