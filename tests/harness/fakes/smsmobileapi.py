"""A fake SMSMobileAPI: answers `/sendsms/` as the vendor's docs show, refusing unknown keys."""

from __future__ import annotations

import hashlib

from tests.harness.fakes.server import FakeUpstream, Received, Reply

VALID_KEYS = {"vendor-key-1", "vendor-token-1"}


class FakeSmsMobileApi(FakeUpstream):
    """The vendor's REST API, as far as sending goes; `next_reply` overrides the next answer."""

    def __init__(self) -> None:
        self.next_reply: Reply | None = None
        super().__init__()

    def handle(self, received: Received) -> Reply:
        """Answer like the vendor: 403 for an unknown key, else the documented send result."""
        if self.next_reply is not None:
            reply, self.next_reply = self.next_reply, None
            return reply
        params = dict(received.query)
        if received.headers.get("content-type", "").startswith("application/json"):
            params |= {k: str(v) for k, v in received.json.items()}  # the vendor's axios example posts JSON
        else:
            params |= dict(received.form)
        bearer = received.headers.get("authorization", "").removeprefix("Bearer ")
        key = params.get("apikey") or bearer
        if key not in VALID_KEYS:
            return Reply.json(403, {"error": 403, "message": "API key invalid, expired or unauthorized"})
        if received.path not in ("/sendsms", "/sendsms/"):
            return Reply.json(404, {"error": 404, "message": "unknown endpoint"})
        guid = hashlib.sha1(received.body + repr(received.query).encode()).hexdigest()  # noqa: S324
        return Reply.json(
            200,
            {
                "result": {
                    "error": 0,
                    "sent": "1",
                    "id": guid,
                    "note": "sent by mobile",
                    "datetime": "2026-03-20T21:07:44Z",
                    "datetimeLocal": "2026-03-20T22:07:44+01:00",
                    "port": int(params["port"]) if params.get("port") else None,
                    "iac_control": "1",
                    "iac_authorized": "1",
                    "send_with_whatsapp": "1" if params.get("sendwa") == "1" else "0",
                    "encrypted": {"status": "1" if params.get("encrypt_message") == "yes" else "0"},
                    "trial_account": {"status": "0", "sms_sent": 0},
                    "vendor_field_added_tomorrow": {"kept": True},
                }
            },
            **{"X-Vendor": "yes"},
        )
