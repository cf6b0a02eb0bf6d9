"""The smsmobileapi backend: every endpoint, and any other path, goes to the vendor as made."""

from __future__ import annotations

import gzip
import html
import http.client
import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from app.access.resolution import hash_key
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn
from tests.harness.passthrough import CLIENT_KEY, OPERATOR_KEY, managed_vendor_app
from tests.harness.soap import envelope

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


# --- the operator's key never reaches a managed client (issue 12, item 2) ---------------------------------


def quoted_forms(key: str) -> list[str]:
    """Return the ways a vendor answer can quote `key`: raw, URL-encoded, JSON, PHP JSON, HTML."""
    escaped = json.dumps(key)[1:-1]
    return [
        key,
        quote(key, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(key, safe="")),
        quote_plus(key),
        escaped,
        json.dumps(key, ensure_ascii=False)[1:-1],
        escaped.replace("/", "\\/"),
        html.escape(key),
    ]


def quoting_body(forms: list[str]) -> bytes:
    """A vendor answer that quotes a key in each of `forms`, as /notification/send echoes its apikey."""
    lines = [f'{{"apikey": "{forms[0]}"}}'] + [f"form {i}: <{form}>" for i, form in enumerate(forms)]
    return "\n".join(lines).encode()


@pytest.mark.parametrize("path", ["/notification/send", "/getsms/", "/sendemail/"])
def test_a_managed_client_never_sees_the_operators_key(
    path: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    client = managed_vendor_app(make_app, tmp_path).test_client()
    forms = [json.dumps(OPERATOR_KEY)[1:-1], *quoted_forms(OPERATOR_KEY)]
    fake_vendor.next_reply = Reply(
        200,
        quoting_body(forms),
        "text/plain; charset=utf-8",
        headers={
            "X-Echo": quote(OPERATOR_KEY, safe=""),
            # Raw UTF-8 in a header, as a careless upstream writes it (http.server sends it as Latin-1).
            "X-Raw": OPERATOR_KEY.encode().decode("latin-1"),
            "Location": f"/sendsms/?apikey={quote_plus(OPERATOR_KEY)}",
        },
    )
    answer = client.post(path, data={"apikey": CLIENT_KEY, "sid": "s1", "message": "Hi"})
    [got] = fake_vendor.received
    assert got.form[0] == ("apikey", OPERATOR_KEY)  # the vendor did get the key
    shown = answer.get_data(as_text=True) + str(answer.headers)
    for form in forms:
        assert form not in shown
    # Masked, and otherwise kept byte for byte.
    assert answer.get_data() == quoting_body(["***"] * len(forms))
    assert (answer.headers["X-Echo"], answer.headers["X-Raw"]) == ("***", "***")
    # The key the bridge put in the query is not the form caller's to follow with: the pair is gone.
    assert answer.headers["Location"] == "https://bridge.example.test/sendsms/"


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        (
            "/getsms/?apikey={key}&onlyunread=yes",
            f"https://bridge.example.test/getsms/?apikey={CLIENT_KEY}&onlyunread=yes",
        ),
        ("https://smsmobileapi.com/login?apikey={key}", "https://smsmobileapi.com/login?apikey=***"),
    ],
)
def test_a_managed_clients_redirect_carries_its_own_key_back_to_the_bridge_only(
    location: str, shown: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    """Followed, the redirect calls the bridge again with the client's key; another host never gets it."""
    client = managed_vendor_app(make_app, tmp_path).test_client()
    fake_vendor.next_reply = Reply(
        301, b"", headers={"Location": location.format(key=quote_plus(OPERATOR_KEY))}
    )
    answer = client.get("/getsms", query_string=[("apikey", CLIENT_KEY), ("onlyunread", "yes")])
    assert (answer.status_code, answer.headers["Location"]) == (301, shown)


def test_a_bearer_clients_redirect_loses_the_key_the_bridge_added(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    """The client repeats its Bearer header on the redirect: an `apikey=***` beside it would be refused."""
    client = managed_vendor_app(make_app, tmp_path).test_client()
    moved = f"/getsms/?apikey={quote_plus(OPERATOR_KEY)}&onlyunread=yes"
    fake_vendor.next_reply = Reply(301, b"", headers={"Location": moved})
    answer = client.get(
        "/getsms", query_string={"onlyunread": "yes"}, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert answer.headers["Location"] == "https://bridge.example.test/getsms/?onlyunread=yes"


def test_a_send_answer_quoting_the_key_is_masked_for_rest_and_soap(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    client = managed_vendor_app(make_app, tmp_path).test_client()
    result = {"error": 0, "sent": "1", "id": "m-1", "note": f"sent with the key {OPERATOR_KEY}"}
    fake_vendor.next_reply = Reply.json(200, {"result": result})
    rest = client.post(
        "/sendsms/", data={"apikey": CLIENT_KEY, "recipients": "+32470000001", "message": "Hi"}
    )
    assert rest.get_json()["result"]["note"] == "sent with the key ***"
    fake_vendor.next_reply = Reply.json(200, {"result": result})
    soap = client.post("/sendsms/soap/", data=envelope(key=CLIENT_KEY), content_type="text/xml")
    assert b"sent with the key ***</" in soap.get_data()


def test_a_vendor_error_quoting_the_key_is_masked_for_rest_and_soap(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    client = managed_vendor_app(make_app, tmp_path).test_client()
    refusal = {"error": 403, "message": f"API key {OPERATOR_KEY} invalid, expired or unauthorized"}
    fake_vendor.next_reply = Reply.json(403, refusal)
    rest = client.get("/getsms/", query_string={"apikey": CLIENT_KEY})
    assert rest.status_code == 403
    assert rest.get_json()["message"] == "API key *** invalid, expired or unauthorized"
    fake_vendor.next_reply = Reply.json(403, refusal)
    soap = client.post("/sendsms/soap/", data=envelope(key=CLIENT_KEY), content_type="text/xml")
    assert OPERATOR_KEY.encode("utf-8") not in soap.get_data()
    assert html.escape(OPERATOR_KEY).encode() not in soap.get_data()
    assert b"API key *** invalid" in soap.get_data()


def test_in_passthrough_mode_the_callers_own_key_is_not_masked(
    client: FlaskClient, fake_vendor: FakeSmsMobileApi
) -> None:
    fake_vendor.next_reply = Reply.json(200, {"apikey": "vendor-key-1", "ok": True})
    answer = client.post("/notification/send", data={"apikey": "vendor-key-1", "sid": "s", "message": "m"})
    assert answer.get_json() == {"apikey": "vendor-key-1", "ok": True}


def test_a_managed_client_reaches_only_the_vendors_documented_endpoints(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    client = managed_vendor_app(make_app, tmp_path).test_client()
    for path in ("/account/apikey/regenerate/", "/sandbox/inbound", "/getsms/extra/"):
        refused = client.get(path, query_string={"apikey": CLIENT_KEY})
        assert refused.status_code == 403, path
        assert refused.get_json()["result"]["error_code"] == "not_allowed"
    assert fake_vendor.received == []
    for path in ("/call/missed/list/", "/call/missed/list", "/notification/list/", "/getemail/"):
        fake_vendor.next_reply = Reply(200, VENDOR_BODY)
        assert client.get(path, query_string={"apikey": CLIENT_KEY}).get_data() == VENDOR_BODY
    assert [r.path for r in fake_vendor.received] == [
        "/call/missed/list/",
        "/call/missed/list",
        "/notification/list/",
        "/getemail/",
    ]


# --- paths stay inside the configured base (issue 12, item 6) ---------------------------------------------

#: request targets as sent on the wire, each trying to leave the base or to change the URL around the path
ESCAPING_TARGETS = [
    "/x/%2e%2e/%2e%2e/admin",
    "/x%2f..%2f..%2fadmin",
    "/x/../../admin",
    "/x/./admin",
    "/x/%252e%252e/admin",
    "/x%252f..%252fadmin",
    "/x%3Fapikey=stolen",
    "/x%23drop-the-rest",
    "/x%5c..%5cadmin",
    "/x%00y",
    "/x%01y",
    "/x%09y",
    "/x%7f",
]


def raw_get(url: str, target: str) -> tuple[int, dict]:
    """GET `target` exactly as written (no client normalising it), returning the status and the JSON."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


@pytest.mark.parametrize("target", ESCAPING_TARGETS)
def test_a_path_that_could_leave_the_base_is_refused_through_gunicorn(
    target: str, vendor_bridge: Gunicorn, fake_vendor: FakeSmsMobileApi
) -> None:
    status, document = raw_get(vendor_bridge.url, target + "?apikey=vendor-key-1")
    assert (status, document["result"]["error_code"]) == (400, "invalid_parameter"), document
    assert fake_vendor.received == []


@pytest.mark.parametrize(
    ("target", "seen"),
    [
        ("/getsms/", "/base/getsms/"),
        ("/x%20y/caf%C3%A9", "/base/x%20y/caf%C3%A9"),
        ("/a;b,c:d@e", "/base/a;b,c:d@e"),
    ],
)
def test_the_upstream_sees_exactly_the_checked_path(
    target: str, seen: str, vendor_bridge: Gunicorn, fake_vendor: FakeSmsMobileApi
) -> None:
    fake_vendor.next_reply = Reply(200, VENDOR_BODY)
    status, _ = raw_get(vendor_bridge.url, target + "?apikey=vendor-key-1")
    [got] = fake_vendor.received
    assert (status, got.path, got.query) == (200, seen, [("apikey", "vendor-key-1")])


def test_a_mobsms_message_id_cannot_leave_its_path(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms").test_client()
    for guid in ("..", "."):
        answer = client.get(
            "/getsms/set-read/", query_string={"apikey": "mobsms-key-1", "guid_message": guid}
        )
        assert (answer.status_code, answer.get_json()["result"]["error_code"]) == (400, "invalid_parameter")
    assert fake_mobsms.received == []


# --- the upstream's headers (issue 12, item 17) -----------------------------------------------------------


def test_end_to_end_headers_pass_and_hop_by_hop_ones_do_not(
    vendor_bridge: Gunicorn, fake_vendor: FakeSmsMobileApi
) -> None:
    fake_vendor.next_reply = Reply(
        200,
        VENDOR_BODY,
        headers={
            "X-Vendor-Trace": "t-1",
            "ETag": '"v1"',
            "Link": "<https://smsmobileapi.com/docs>; rel=help",
            "Vary": "Accept",
            "Set-Cookie": "PHPSESSID=operator-session; path=/",
            "Keep-Alive": "timeout=5",
            "X-Hop": "named by Connection",
            "Connection": "keep-alive, X-Hop",
            "Alt-Svc": 'h3=":443"',
        },
    )
    answer = requests.get(vendor_bridge.url + "/getsms/", params={"apikey": "vendor-key-1"}, timeout=10)
    assert answer.content == VENDOR_BODY
    assert (answer.headers["X-Vendor-Trace"], answer.headers["ETag"], answer.headers["Vary"]) == (
        "t-1",
        '"v1"',
        "Accept",
    )
    assert answer.headers["Link"] == "<https://smsmobileapi.com/docs>; rel=help"
    for dropped in ("Set-Cookie", "Keep-Alive", "X-Hop", "Alt-Svc"):
        assert dropped not in answer.headers
    # gunicorn's own Date and Server, once each.
    raw = answer.raw.headers
    assert (len(raw.getlist("Date")), len(raw.getlist("Server"))) == (1, 1)


def test_a_vendor_redirect_is_followed_through_the_bridge(
    vendor_bridge: Gunicorn, fake_vendor: FakeSmsMobileApi
) -> None:
    """The vendor's Python module calls /sendsms without the slash and follows the redirect."""
    fake_vendor.next_reply = Reply(
        308, b"", "text/html", headers={"Location": fake_vendor.url + "/base/sendsms/"}
    )
    answer = requests.post(
        vendor_bridge.url + "/sendsms",
        data={"apikey": "vendor-key-1", "recipients": "+32470000001", "message": "Hi"},
        timeout=10,
    )
    assert [r.status_code for r in answer.history] == [308]
    assert answer.history[0].headers["Location"] == vendor_bridge.url + "/sendsms/"
    assert [r.path for r in fake_vendor.received] == ["/base/sendsms", "/base/sendsms/"]
    assert answer.status_code == 404  # the fake knows /sendsms/ only at its root: the second call was made


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("{vendor}/base/getsms/?x=1#f", "https://bridge.example.test/getsms/?x=1#f"),
        ("/base/log/sent/sms/", "https://bridge.example.test/log/sent/sms/"),
        ("getsms/", "https://bridge.example.test/getsms/"),
        ("/elsewhere", "{vendor}/elsewhere"),
        ("https://smsmobileapi.com/pricing", "https://smsmobileapi.com/pricing"),
    ],
)
def test_a_redirect_on_the_vendors_base_points_at_the_bridge(
    location: str, shown: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi", smsmobileapi_url=fake_vendor.url + "/base").test_client()
    fake_vendor.next_reply = Reply(301, b"", headers={"Location": location.format(vendor=fake_vendor.url)})
    answer = client.get("/getsms", query_string={"apikey": "vendor-key-1"})
    assert answer.status_code == 301
    assert answer.headers["Location"] == shown.format(vendor=fake_vendor.url)


def test_a_gzip_answer_is_handed_on_decoded_and_masked(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    client = managed_vendor_app(make_app, tmp_path).test_client()
    body = json.dumps({"apikey": OPERATOR_KEY}).encode()
    fake_vendor.next_reply = Reply(200, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    answer = client.get("/getsms/", query_string={"apikey": CLIENT_KEY})
    assert "Content-Encoding" not in answer.headers
    assert answer.get_json() == {"apikey": "***"}


def test_a_managed_client_follows_a_vendor_redirect_through_gunicorn(
    fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    """Apache-style `/sendsms` -> `/sendsms/` keeps the query: the client gets its own key back."""
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f'[clients.shop]\nkey_sha256 = ["{hash_key(CLIENT_KEY)}"]\nbackend = "smsmobileapi"\n'
        'upstream_key = "vendor-key-1"\n'
    )
    bridge = Gunicorn(
        {
            "SMSBRIDGE_SMSMOBILEAPI_URL": fake_vendor.url,
            "SMSBRIDGE_CLIENTS_FILE": str(clients),
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
        },
        tmp_path / "gunicorn.log",
    )
    query = {"recipients": "+32470000001", "message": "Hi"}
    fake_vendor.next_reply = Reply(
        301, b"", headers={"Location": f"{fake_vendor.url}/sendsms/?apikey=vendor-key-1&{urlencode(query)}"}
    )
    try:
        answer = requests.get(bridge.url + "/sendsms", params={"apikey": CLIENT_KEY, **query}, timeout=10)
    finally:
        bridge.stop()
    assert answer.json()["result"]["sent"] == "1", answer.text
    [redirect] = answer.history
    assert redirect.headers["Location"] == f"{bridge.url}/sendsms/?apikey={CLIENT_KEY}&{urlencode(query)}"
    assert [(r.path, dict(r.query)["apikey"]) for r in fake_vendor.received] == [
        ("/sendsms", "vendor-key-1"),
        ("/sendsms/", "vendor-key-1"),
    ]
    for seen in (redirect, answer):
        assert "vendor-key-1" not in seen.text + str(seen.headers)
