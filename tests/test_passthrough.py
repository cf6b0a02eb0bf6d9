"""The smsmobileapi backend: every endpoint, and any other path, goes to the vendor as made."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from tests.fakes.server import Reply
from tests.fakes.smsmobileapi import FakeSmsMobileApi

ENDPOINTS = {
    "/resend/": {"guid": "c319d3b35e8f8712cde20dae39ac3c19f86eda25"},
    "/log/sent/sms/": {
        "guid_message": "g",
        "before": "1774044464",
        "error_api": "1",
        "error_mobile": "0",
        "keyword": "x",
    },
    "/log/sent/frommobile/": {
        "period": "last_7days",
        "limit": "200",
        "sort_by": "synchro_time",
        "sort_order": "DESC",
    },
    "/getsms/": {"after_timestamp_unix": "1774041814", "sIdentifiantPhone": "e5b7", "onlyunread": "yes"},
    "/getsms/set-read/": {"guid_message": "6BFD7DC7-3492-422D-8D02-4AF4E614F122"},
    "/getsms/update/": {"guid": "6BFD7DC7", "alias": ""},
    "/deletesms/": {"date_start": "2026-03-01", "date_end": "2026-03-31"},
    "/conversation/sms/list/": {"origineConversation": "received", "numero": "+32470000001", "resume": "1"},
    "/gateway/mobile/list/": {"sid": "abc", "search": "Pixel"},
    "/gateway/mobile/update/": {"sid": "abc", "label": "", "phone_number": "+1555"},
    "/gateway/mobile/delete/": {"sid": "abc"},
    "/resendwa/": {"guid": "652fcfc0-12a8-46f5-b5ba-9391135b8b4c"},
    "/getwa/synchronisation/": {},
    "/getwa/": {"before": "1741692420", "date": "2025-03-11", "message_type": "audio"},
    "/getwa/active/": {"statut": "x"},
    "/whatsapp/checknumber/": {"recipients": "191728660"},
    # Outside the seed docs, but the vendor serves them: the bridge must not stand in the way.
    "/call/missed/list/": {},
    "/notification/send": {"title": "t"},
    "/sendemail/": {"to": "a@example.org"},
    "/getemail/": {},
}
VENDOR_BODY = b'{"result": {"error": "0", "anything": ["the vendor", "adds"]}}'


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app("smsmobileapi").test_client()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_get_is_forwarded_as_made(path: str, client: FlaskClient, fake_vendor: FakeSmsMobileApi) -> None:
    fake_vendor.next_reply = Reply(200, VENDOR_BODY, "application/json", headers={"Retry-After": "3"})
    query = [("apikey", "vendor-key-1"), *ENDPOINTS[path].items(), ("from", "python")]
    response = client.get(path, query_string=query)
    [got] = fake_vendor.received
    assert (got.method, got.path, got.query, got.body) == ("GET", path, query, b"")
    assert "authorization" not in got.headers
    assert (response.status_code, response.get_data(), response.content_type) == (
        200,
        VENDOR_BODY,
        "application/json",
    )
    assert response.headers["Retry-After"] == "3"


@pytest.mark.parametrize("path", ["/getsms", "/log/sent/sms/", "/gateway/mobile/update"])
def test_post_form_and_bearer_are_forwarded_as_made(
    path: str, client: FlaskClient, fake_vendor: FakeSmsMobileApi
) -> None:
    fake_vendor.next_reply = Reply(200, VENDOR_BODY)
    form = MultiDict([("sid", "abc"), ("label", "Office"), ("label", "twice")])
    client.post(
        path, query_string={"from": "odoo"}, data=form, headers={"Authorization": "Bearer vendor-token-1"}
    )
    [got] = fake_vendor.received
    assert (got.method, got.path, got.query) == ("POST", path, [("from", "odoo")])
    assert got.form == [("sid", "abc"), ("label", "Office"), ("label", "twice")]
    assert got.headers["authorization"] == "Bearer vendor-token-1"


def test_the_vendors_errors_come_back_unchanged(client: FlaskClient, fake_vendor: FakeSmsMobileApi) -> None:
    refused = client.get("/getsms/", query_string={"apikey": "wrong"})
    assert refused.status_code == 403
    assert refused.get_json() == {"error": 403, "message": "API key invalid, expired or unauthorized"}
    fake_vendor.next_reply = Reply(500, b'{"error": 500, "message": "maintenance"}')
    vendor_json = client.get("/getwa/", query_string={"apikey": "vendor-key-1"})
    assert (vendor_json.status_code, vendor_json.get_json()) == (
        500,
        {"error": 500, "message": "maintenance"},
    )
    # An HTML error page never reaches the caller: it gets the dialect's error instead.
    fake_vendor.next_reply = Reply(500, b"<html>oops</html>", "text/html")
    broken = client.get("/getwa/", query_string={"apikey": "vendor-key-1"})
    assert broken.status_code == 502
    assert broken.get_json()["result"]["error_code"] == "backend_failed"


def test_a_call_without_a_key_still_reaches_the_vendor(
    client: FlaskClient, fake_vendor: FakeSmsMobileApi
) -> None:
    answer = client.get("/gateway/mobile/list/")
    assert answer.status_code == 403
    assert fake_vendor.received[0].query == []


def test_the_bridges_own_paths_stay_its_own(client: FlaskClient, fake_vendor: FakeSmsMobileApi) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/sendsms/wsdl/sendsms.wsdl").status_code == 200
    vendors = client.post("/sandbox/inbound", data={"apikey": "vendor-key-1"})
    # /sandbox/ is not the bridge's with this backend: the vendor answered it (the fake knows no such path).
    assert vendors.get_json() == {"error": 404, "message": "unknown endpoint"}
    assert [r.path for r in fake_vendor.received] == ["/sandbox/inbound"]


def test_an_unreachable_vendor_is_an_error_in_the_dialect(make_app: Callable[..., Flask]) -> None:
    client = make_app("smsmobileapi", smsmobileapi_url="http://127.0.0.1:9").test_client()
    answer = client.get("/getsms/", query_string={"apikey": "vendor-key-1"})
    assert answer.status_code == 502
    assert answer.get_json()["result"]["error_code"] == "backend_unreachable"
