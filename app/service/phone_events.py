"""The webhook events of what happens on a simulated phone, one place for the sandbox console and the inbox.

A reply, a failure or a delivery made with `/sandbox/*` or with the inbox's buttons reaches the client's
webhook as the same event: its type and its data are built here only.
"""

from __future__ import annotations

from app.service.bridge import Runtime
from app.vocabulary import ReceivedSms, SentSms


def received(runtime: Runtime, client: str, message: ReceivedSms, channel: str) -> None:
    """Tell the client's webhook that its phone received `message` (`sms.received` or `whatsapp.received`)."""
    runtime.emit(
        client,
        "whatsapp.received" if channel == "whatsapp" else "sms.received",
        {
            "guid": message.guid,
            "from": message.number,
            "message": message.message,
            "received_at": message.received_at,
            "alias": message.alias,
            "device_id": message.device,
        },
    )


def failed(runtime: Runtime, client: str, sms: SentSms) -> None:
    """Tell the client's webhook that a sent message failed (`sms.failed`)."""
    runtime.emit(
        client,
        "sms.failed",
        {
            "guid": sms.guid,
            "to": sms.recipient,
            "status": "failed",
            "error": sms.error_mobile or sms.error_api,
        },
    )


def delivered(runtime: Runtime, client: str, sms: SentSms) -> None:
    """Tell the client's webhook that a sent message was delivered.

    The vendor's webhook types (its OpenAPI's WebhookEnvelope enum) have no delivery event: a delivery is
    `sms.sent` with status "delivered", as the mobsms backend relays its upstream's delivery reports.
    """
    runtime.emit(client, "sms.sent", {"guid": sms.guid, "to": sms.recipient, "status": "delivered"})
