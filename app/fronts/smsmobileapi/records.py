"""SMSMobileAPI's shapes for history records: the sent log, received SMS, phones, WhatsApp messages.

Times follow the vendor's habits: "server" fields are UTC, "local" fields are the bridge's own time
zone (the TZ of its process), and a "local" UNIX timestamp is the local wall-clock read as if UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.vocabulary import CallRecord, Device, Email, Notification, ReceivedSms, SentSms


def utc(ts: int) -> datetime:
    """Return UNIX seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


def local(ts: int) -> datetime:
    """Return UNIX seconds as an aware datetime in the bridge's time zone."""
    return utc(ts).astimezone()


def timearea(ts: int) -> str:
    """Return the vendor's name for the local time zone at `ts`, such as UTC+01."""
    offset = local(ts).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}" + (f":{rest:02d}" if rest else "")


def local_unix(ts: int) -> int:
    """Return the local wall-clock time at `ts` read as UTC, as the vendor's `timestamp` fields are."""
    offset = local(ts).utcoffset()
    return ts + int(offset.total_seconds()) if offset else ts


def sent_entry(sms: SentSms) -> dict:
    """Return one `log/sent/sms` entry."""
    queued_local, queued_utc = local(sms.queued_at), utc(sms.queued_at)
    sent_at = sms.sent_at if sms.was_sent else None
    sent = sent_at is not None
    sent_local = local(sent_at) if sent_at is not None else None
    sent_utc = utc(sent_at) if sent_at is not None else None
    return {
        "sIdentifiantPhone": sms.device,
        "port": sms.port,
        "date_add": f"{queued_local:%Y-%m-%d}",
        "hour_add": f"{queued_local:%H:%M:%S}",
        "timestamp": local_unix(sms.queued_at),
        "send_from_mobile": 1 if sent else 0,
        "send_from_mobile_date": f"{sent_local:%Y-%m-%d}" if sent_local else "",
        "send_from_mobile_heure": f"{sent_local:%H:%M:%S}" if sent_local else "",
        "send_from_mobile_timestamp": local_unix(sent_at) if sent_at else None,
        "recipients": sms.recipient,
        "sms": sms.message,
        "error_api": sms.error_api,
        "send_from_mobile_erreur": sms.error_mobile,
        "guid_message": sms.guid,
        "timearea": timearea(sms.queued_at),
        "date_add_server": f"{queued_utc:%Y-%m-%d}",
        "hour_add_server": f"{queued_utc:%H:%M:%S}",
        "timestamp_server": sms.queued_at,
        "send_from_mobile_date_server": f"{sent_utc:%Y-%m-%d}" if sent_utc else "",
        "send_from_mobile_heure_server": f"{sent_utc:%H:%M:%S}" if sent_utc else "",
    }


def from_mobile_entry(sms: SentSms) -> dict:
    """Return one `log/sent/frommobile` entry."""
    when = sms.sent_at or sms.queued_at
    return {
        "sIdentifiant": sms.device,
        "number": sms.recipient,
        "message": sms.message,
        "mobile_date_ms": when * 1000,
        "mobile_date_formatted": f"{local(when):%Y-%m-%d %H:%M:%S}",
        "synchro_time": f"{utc(when):%Y-%m-%d %H:%M:%S}",
    }


def received_entry(sms: ReceivedSms, account_hash: str) -> dict:
    """Return one `getsms` entry; `apikey` is a hash of the key, as the docs ask, never the key."""
    when = utc(sms.received_at)
    return {
        "id": sms.id,
        "sIdentifiantPhone": sms.device,
        "date": f"{when:%Y-%m-%d}",
        "hour": f"{when:%H:%M:%S}",
        "timestamp_unix": sms.received_at,
        "time_received": f"{local(sms.received_at):%Y%m%d%H%M%S}000",
        "indice": str(sms.id),
        "message": sms.message,
        "number": sms.number,
        "guid": sms.guid,
        "alias": sms.alias,
        "apikey": account_hash,
    }


def whatsapp_entry(sms: ReceivedSms) -> dict:
    """Return one `getwa` entry."""
    when = utc(sms.received_at)
    return {
        "date": f"{when:%Y-%m-%d}",
        "hour": f"{when:%H:%M:%S}",
        "timestamp": str(sms.received_at),
        "number": sms.number,
        "contact": sms.contact,
        "message": sms.message,
        "message_type": sms.kind,
        "guid": sms.guid,
        "more": {"auto_reply": "0", "transfert_to_email": "0", "chatgpt_reply": "0"},
    }


def device_entry(device: Device) -> dict:
    """Return one `gateway/mobile/list` entry."""
    return {
        "sid": device.sid,
        "label": device.label,
        "phone_number": device.phone_number,
        "date": f"{local(device.last_seen):%Y-%m-%d %H:%M:%S}" if device.last_seen else "",
        "battery": device.battery,
        "version": device.version,
        "active": "1" if device.active else "0",
    }


def call_entry(call: CallRecord) -> dict:
    """Return one call of `/call/.../list/` (the OpenAPI's CallRecord, with the call's ids and phone)."""
    return {
        "id": call.id,
        "guid": call.guid,
        "number": call.number,
        "phone_number": call.number,
        "name": call.name,
        "cached_name": call.name,
        "date": f"{local(call.at):%Y-%m-%d %H:%M:%S}",
        "call_datetime_utc": f"{utc(call.at):%Y-%m-%d %H:%M:%S}",
        "duration_sec": call.duration,
        "type": call.direction,
        "sIdentifiant": call.device,
    }


def notification_entry(notification: Notification) -> dict:
    """Return one notification of `/notification/list/` (fields of the send's answer, and the rest)."""
    return {
        "id": notification.id,
        "sid": notification.sid,
        "title": notification.title,
        "message": notification.message,
        "type": notification.type,
        "distribued": 1 if notification.distributed else 0,
        "date": f"{local(notification.created_at):%Y-%m-%d %H:%M:%S}",
        "date_utc": f"{utc(notification.created_at):%Y-%m-%d %H:%M:%S}",
    }


def email_entry(email: Email) -> dict:
    """Return one message of `/getemail/`."""
    return {
        "id": email.id,
        "mbox": email.folder,
        "from_name": email.sender_name,
        "from_email": email.sender_email,
        "to": email.recipient_email,
        "subject": email.subject,
        "body": email.body,
        "date": f"{utc(email.at):%Y-%m-%d %H:%M:%S}",
        "timestamp": email.at,
        "attachment_name": email.attachment_name,
        "attachment_size": email.attachment_size,
    }
