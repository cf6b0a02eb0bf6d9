"""The sandbox's console: make happen what a phone would, so integrations can be tested end to end.

Served only with the sandbox backend, under /sandbox/, with the account's own API key:
    POST /sandbox/inbound   number, message [, sIdentifiantPhone, channel=sms|whatsapp, message_type, contact]
    POST /sandbox/fail      guid [, error, where=mobile|api]
    POST /sandbox/devices   sid [, label, phone_number]
    POST /sandbox/deliver   guid                      (a sent message delivered: webhook sms.sent)
    POST /sandbox/calls     direction=missed|incoming|outgoing, number [, name, duration, sIdentifiantPhone]
    POST /sandbox/email     sender_email, mail_body [, sender_name, recipient_email, mail_subject, apikeybox]
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, jsonify

from app.errors import InvalidParameter, NotAllowed
from app.fronts.smsmobileapi.dialect import require
from app.fronts.smsmobileapi.rest import parameters, principal
from app.service import Principal, phone_events, runtime
from app.vocabulary import EmailDraft

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
    phone_events.received(runtime(), caller.client, received, params.get("channel", "sms").strip())
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
    phone_events.failed(runtime(), caller.client, sms)
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


@bp.post("/deliver")
def deliver() -> Response:
    """Make a sent message delivered (its delivery report came), emitting the vendor's `sms.sent`."""
    params, caller = parameters(), _sandbox()
    sms = caller.backend.simulate_delivery(caller.upstream, require("guid", params.get("guid", "").strip()))
    phone_events.delivered(runtime(), caller.client, sms)
    return jsonify(result={"error": 0, "guid": sms.guid, "status": sms.status})


@bp.post("/calls")
def call() -> Response:
    """Make a phone of the account log a missed, incoming or outgoing call (emits call.<direction>)."""
    params, caller = parameters(), _sandbox()
    direction = require("direction", params.get("direction", "").strip().lower())
    duration = params.get("duration", "").strip() or "0"
    if not duration.isdigit() or len(duration) > 6:
        raise InvalidParameter("duration must be a whole number of seconds")
    logged = caller.backend.simulate_call(
        caller.upstream,
        direction,
        require("number", params.get("number", "").strip()),
        name=params.get("name", "").strip() or None,
        duration=int(duration),
        device=params.get("sIdentifiantPhone", "").strip(),
    )
    runtime().emit(
        caller.client,
        f"call.{logged.direction}",
        {
            "guid": logged.guid,
            "number": logged.number,
            "name": logged.name,
            "duration_seconds": logged.duration,
            "device_id": logged.device,
            "call_at": f"{datetime.fromtimestamp(logged.at, UTC):%Y-%m-%d %H:%M:%S}",
        },
    )
    return jsonify(result={"error": 0, "id": logged.id, "guid": logged.guid, "type": logged.direction})


@bp.post("/email")
def email() -> Response:
    """Make a mailbox of the account (apikeybox; empty: the sandbox's own) receive an e-mail in its INBOX."""
    params, caller = parameters(), _sandbox()
    received = caller.backend.simulate_email(
        caller.upstream,
        EmailDraft(
            sender_name=params.get("sender_name", "").strip(),
            sender_email=require("sender_email", params.get("sender_email", "").strip()),
            recipient_email=params.get("recipient_email", "").strip(),
            subject=params.get("mail_subject", ""),
            body=require("mail_body", params.get("mail_body")),
            mailbox_key=params.get("apikeybox", "").strip(),
        ),
    )
    runtime().emit(
        caller.client,
        "email.received",
        {
            "id": received.id,
            "mbox": received.folder,
            "from": received.sender_email,
            "to": received.recipient_email,
            "subject": received.subject,
            "received_at": f"{datetime.fromtimestamp(received.at, UTC):%Y-%m-%dT%H:%M:%SZ}",
        },
    )
    return jsonify(result={"error": 0, "id": received.id, "mbox": received.folder})


def init_app(app: Flask) -> None:
    """Serve the console."""
    app.register_blueprint(bp)
