"""`conversation/sms/list`: received and sent SMS grouped by number, by the rules in the vendor's docs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from app.errors import InvalidParameter, MissingParameter
from app.fronts.smsmobileapi.filters import integer, moment
from app.fronts.smsmobileapi.records import local, utc
from app.phone import conversation_key
from app.vocabulary import ReceivedSms, SentSms

DEFAULT_LIMIT = 20


def conversations(
    fetch_sent: Callable[[], list[SentSms]],
    fetch_received: Callable[[], list[ReceivedSms]],
    params: Mapping[str, str],
    region: str | None = None,
) -> dict:
    """Return the answer: conversations detected from `origineConversation`, newest first by default.

    The parameters are checked before anything is fetched from the backend. Numbers are grouped by
    their E.164 form, national ones read in `region` (SMSBRIDGE_DEFAULT_REGION), so `0470 12 34 56` and
    `+32470123456` are one conversation with region BE; numbers that cannot be read so (shortcodes,
    national numbers without a region) are grouped by their digits.
    """
    origin = params.get("origineConversation", "").strip()
    if not origin:
        raise MissingParameter("origineConversation is missing: give received or sent")
    if origin not in ("received", "sent"):
        raise InvalidParameter(f"origineConversation={origin!r} is not valid: expected received or sent")
    sort = (params.get("sort", "").strip() or "DESC").upper()
    if sort not in ("ASC", "DESC"):
        raise InvalidParameter(f"sort={sort!r} is not valid: expected DESC or ASC")
    resume = integer(params, "resume", 0)
    if resume not in (0, 1):
        raise InvalidParameter("resume must be 0 or 1")
    lines = integer(params, "resume_line_how", 1, low=1) if resume else None
    limit = integer(params, "limit", DEFAULT_LIMIT, low=1)
    start = moment(params, "date_from", end=False)
    stop = moment(params, "date_to", end=True)

    sent, received = fetch_sent(), fetch_received()

    def key_of(number: str) -> str:
        return conversation_key(number, region)

    timelines: dict[str, list[dict]] = {}
    shown_number: dict[str, str] = {}
    aliases: dict[str, str] = {}
    in_range = _in_range(start, stop)
    if origin == "received":
        detected = {key_of(m.number) for m in received if in_range(m.received_at)}
    else:
        detected = {key_of(m.recipient) for m in sent if in_range(m.queued_at)}
    # Backends list newest first; within one second, their order is the only clue to which came first.
    for seq, sms in enumerate(reversed(received)):
        key = key_of(sms.number)
        if sms.alias:
            aliases[key] = sms.alias
        _add(timelines, shown_number, key, sms.number, _incoming(sms, seq), start, stop)
    for seq, out in enumerate(reversed(sent)):
        key = key_of(out.recipient)
        _add(timelines, shown_number, key, out.recipient, _outgoing(out, seq), start, stop)

    numero = params.get("numero", "").strip()
    keys = [k for k in timelines if k in detected]
    if numero:
        keys = [k for k in keys if k == key_of(numero)]
    keys.sort(key=lambda k: timelines[k][-1]["_ts"], reverse=sort == "DESC")
    if not numero:
        keys = keys[:limit]
    return {
        "success": True,
        "origineConversation": origin,
        "resume": resume,
        "resume_line_how": lines,
        "conversations": [
            {
                "phone_number": shown_number[k],
                "contact_alias": aliases.get(k),
                "messages": [
                    {name: v for name, v in m.items() if name != "_ts"}
                    for m in (timelines[k][-lines:] if lines else timelines[k])
                ],
            }
            for k in keys
        ],
    }


def _in_range(start: int | None, stop: int | None) -> Callable[[int], bool]:
    return lambda ts: (start is None or ts >= start) and (stop is None or ts <= stop)


def _add(
    timelines: dict[str, list[dict]],
    shown_number: dict[str, str],
    key: str,
    number: str,
    message: dict,
    start: int | None,
    stop: int | None,
) -> None:
    ts = message["_ts"][0]
    if (start is not None and ts < start) or (stop is not None and ts > stop):
        return
    shown_number.setdefault(key, number)
    timeline = timelines.setdefault(key, [])
    timeline.append(message)
    timeline.sort(key=lambda m: m["_ts"])


def _incoming(sms: ReceivedSms, seq: int) -> dict:
    return {
        "direction": "incoming",
        "message_id": sms.guid,
        "date": f"{local(sms.received_at):%Y-%m-%d %H:%M:%S}",
        "timestamp_utc": f"{utc(sms.received_at):%Y-%m-%dT%H:%M:%SZ}",
        "message": sms.message,
        "status": "received",
        "mobile_sid": sms.device,
        "_ts": (sms.received_at, seq),
    }


def _outgoing(sms: SentSms, seq: int) -> dict:
    return {
        "direction": "outgoing",
        "message_id": sms.guid,
        "date": f"{local(sms.queued_at):%Y-%m-%d %H:%M:%S}",
        "timestamp_utc": f"{utc(sms.queued_at):%Y-%m-%dT%H:%M:%SZ}",
        "message": sms.message,
        "status": "sent",
        "mobile_sid": sms.device,
        "_ts": (sms.queued_at, seq),
    }
