"""The SMSMobileAPI dialect's filters, applied by the fronts to what any backend returns.

One implementation of each filter, so the sandbox and the translated backends answer alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from app.errors import InvalidParameter, MissingParameter
from app.fronts.smsmobileapi.records import local
from app.vocabulary import Device, ReceivedSms, SentSms

Params = Mapping[str, str]

#: log/sent/frommobile only looks this far back
HISTORY_LIMIT_DAYS = 7
FROM_MOBILE_SORT_KEYS = {
    "sIdentifiant": lambda s: s.device,
    "number": lambda s: s.recipient,
    "message": lambda s: s.message,
    "mobile_date_ms": lambda s: s.sent_at or s.queued_at,
    "mobile_date_formatted": lambda s: s.sent_at or s.queued_at,
    "synchro_time": lambda s: s.sent_at or s.queued_at,
}
PERIODS = ("today", "yesterday", "last_24h", "last_3days", "last_7days")
MAX_LIMIT = 200


def flag(params: Params, name: str) -> bool:
    """Read a 0/1 (or yes/no) parameter; empty means off."""
    value = params.get(name, "").strip().lower()
    if value in ("", "0", "no"):
        return False
    if value in ("1", "yes"):
        return True
    raise InvalidParameter(f"{name}={value!r} is not valid: expected 1 or 0")


def integer(params: Params, name: str, default: int | None = None, *, low: int = 0) -> int | None:
    """Read a whole-number parameter."""
    value = params.get(name, "").strip()
    if value == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,12}", value) or int(value) < low:
        raise InvalidParameter(f"{name}={value!r} is not valid: expected a whole number of at least {low}")
    return int(value)


def day(params: Params, name: str) -> date | None:
    """Read a YYYY-MM-DD parameter."""
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10]) if len(value) == 10 else datetime.fromisoformat(value).date()
    except ValueError:
        raise InvalidParameter(f"{name}={value!r} is not valid: expected a date as YYYY-MM-DD") from None


def moment(params: Params, name: str, *, end: bool) -> int | None:
    """Read a date (its whole day, in the bridge's time zone) or a full datetime, as UNIX seconds."""
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        if len(value) == 10:
            start = datetime.combine(date.fromisoformat(value), datetime.min.time()).astimezone()
            return int((start + timedelta(days=1)).timestamp()) - 1 if end else int(start.timestamp())
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int((parsed if parsed.tzinfo else parsed.astimezone()).timestamp())
    except ValueError:
        raise InvalidParameter(
            f"{name}={value!r} is not valid: expected YYYY-MM-DD or a full date and time"
        ) from None


def digits(number: str) -> str:
    """Return a phone number's digits, without + or a leading 00, to compare numbers however written."""
    only = re.sub(r"\D", "", number)
    return only[2:] if only.startswith("00") else only


# --- log/sent/sms --------------------------------------------------------------------------------------


def sent_log(entries: list[SentSms], params: Params) -> list[SentSms]:
    """Apply guid_message, before, error_api, error_mobile and keyword."""
    guid = params.get("guid_message", "").strip()
    if guid:
        entries = [s for s in entries if s.guid == guid]
    before = params.get("before", "").strip()
    if before.isdigit():
        entries = [s for s in entries if s.queued_at < int(before)]
    elif before:
        reference = next((s for s in entries if s.guid == before), None)
        entries = [] if reference is None else [s for s in entries if _older(s, reference, entries)]
    if flag(params, "error_api"):
        entries = [s for s in entries if s.error_api]
    if flag(params, "error_mobile"):
        entries = [s for s in entries if s.error_mobile]
    keyword = params.get("keyword", "").strip().lower()
    if keyword:
        entries = [s for s in entries if keyword in s.recipient.lower() or keyword in s.message.lower()]
    return entries


def _older(sms: SentSms, reference: SentSms, newest_first: list[SentSms]) -> bool:
    if sms.queued_at != reference.queued_at:
        return sms.queued_at < reference.queued_at
    return newest_first.index(sms) > newest_first.index(reference)


# --- log/sent/frommobile -------------------------------------------------------------------------------


def from_mobile(
    entries: list[SentSms], params: Params, now: float | None = None
) -> tuple[list[SentSms], dict]:
    """Apply the frommobile filters, sort and limit; return the rows and the answer's settings."""
    now = time.time() if now is None else now
    when = FROM_MOBILE_SORT_KEYS["mobile_date_ms"]
    entries = [s for s in entries if when(s) >= now - HISTORY_LIMIT_DAYS * 86400]
    exact = day(params, "date")
    if exact:
        entries = [s for s in entries if local(when(s)).date() == exact]
    start, stop = day(params, "date_from"), day(params, "date_to")
    if start:
        entries = [s for s in entries if local(when(s)).date() >= start]
    if stop:
        entries = [s for s in entries if local(when(s)).date() <= stop]
    period = params.get("period", "").strip()
    if period:
        entries = [s for s in entries if _in_period(when(s), period, now)]
    number = params.get("number", "").strip()
    if number:
        entries = [s for s in entries if digits(s.recipient) == digits(number)]
    device = params.get("sIdentifiant", "").strip()
    if device:
        entries = [s for s in entries if s.device == device]
    text = params.get("message", "").strip().lower()
    if text:
        entries = [s for s in entries if text in s.message.lower()]
    search = params.get("search", "").strip().lower()
    if search:
        entries = [s for s in entries if search in _searchable(s)]
    sort_by = params.get("sort_by", "").strip() or "mobile_date_ms"
    if sort_by not in FROM_MOBILE_SORT_KEYS:
        raise InvalidParameter(
            f"sort_by={sort_by!r} is not valid: expected one of {', '.join(FROM_MOBILE_SORT_KEYS)}"
        )
    sort_order = (params.get("sort_order", "").strip() or "DESC").upper()
    if sort_order not in ("ASC", "DESC"):
        raise InvalidParameter(f"sort_order={sort_order!r} is not valid: expected ASC or DESC")
    limit = min(integer(params, "limit", MAX_LIMIT, low=1) or MAX_LIMIT, MAX_LIMIT)
    entries = sorted(entries, key=FROM_MOBILE_SORT_KEYS[sort_by], reverse=sort_order == "DESC")[:limit]
    settings = {
        "limit": limit,
        "history_limit_days": HISTORY_LIMIT_DAYS,
        "sort_by": sort_by,
        "sort_order": sort_order,
    }
    return entries, settings


def _in_period(ts: int, period: str, now: float) -> bool:
    today = local(int(now)).date()
    when = local(ts)
    if period == "today":
        return when.date() == today
    if period == "yesterday":
        return when.date() == today - timedelta(days=1)
    if period == "last_24h":
        return ts >= now - 86400
    if period == "last_3days":
        return ts >= now - 3 * 86400
    if period == "last_7days":
        return ts >= now - 7 * 86400
    raise InvalidParameter(f"period={period!r} is not valid: expected one of {', '.join(PERIODS)}")


def _searchable(sms: SentSms) -> str:
    when = sms.sent_at or sms.queued_at
    return " ".join(
        (sms.device, sms.recipient, sms.message, f"{local(when):%Y-%m-%d %H:%M:%S}", f"{when}")
    ).lower()


# --- getsms, getwa, deletesms, gateway ----------------------------------------------------------------


def received(entries: list[ReceivedSms], params: Params) -> list[ReceivedSms]:
    """Apply sIdentifiantPhone, after_timestamp_unix and onlyunread."""
    device = params.get("sIdentifiantPhone", "").strip()
    if device:
        entries = [s for s in entries if s.device == device]
    after = integer(params, "after_timestamp_unix")
    if after is not None:
        entries = [s for s in entries if s.received_at > after]
    onlyunread = params.get("onlyunread", "").strip().lower()
    if onlyunread not in ("", "yes", "no"):
        raise InvalidParameter(f"onlyunread={onlyunread!r} is not valid: expected yes")
    if onlyunread == "yes":
        entries = [s for s in entries if not s.read]
    return entries


def whatsapp(entries: list[ReceivedSms], params: Params) -> list[ReceivedSms]:
    """Apply before, date and message_type."""
    before = integer(params, "before")
    if before is not None:
        entries = [s for s in entries if s.received_at < before]
    exact = day(params, "date")
    if exact:
        entries = [s for s in entries if local(s.received_at).date() == exact]
    kind = params.get("message_type", "").strip().lower()
    if kind not in ("", "text", "audio"):
        raise InvalidParameter(f"message_type={kind!r} is not valid: expected text or audio")
    if kind:
        entries = [s for s in entries if s.kind == kind]
    return entries


def deletion(params: Params) -> tuple[str | None, int | None, int | None]:
    """Read deletesms's choice: one guid_message, or a day (date_start) or days (to date_end)."""
    guid = params.get("guid_message", "").strip() or None
    start = moment(params, "date_start", end=False)
    if guid is None and start is None:
        raise MissingParameter("guid_message or date_start is missing: say which messages to delete")
    stop = moment(params, "date_end", end=True) or moment(params, "date_start", end=True)
    return guid, start, stop


def to_delete(entries: list[SentSms], choice: tuple[str | None, int | None, int | None]) -> list[str]:
    """Return the guids of the messages a deletesms `choice` names."""
    guid, start, stop = choice
    if guid is not None:
        return [s.guid for s in entries if s.guid == guid]
    assert start is not None and stop is not None
    return [s.guid for s in entries if start <= s.queued_at <= stop]


def devices(entries: list[Device], params: Params) -> list[Device]:
    """Apply sid (exact) and search (in every field)."""
    sid = params.get("sid", "").strip()
    if sid:
        entries = [d for d in entries if d.sid == sid]
    search = params.get("search", "").strip().lower()
    if search:
        entries = [d for d in entries if search in _device_text(d)]
    return entries


def _device_text(device: Device) -> str:
    """Return what the answer shows of a phone, which is what `search` looks in."""
    seen = f"{local(device.last_seen):%Y-%m-%d %H:%M:%S}" if device.last_seen else ""
    return " ".join(
        (device.sid, device.label, device.phone_number, seen, device.battery, device.version)
    ).lower()
