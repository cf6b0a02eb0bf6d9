"""A fake mobsms: `POST /api/sms` and `/api/sms/bulk` with Bearer keys, answering as its docs show."""

from __future__ import annotations

import itertools
import uuid

from tests.fakes.server import FakeUpstream, Received, Reply

VALID_KEYS = {"mobsms-key-1"}


class FakeMobsms(FakeUpstream):
    """mobsms's send API; `no_device` makes it answer 422 "No active device available"."""

    def __init__(self) -> None:
        self.no_device = False
        self.next_reply: Reply | None = None
        #: every message it queued, as it answered them
        self.queued: list[dict] = []
        self._ids = itertools.count(101)
        super().__init__()

    def handle(self, received: Received) -> Reply:
        """Answer like mobsms: 401 for an unknown key, 422 for invalid bodies, else 201 queued."""
        if self.next_reply is not None:
            reply, self.next_reply = self.next_reply, None
            return reply
        if received.headers.get("authorization") not in {f"Bearer {k}" for k in VALID_KEYS}:
            return Reply.json(401, {"success": False, "message": "Unauthenticated."})
        if (received.method, received.path) not in (("POST", "/api/sms"), ("POST", "/api/sms/bulk")):
            return Reply.json(404, {"message": "Not found"})
        body = received.json
        if not body.get("message") or len(body["message"]) > 1600:
            return Reply.json(
                422, {"message": "The message field is invalid.", "errors": {"message": ["invalid"]}}
            )
        if self.no_device:
            return Reply.json(422, {"success": False, "message": "No active device available"})
        if received.path == "/api/sms":
            queued = self._queued(body["recipient_number"])
            return Reply.json(201, {"success": True, "message": "SMS queued for sending", "data": queued})
        numbers = [r["number"] if isinstance(r, dict) else r for r in body["recipients"]]
        queued = [self._queued(n) for n in numbers]
        return Reply.json(201, {"success": True, "message": "Bulk SMS queued", "data": queued})

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
