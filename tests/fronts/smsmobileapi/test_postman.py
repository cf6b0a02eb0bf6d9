"""The vendor's own Postman collection, run by newman against the bridge under real gunicorn.

On the sandbox every one of its 17 requests passes, as the vendor's file is (its `deviceSid` and
`mailboxKey` left empty: the account's first phone and the sandbox's own mailbox). On mobsms the calls,
notifications and e-mail it cannot do are refused by name (400 `unsupported_by_backend`); on smsmobileapi
every request passes through to the (fake) vendor as made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness.bridge import GOOD_KEY
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Received, Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn
from tests.harness.newman import run_collection

#: the collection's requests for the vendor's endpoints beyond SMS, devices and WhatsApp
EXTRAS = {
    "List missed calls": "/call/missed/list/",
    "List incoming calls": "/call/incoming/list/",
    "List outgoing calls": "/call/outgoing/list/",
    "Send mobile notification": "/notification/send",
    "List notification history": "/notification/list/",
    "Send email": "/sendemail/",
    "Retrieve inbox": "/getemail/",
}

#: every parameter the collection's notification and e-mail sends carry
WELL_FORMED = {
    "sid": "",
    "title": "Order ready",
    "message": "Order #1042 is ready for collection.",
    "apikeybox": "",
    "sender_name": "Example Team",
    "sender_email": "team@example.com",
    "recipient_email": "customer@example.net",
    "mail_subject": "Order confirmation",
    "mail_body": "Your order has been confirmed.",
    "allow_self_signed": "no",
}


class AnsweringVendor(FakeSmsMobileApi):
    """The fake vendor, answering 200 to every path past `/sendsms/` it would otherwise not know."""

    def handle(self, received: Received) -> Reply:
        reply = super().handle(received)
        if reply.status == 404:
            return Reply.json(200, {"success": True, "vendor_path": received.path})
        return reply


def gunicorn(backend: str, data: Path, **env: str) -> Gunicorn:
    return Gunicorn(
        {
            "SMSBRIDGE_BACKEND": backend,
            "SMSBRIDGE_DATA_DIR": str(data),
            "SMSBRIDGE_RATE_LIMIT": "100000/minute",
            **env,
        },
        data / "gunicorn.log",
    )


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Gunicorn]:
    server = gunicorn("sandbox", tmp_path)
    yield server
    server.stop()


def test_every_request_of_the_collection_passes_on_the_sandbox(sandbox: Gunicorn) -> None:
    run = run_collection(sandbox.url, api_key=GOOD_KEY["sandbox"])

    assert len(run.requests) == 17
    assert [(r.name, r.status, r.failures) for r in run.failed] == []
    assert run.report["run"]["stats"]["assertions"] == {"total": 17, "pending": 0, "failed": 0}
    # What the collection made is there to read back: its notification and its e-mail.
    key = {"apikey": GOOD_KEY["sandbox"]}
    notifications = requests.get(sandbox.url + "/notification/list/", params=key, timeout=15).json()
    assert [(n["sid"], n["title"]) for n in notifications["notifications"]] == [
        ("sandbox-phone-1", "Order ready")
    ]
    sent = requests.get(sandbox.url + "/getemail/", params={**key, "mbox": "Sent"}, timeout=15).json()
    assert [e["subject"] for e in sent["emails"]] == ["Order confirmation"]
    assert "Traceback" not in sandbox.log.read_text(errors="replace")


def test_mobsms_refuses_the_calls_it_cannot_do_by_name(fake_mobsms: FakeMobsms, tmp_path: Path) -> None:
    server = gunicorn("mobsms", tmp_path, SMSBRIDGE_MOBSMS_URL=fake_mobsms.url)
    try:
        run = run_collection(server.url, api_key=GOOD_KEY["mobsms"])
        statuses = {r.name: r.status for r in run.requests}
        assert {name: statuses[name] for name in EXTRAS} == dict.fromkeys(EXTRAS, 400)
        # (What else fails there is mobsms's own: no WhatsApp, its refusals of the collection's number.)
        assert set(EXTRAS) <= {r.name for r in run.failed}
        for name, path in EXTRAS.items():
            # Well-formed, as the collection's: a call missing a parameter is refused for that first.
            method = "POST" if path in ("/notification/send", "/sendemail/") else "GET"
            answer = requests.request(
                method, server.url + path, params={"apikey": GOOD_KEY["mobsms"]}, data=WELL_FORMED, timeout=15
            )
            assert answer.status_code == 400, (name, answer.text)
            assert answer.json()["result"]["error_code"] == "unsupported_by_backend"
            assert "the mobsms backend does not support" in answer.json()["message"]
    finally:
        server.stop()


def test_smsmobileapi_passes_every_request_through_to_the_vendor(tmp_path: Path) -> None:
    vendor = AnsweringVendor()
    server = gunicorn("smsmobileapi", tmp_path, SMSBRIDGE_SMSMOBILEAPI_URL=vendor.url)
    try:
        run = run_collection(server.url, api_key=GOOD_KEY["smsmobileapi"])
        assert [(r.name, r.status, r.failures) for r in run.failed] == []
        by_path = {r.path.rstrip("/"): r for r in vendor.received}
        for path in EXTRAS.values():
            assert path.rstrip("/") in by_path, f"{path} did not reach the vendor"
        email = by_path["/sendemail"]
        assert dict(email.form)["apikeybox"] == ""
        assert dict(email.form)["mail_subject"] == "Order confirmation"
        assert dict(by_path["/notification/send"].form)["sid"] == ""
        assert dict(by_path["/call/incoming/list"].query)["sort_dir"] == "desc"
    finally:
        server.stop()
        vendor.stop()
