"""A fake mobsms: sends, message history, devices and webhooks with Bearer keys, answering as its docs show.

State is kept per API key (one account per key) and guarded by a lock, since the server is threaded.
Tests make things happen with plain methods (`add_inbound`, `add_outbound`, `set_status`) and read
`messages`, `queued`, `received`, `webhooks`; they may set `devices`, `per_page`, `no_device`, `next_reply`.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.harness.fakes.server import FakeUpstream, Received, Reply

DEFAULT_KEY = "mobsms-key-1"
VALID_KEYS = {DEFAULT_KEY}

DEFAULT_DEVICES = [
    {
        "id": 5,
        "device_id": "abc123",
        "device_name": "Pixel 7",
        "phone_number": "+998901234567",
        "is_active": True,
        "is_default": True,
        "sms_rate": 100,
        "send_delay_seconds": 0,
        "default_sim_slot": 0,
    }
]
DEFAULT_PER_PAGE = 50

#: every status a message can have, and those PUT/PATCH accepts (the docs' list)
STATUSES = ("pending", "sent", "delivered", "failed", "received", "cancelled")
UPDATABLE_STATUSES = ("pending", "sent", "delivered", "failed", "received")

#: the fields the docs show for items of /api/sms/outbox and /api/sms/inbox
OUTBOX_FIELDS = ("id", "recipient_number", "message", "status", "price", "is_charged", "created_at")
INBOX_FIELDS = ("id", "sender_number", "message", "status", "direction", "created_at")

NO_MODEL = {"message": "No query results for model [SmsMessage]."}

Handler = Callable[[str, Received, dict[str, str]], Reply]


def iso(moment: datetime | int | float | str | None) -> str:
    """Return `moment` (a datetime, unix time, ISO string or None for now) as mobsms writes times."""
    if moment is None:
        when = datetime.now(UTC)
    elif isinstance(moment, datetime):
        when = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    elif isinstance(moment, (int, float)):
        when = datetime.fromtimestamp(moment, UTC)
    else:
        when = datetime.fromisoformat(moment)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _invalid(field: str, text: str) -> Reply:
    return Reply.json(422, {"message": text, "errors": {field: [text]}})


class FakeMobsms(FakeUpstream):
    """mobsms's API; `no_device` makes sends answer 422 "No active device available"."""

    def __init__(self) -> None:
        self.no_device = False
        self.next_reply: Reply | None = None
        #: every message it queued, as it answered them
        self.queued: list[dict] = []
        #: the gateway devices GET /api/devices lists (shared by every key); tests may replace it
        self.devices: list[dict] = copy.deepcopy(DEFAULT_DEVICES)
        #: the page size of the message lists when the request gives no per_page
        self.per_page = DEFAULT_PER_PAGE
        self._ids = itertools.count(101)
        self._state = threading.RLock()
        self._messages: dict[str, list[dict]] = {}
        self._webhooks: dict[str, dict] = {}
        #: (method, path pattern, handler), tried in order as Laravel's router does
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/api/sms"), self._list_all),
            ("POST", re.compile(r"/api/sms"), self._send),
            ("POST", re.compile(r"/api/sms/bulk"), self._send),
            ("GET", re.compile(r"/api/sms/inbox"), self._list_inbox),
            ("GET", re.compile(r"/api/sms/outbox"), self._list_outbox),
            ("POST", re.compile(r"/api/sms/(?P<id>[^/]+)/cancel"), self._cancel),
            ("GET", re.compile(r"/api/sms/(?P<id>[^/]+)"), self._show),
            ("PUT", re.compile(r"/api/sms/(?P<id>[^/]+)"), self._update),
            ("PATCH", re.compile(r"/api/sms/(?P<id>[^/]+)"), self._update),
            ("DELETE", re.compile(r"/api/sms/(?P<id>[^/]+)"), self._delete),
            ("GET", re.compile(r"/api/devices"), self._list_devices),
            ("GET", re.compile(r"/api/webhooks"), self._show_webhooks),
            ("PUT", re.compile(r"/api/webhooks"), self._update_webhooks),
        ]
        super().__init__()

    # -- what tests use ------------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict]:
        """The messages of the default key's account, in the order they were added (live dicts)."""
        return self.messages_of(DEFAULT_KEY)

    def messages_of(self, key: str) -> list[dict]:
        """The messages of `key`'s account, in the order they were added (live dicts)."""
        with self._state:
            return list(self._messages.get(key, []))

    @property
    def webhooks(self) -> dict:
        """The default key's webhook URLs: {"webhook_url_incoming", "webhook_url_status"}."""
        with self._state:
            return dict(self._account_webhooks(DEFAULT_KEY))

    def add_inbound(
        self,
        sender_number: str,
        message: str,
        created_at: datetime | int | str | None = None,
        device_id: int | None = 5,
        *,
        key: str = DEFAULT_KEY,
    ) -> dict:
        """Add an SMS received by a device; return the stored message."""
        return self._add(
            key,
            {"sender_number": sender_number, "message": message, "direction": "inbound"},
            "received",
            iso(created_at),
            device_id,
        )

    def add_outbound(
        self,
        recipient_number: str,
        message: str,
        status: str = "delivered",
        created_at: datetime | int | str | None = None,
        error_message: str | None = None,
        device_id: int | None = 5,
        *,
        key: str = DEFAULT_KEY,
        my_id: str | None = None,
        callback_url: str | None = None,
    ) -> dict:
        """Add a sent message as if it had been sent earlier; return the stored message.

        sent_at is created_at + 1 s for sent and delivered messages; delivered_at is created_at + 5 s.
        """
        if status not in STATUSES or status == "received":
            raise ValueError(f"not an outbound status: {status!r}")
        stamp = iso(created_at)
        stored = self._add(
            key,
            {"recipient_number": recipient_number, "message": message, "direction": "outbound"},
            status,
            stamp,
            device_id,
        )
        with self._state:
            start = _parse(stamp)
            if status in ("sent", "delivered"):
                stored["sent_at"] = iso(start + timedelta(seconds=1))
            if status == "delivered":
                stored["delivered_at"] = iso(start + timedelta(seconds=5))
            stored.update(error_message=error_message, my_id=my_id, callback_url=callback_url)
        return stored

    def set_status(
        self,
        message_id_or_id: int | str,
        status: str,
        error_message: str | None = None,
        *,
        key: str = DEFAULT_KEY,
    ) -> dict:
        """Change a message's status as the device would (sent_at/delivered_at set to now); return it.

        error_message None leaves the stored one as it is. KeyError when the message is unknown.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {STATUSES}")
        with self._state:
            stored = self._find(key, str(message_id_or_id))
            if stored is None:
                raise KeyError(message_id_or_id)
            self._apply_status(stored, status)
            if error_message is not None:
                stored["error_message"] = error_message
            return stored

    def reset_state(self) -> None:
        """Forget every message and webhook; devices and per_page back to their defaults."""
        with self._state:
            self._messages.clear()
            self._webhooks.clear()
            self.devices = copy.deepcopy(DEFAULT_DEVICES)
            self.per_page = DEFAULT_PER_PAGE

    # -- HTTP ----------------------------------------------------------------------------------------

    def handle(self, received: Received) -> Reply:
        """Answer like mobsms: 401 for an unknown key, 404/405 like Laravel's router, else the route."""
        if self.next_reply is not None:
            reply, self.next_reply = self.next_reply, None
            return reply
        key = self._key(received)
        if key is None:
            return Reply.json(401, {"success": False, "message": "Unauthenticated."})
        other_methods = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(received.path)
            if match is None:
                continue
            if method == received.method:
                with self._state:
                    return handler(key, received, match.groupdict())
            other_methods.append(method)
        if other_methods:
            allowed = ", ".join(dict.fromkeys(other_methods))
            return Reply.json(
                405,
                {
                    "message": f"The {received.method} method is not supported for route "
                    f"{received.path.lstrip('/')}. Supported methods: {allowed}."
                },
            )
        return Reply.json(404, {"message": "Not found"})

    @staticmethod
    def _key(received: Received) -> str | None:
        auth = received.headers.get("authorization", "")
        for key in VALID_KEYS:
            if auth == f"Bearer {key}":
                return key
        return None

    def _send(self, key: str, received: Received, _: dict[str, str]) -> Reply:
        body = received.json
        if not body.get("message") or len(body["message"]) > 1600:
            return Reply.json(
                422, {"message": "The message field is invalid.", "errors": {"message": ["invalid"]}}
            )
        if self.no_device or not any(d.get("is_active") for d in self.devices):
            return Reply.json(422, {"success": False, "message": "No active device available"})
        device_id = self._device_for(body.get("device_id"))
        if received.path == "/api/sms":
            number = body.get("recipient_number") or body.get("phone")
            if not number:
                return _invalid("recipient_number", "The recipient number field is required.")
            answer = self._queued(number)
            self._fill(key, answer, body["message"], body, device_id)
            answer["callback_url"] = body.get("callback_url")
            if body.get("my_id") is not None:
                answer["my_id"] = body["my_id"]
            return Reply.json(201, {"success": True, "message": "SMS queued for sending", "data": answer})
        if not isinstance(body.get("recipients"), list) or not body["recipients"]:
            return _invalid("recipients", "The recipients field is required.")
        answers = []
        for recipient in body["recipients"]:
            if isinstance(recipient, dict):
                number, name = recipient["number"], recipient.get("name") or ""
            else:
                number, name = recipient, ""
            answer = self._queued(number)
            self._fill(key, answer, body["message"].replace("{name}", name), body, device_id)
            answers.append(answer)
        return Reply.json(201, {"success": True, "message": "Bulk SMS queued for sending", "data": answers})

    def _queued(self, number: str) -> dict:
        message = {
            "id": next(self._ids),
            "message_id": str(uuid.uuid4()),
            "recipient_number": number,
            "status": "pending",
            "price": 100,
            "is_charged": False,
            "direction": "outbound",
        }
        self.queued.append(message)
        return message

    def _fill(self, key: str, answer: dict, text: str, body: dict, device_id: int | None) -> None:
        """Store the message a send queued (as answered by `_queued`) in `key`'s history."""
        stored = self._store(
            key,
            answer["id"],
            answer["message_id"],
            {"recipient_number": answer["recipient_number"], "message": text, "direction": "outbound"},
            "pending",
            iso(None),
            device_id,
        )
        stored.update(callback_url=body.get("callback_url"), my_id=body.get("my_id"))

    def _device_for(self, wanted: object) -> int | None:
        """The numeric id of the device a send asked for: the default device when none or "active"."""
        if wanted is None or wanted == "active":
            active = [d for d in self.devices if d.get("is_active")]
            default = [d for d in active if d.get("is_default")]
            return (default or active or [{"id": None}])[0]["id"]
        for device in self.devices:
            if str(wanted) in (str(device["id"]), device.get("device_id")):
                return device["id"]
        return int(wanted) if str(wanted).isdigit() else None

    def _list_all(self, key: str, received: Received, _: dict[str, str]) -> Reply:
        return self._list(key, received, None, None)

    def _list_inbox(self, key: str, received: Received, _: dict[str, str]) -> Reply:
        return self._list(key, received, "inbound", INBOX_FIELDS)

    def _list_outbox(self, key: str, received: Received, _: dict[str, str]) -> Reply:
        return self._list(key, received, "outbound", OUTBOX_FIELDS)

    def _list(self, key: str, received: Received, direction: str | None, fields: tuple | None) -> Reply:
        query = dict(received.query)
        items = self._messages.get(key, [])
        wanted_direction = direction or query.get("direction")
        if wanted_direction:
            if wanted_direction not in ("inbound", "outbound"):
                return _invalid("direction", "The selected direction is invalid.")
            items = [m for m in items if m["direction"] == wanted_direction]
        if query.get("status"):
            if query["status"] not in STATUSES:
                return _invalid("status", "The selected status is invalid.")
            items = [m for m in items if m["status"] == query["status"]]
        if query.get("device_id"):
            if not re.fullmatch(r"-?\d+", query["device_id"]):
                return _invalid("device_id", "The device id field must be an integer.")
            items = [m for m in items if m["device_id"] == int(query["device_id"])]
        items = sorted(items, key=lambda m: (_parse(m["created_at"]), m["id"]), reverse=True)
        per_page = _positive(query.get("per_page")) or self.per_page
        page = _positive(query.get("page")) or 1
        chunk = items[(page - 1) * per_page : page * per_page]
        if fields is not None:
            chunk = [{f: m.get(f) for f in fields} for m in chunk]
        data = {
            "current_page": page,
            "data": chunk,
            "per_page": per_page,
            "total": len(items),
            "last_page": max(1, math.ceil(len(items) / per_page)),
        }
        return Reply.json(200, {"success": True, "data": data})

    def _show(self, key: str, _: Received, params: dict[str, str]) -> Reply:
        stored = self._find(key, params["id"])
        if stored is None:
            return Reply.json(404, NO_MODEL)
        return Reply.json(200, {"success": True, "data": stored})

    def _update(self, key: str, received: Received, params: dict[str, str]) -> Reply:
        stored = self._find(key, params["id"])
        if stored is None:
            return Reply.json(404, NO_MODEL)
        body = received.json if received.body else {}
        status = body.get("status")
        if status is not None and status not in UPDATABLE_STATUSES:
            return _invalid("status", "The selected status is invalid.")
        error_message = body.get("error_message")
        if error_message is not None and not isinstance(error_message, str):
            return _invalid("error_message", "The error message field must be a string.")
        if status is not None:
            self._apply_status(stored, status)
        if "error_message" in body:
            stored["error_message"] = error_message
        return Reply.json(
            200,
            {
                "success": True,
                "data": {"id": stored["id"], "status": stored["status"]},
                "message": "SMS updated successfully",
            },
        )

    def _cancel(self, key: str, _: Received, params: dict[str, str]) -> Reply:
        stored = self._find(key, params["id"])
        if stored is None:
            return Reply.json(404, NO_MODEL)
        if stored["status"] != "pending":
            return Reply.json(422, {"success": False, "message": "Only pending messages can be cancelled"})
        stored["status"] = "cancelled"
        return Reply.json(
            200,
            {
                "success": True,
                "data": {"id": stored["id"], "status": "cancelled"},
                "message": "SMS cancelled successfully",
            },
        )

    def _delete(self, key: str, _: Received, params: dict[str, str]) -> Reply:
        stored = self._find(key, params["id"])
        if stored is None:
            return Reply.json(404, NO_MODEL)
        self._messages[key].remove(stored)
        return Reply.json(200, {"success": True, "message": "SMS deleted successfully"})

    def _list_devices(self, *_: object) -> Reply:
        return Reply.json(200, {"success": True, "data": self.devices})

    def _show_webhooks(self, key: str, *_: object) -> Reply:
        return Reply.json(200, {"success": True, "data": self._account_webhooks(key)})

    def _update_webhooks(self, key: str, received: Received, _: dict[str, str]) -> Reply:
        body = received.json if received.body else {}
        hooks = self._account_webhooks(key)
        for name in hooks:
            value = body.get(name)
            if value is not None and not (isinstance(value, str) and re.match(r"https?://[^\s/]+", value)):
                words = name.replace("_", " ")
                return _invalid(name, f"The {words} field must be a valid URL.")
        for name in hooks:
            if name in body:
                hooks[name] = body[name]
        return Reply.json(200, {"success": True, "data": hooks, "message": "Webhooks updated successfully"})

    # -- state ---------------------------------------------------------------------------------------

    def _account_webhooks(self, key: str) -> dict:
        return self._webhooks.setdefault(key, {"webhook_url_incoming": None, "webhook_url_status": None})

    def _add(self, key: str, fields: dict, status: str, created_at: str, device_id: int | None) -> dict:
        with self._state:
            return self._store(key, next(self._ids), str(uuid.uuid4()), fields, status, created_at, device_id)

    def _store(
        self,
        key: str,
        number_id: int,
        message_id: str,
        fields: dict,
        status: str,
        created_at: str,
        device_id: int | None,
    ) -> dict:
        """Append a message to `key`'s history; `fields` holds the number, message and direction."""
        stored = {
            "id": number_id,
            "message_id": message_id,
            **fields,
            "status": status,
            "price": 100,
            "is_charged": False,
            "device_id": device_id,
            "sent_at": None,
            "delivered_at": None,
            "created_at": created_at,
            "error_message": None,
            "callback_url": None,
            "my_id": None,
        }
        self._messages.setdefault(key, []).append(stored)
        return stored

    def _find(self, key: str, ident: str) -> dict | None:
        for stored in self._messages.get(key, []):
            if stored["message_id"] == ident or (ident.isdigit() and stored["id"] == int(ident)):
                return stored
        return None

    @staticmethod
    def _apply_status(stored: dict, status: str) -> None:
        now = iso(None)
        stored["status"] = status
        if status in ("sent", "delivered") and stored["sent_at"] is None:
            stored["sent_at"] = now
        if status == "delivered":
            stored["delivered_at"] = now


def _positive(value: str | None) -> int | None:
    """`value` as a positive integer, or None (Laravel's paginator falls back to its default)."""
    if value is not None and value.isdigit() and int(value) > 0:
        return int(value)
    return None
