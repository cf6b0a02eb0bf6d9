"""The SMSMobileAPI REST endpoints beyond sending: logs, received SMS, conversations, phones, WhatsApp,
calls, notifications and e-mail.

Each view reads the dialect's parameters, asks the backend in the internal vocabulary, applies the
dialect's filters (app/fronts/smsmobileapi/filters.py) and answers in the shape the vendor's docs show.
A backend that passes the vendor's API through does not use these views: every call goes to the vendor
as made.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from email.errors import HeaderParseError
from email.headerregistry import Address

from flask import Blueprint, Response, jsonify

from app.errors import InvalidParameter
from app.fronts.smsmobileapi import filters
from app.fronts.smsmobileapi.conversations import conversations
from app.fronts.smsmobileapi.dialect import require, require_present
from app.fronts.smsmobileapi.records import (
    call_entry,
    device_entry,
    email_entry,
    from_mobile_entry,
    local,
    notification_entry,
    received_entry,
    sent_entry,
    whatsapp_entry,
)
from app.fronts.smsmobileapi.rest import http_call, parameters, passthrough_target, principal, verbatim
from app.phone import shown
from app.service import Principal, current
from app.vocabulary import CallRecord, EmailDraft

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


# --- calls, notifications, e-mail (the vendor's OpenAPI; answers in its shapes) ---------------------------

#: the OpenAPI's limits: missed calls (Limit100), incoming and outgoing calls (Limit50)
MISSED_LIMIT, MISSED_LIMIT_MAX = 100, 500
CALLS_LIMIT, CALLS_LIMIT_MAX = 50, 200
#: e-mail per page of /getemail/ (`start` is the first message's index)
EMAIL_PAGE = 50


@endpoint("/call/missed/list/")
def call_missed_list(params: dict[str, str], caller: Principal) -> Response:
    """List missed calls, newest first: offset, limit (1..500), search, date_start, date_end."""
    offset, limit = _page(params, MISSED_LIMIT, MISSED_LIMIT_MAX)
    start = filters.moment(params, "date_start", end=False)
    end = filters.moment(params, "date_end", end=True)
    calls = [
        c
        for c in caller.backend.calls(caller.upstream, "missed")
        if _call_matches(c, params.get("search", ""))
        and (start is None or c.at >= start)
        and (end is None or c.at <= end)
    ][offset : offset + limit]
    return jsonify(
        success=True, offset=offset, limit=limit, count=len(calls), data=[call_entry(c) for c in calls]
    )


@endpoint("/call/incoming/list/")
def call_incoming_list(params: dict[str, str], caller: Principal) -> Response:
    """List answered incoming calls: offset, limit (1..200), q, sort_dir (asc, desc)."""
    return _call_rows(params, caller, "incoming")


@endpoint("/call/outgoing/list/")
def call_outgoing_list(params: dict[str, str], caller: Principal) -> Response:
    """List outgoing calls: offset, limit (1..200), q, sort_dir (asc, desc)."""
    return _call_rows(params, caller, "outgoing")


@endpoint("/notification/send/")
def notification_send(params: dict[str, str], caller: Principal) -> Response:
    """Send an internal notification to a phone (sid; empty: the account's first phone)."""
    notification = caller.backend.send_notification(
        caller.upstream,
        params.get("sid", "").strip(),
        params.get("title", "").strip() or "Notification",
        require("message", params.get("message", "").strip()),
        params.get("type", "").strip() or "notification",
    )
    return jsonify(
        success=True,
        message="Notification created",
        id=notification.id,
        # The vendor echoes the key: here the one the caller sent, never an operator's.
        apikey=params.get("apikey", ""),
        sid=notification.sid,
    )


@endpoint("/notification/list/")
def notification_list(params: dict[str, str], caller: Principal) -> Response:
    """List the notifications sent: sidentifiant, distribued (0, 1), date_start, date_end."""
    sid = params.get("sidentifiant", "").strip()
    distributed = params.get("distribued", "").strip()
    if distributed not in ("", "0", "1"):
        raise InvalidParameter(f"distribued={shown(distributed)} is not valid: expected 0 or 1")
    start = filters.moment(params, "date_start", end=False)
    end = filters.moment(params, "date_end", end=True)
    found = [
        n
        for n in caller.backend.notifications(caller.upstream)
        if (not sid or n.sid == sid)
        and (not distributed or n.distributed == (distributed == "1"))
        and (start is None or n.created_at >= start)
        and (end is None or n.created_at <= end)
    ]
    return jsonify(success=True, count=len(found), notifications=[notification_entry(n) for n in found])


@endpoint("/sendemail/")
def sendemail(params: dict[str, str], caller: Principal) -> Response:
    """Send an e-mail through a mailbox (apikeybox; empty: the sandbox's own)."""
    allow_self_signed = require("allow_self_signed", params.get("allow_self_signed", "").strip().lower())
    if allow_self_signed not in ("yes", "no"):
        raise InvalidParameter(
            f"allow_self_signed={shown(allow_self_signed)} is not valid: expected yes or no"
        )
    unsubscribe = params.get("unsubscribe", "").strip()
    if unsubscribe not in ("", "1"):
        raise InvalidParameter(f"unsubscribe={shown(unsubscribe)} is not valid: expected 1")
    attachment = b""
    if params.get("attachmentBase64", "").strip():
        try:
            attachment = base64.b64decode(params["attachmentBase64"].strip(), validate=True)
        except ValueError:  # binascii.Error, or a character past ASCII
            raise InvalidParameter("attachmentBase64 is not valid base64") from None
    email = caller.backend.send_email(
        caller.upstream,
        EmailDraft(
            sender_name=require("sender_name", params.get("sender_name", "").strip()),
            sender_email=_email_address(params, "sender_email"),
            recipient_email=_email_address(params, "recipient_email"),
            subject=require("mail_subject", params.get("mail_subject", "").strip()),
            body=require("mail_body", params.get("mail_body")),
            mailbox_key=params.get("apikeybox", "").strip(),
            allow_self_signed=allow_self_signed == "yes",
            unsubscribe=unsubscribe == "1",
            attachment_name=params.get("attachmentBase64_name_1", "").strip() if attachment else "",
            attachment=attachment,
        ),
    )
    return jsonify(error="0", sent="1", id=email.id, mbox=email.folder)


@endpoint("/getemail/")
def getemail(params: dict[str, str], caller: Principal) -> Response:
    """List a mailbox folder's e-mail, newest first: apikeybox, mbox (INBOX), start (EMAIL_PAGE a page)."""
    folder = params.get("mbox", "").strip() or "INBOX"
    start = filters.integer(params, "start", 0, low=0) or 0
    emails = caller.backend.emails(caller.upstream, params.get("apikeybox", "").strip(), folder)
    page = emails[start : start + EMAIL_PAGE]
    return jsonify(
        error="0",
        mbox=folder,
        start=start,
        count=len(page),
        total=len(emails),
        emails=[email_entry(e) for e in page],
    )


def _page(params: dict[str, str], default_limit: int, max_limit: int) -> tuple[int, int]:
    """Return `offset` (at least 0) and `limit` (1..max_limit), refusing other values by name."""
    offset = filters.integer(params, "offset", 0, low=0) or 0
    limit = filters.integer(params, "limit", default_limit, low=1) or default_limit
    if limit > max_limit:
        raise InvalidParameter(f"limit={limit} is not valid: expected 1 to {max_limit}")
    return offset, limit


def _call_matches(call: CallRecord, text: str) -> bool:
    """Whether a call's number or contact name holds `text` (numbers compared by their digits)."""
    text = text.strip()
    if not text:
        return True
    wanted = filters.digits(text)
    return text.lower() in (call.name or "").lower() or bool(wanted and wanted in filters.digits(call.number))


def _call_rows(params: dict[str, str], caller: Principal, direction: str) -> Response:
    offset, limit = _page(params, CALLS_LIMIT, CALLS_LIMIT_MAX)
    sort_dir = params.get("sort_dir", "").strip().lower() or "desc"
    if sort_dir not in ("asc", "desc"):
        raise InvalidParameter(f"sort_dir={shown(sort_dir)} is not valid: expected asc or desc")
    calls = [
        c for c in caller.backend.calls(caller.upstream, direction) if _call_matches(c, params.get("q", ""))
    ]
    if sort_dir == "asc":
        calls.reverse()
    rows = calls[offset : offset + limit]
    return jsonify(success=True, count=len(rows), rows=[call_entry(c) for c in rows])


def _email_address(params: dict[str, str], name: str) -> str:
    """Return an e-mail address parameter, refused by name unless it reads as one (user@domain)."""
    value = require(name, params.get(name, "").strip())
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError):
        raise InvalidParameter(f"{name}={shown(value)} is not valid: expected an e-mail address") from None
    if not address.username or not address.domain:
        raise InvalidParameter(f"{name}={shown(value)} is not valid: expected an e-mail address")
    return value
