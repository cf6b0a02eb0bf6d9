"""The REST front: `/sendsms/` in every way clients call it, on every backend, and its failures."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug.datastructures import MultiDict

from app.fronts.smsmobileapi.dialect import RESULT_FIELDS
from tests.harness.bridge import GOOD_KEY
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.net import closed_port_url

TO = "+32470000001"


def result_of(response) -> dict:
    """Return `result` from a dialect answer, checking it is JSON (never HTML)."""
    assert response.content_type.startswith("application/json"), response.get_data(as_text=True)[:200]
    return response.get_json()["result"]


# --- success, each way of calling, each backend ---------------------------------------------------

CALLS = {
    "GET /sendsms/": lambda c, key: c.get(
        "/sendsms/", query_string={"apikey": key, "recipients": TO, "message": "Hi"}
    ),
    "GET /sendsms": lambda c, key: c.get(
        "/sendsms", query_string={"apikey": key, "recipients": TO, "message": "Hi"}
    ),
    "POST form": lambda c, key: c.post("/sendsms/", data={"apikey": key, "recipients": TO, "message": "Hi"}),
    "POST multipart": lambda c, key: c.post(
        "/sendsms/",
        data={"apikey": key, "recipients": TO, "message": "Hi"},
        content_type="multipart/form-data",
    ),
    "POST query (Odoo)": lambda c, key: c.post(
        "/sendsms/", query_string={"apikey": key, "recipients": TO, "message": "Hi", "from": "odoo"}
    ),
    "POST query + form": lambda c, key: c.post(
        "/sendsms/",
        query_string={"apikey": key},
        data={"recipients": TO, "message": "Hi", "from": "composer"},
    ),
    "POST JSON (axios)": lambda c, key: c.post(
        "/sendsms/", json={"apikey": key, "recipients": TO, "message": "Hi"}
    ),
    "Bearer": lambda c, key: c.post(
        "/sendsms", data={"recipients": TO, "message": "Hi"}, headers={"Authorization": f"Bearer {key}"}
    ),
}


@pytest.mark.parametrize("call", CALLS)
def test_every_way_of_calling_sends_one_sms(
    call: str,
    backend: str,
    make_app: Callable[..., Flask],
    fake_vendor: FakeSmsMobileApi,
    fake_mobsms: FakeMobsms,
) -> None:
    app = make_app(backend)
    response = CALLS[call](app.test_client(), GOOD_KEY[backend])

    assert response.status_code == 200
    result = result_of(response)
    assert result["sent"] == "1"
    assert str(result["error"]) == "0"
    assert set(RESULT_FIELDS) <= set(result)
    if backend == "sandbox":
        assert re.fullmatch(r"[0-9a-f]{40}", result["id"])
        [row] = app.extensions["smsbridge"].backend.sent(GOOD_KEY[backend])
        assert (row["guid"], row["recipient"], row["message"]) == (result["id"], TO, "Hi")
    elif backend == "mobsms":
        [got] = fake_mobsms.received
        assert (got.method, got.path) == ("POST", "/api/sms")
        assert got.headers["authorization"] == "Bearer mobsms-key-1"
        assert got.json == {"message": "Hi", "recipient_number": TO}
        assert result["id"] == fake_mobsms.queued[0]["message_id"]
    else:
        [got] = fake_vendor.received
        assert fake_vendor.received[0].path == response.request.path
        assert got.method == response.request.method
        assert result["vendor_field_added_tomorrow"] == {"kept": True}
        if call == "POST JSON (axios)":
            # A JSON body is not a form: it is forwarded byte for byte, key and all.
            assert got.headers["content-type"] == "application/json"
            assert got.json == {"apikey": "vendor-key-1", "recipients": TO, "message": "Hi"}


def test_passthrough_forwards_the_call_as_made_and_returns_the_answer_byte_for_byte(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi").test_client()
    # Odd spacing, escapes and an unknown field: what the vendor sends is what the caller gets.
    body = b'{"result" : {"error":0,"sent":"1","id":"c319d3b3","note":"sent by \\u00e9 mobile","new":[1]}}\n'
    fake_vendor.next_reply = Reply(200, body, "application/json; charset=utf-8")
    response = client.post(
        "/sendsms",
        query_string=[("apikey", "vendor-key-1"), ("from", "odoo")],
        data=MultiDict(
            [
                ("recipients", f"{TO},+32470000002"),
                ("message", "Héllo"),
                ("port", "2"),
                ("from", "composer"),
            ]
        ),
    )
    [got] = fake_vendor.received
    assert (got.method, got.path) == ("POST", "/sendsms")
    assert got.query == [("apikey", "vendor-key-1"), ("from", "odoo")]
    assert got.form == [
        ("recipients", f"{TO},+32470000002"),
        ("message", "Héllo"),
        ("port", "2"),
        ("from", "composer"),
    ]
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in got.headers
    assert response.status_code == 200
    assert response.content_type == "application/json; charset=utf-8"
    assert response.get_data() == body


def test_passthrough_keeps_a_bearer_token_in_the_header(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi").test_client()
    client.get(
        "/sendsms/",
        query_string={"recipients": TO, "message": "Hi"},
        headers={"Authorization": "Bearer vendor-token-1"},
    )
    [got] = fake_vendor.received
    assert got.headers["authorization"] == "Bearer vendor-token-1"
    assert got.query == [("recipients", TO), ("message", "Hi")]


def test_passthrough_returns_the_vendors_failures_unchanged(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi").test_client()
    refused = client.get("/sendsms/", query_string={"apikey": "nope", "recipients": TO, "message": "Hi"})
    assert refused.status_code == 403
    assert refused.get_json() == {"error": 403, "message": "API key invalid, expired or unauthorized"}

    fake_vendor.next_reply = Reply.json(429, {"error": 429, "message": "slow down"}, **{"Retry-After": "7"})
    limited = client.get(
        "/sendsms/", query_string={"apikey": "vendor-key-1", "recipients": TO, "message": "Hi"}
    )
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.get_json() == {"error": 429, "message": "slow down"}


# --- every documented parameter ---------------------------------------------------------------------

ALL_OPTIONS = {
    "port": "1",
    "shorturl": "1",
    "sIdentifiant": "phone-7",
    "sendwa": "1",
    "sendsms": "1",
    "encrypt_message": "yes",
    "schedule_timestamp": "1893456000",
    "waonly": "",
    "url_media": "https://example.org/a.pdf",
    "pdf_with_image": "yes",
    "url_media_shorted": "yes",
}


def test_sandbox_honours_every_send_parameter(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox")
    params = {"apikey": "k", "recipients": TO, "message": "Hi", "from": "composer", **ALL_OPTIONS}
    result = result_of(app.test_client().get("/sendsms/", query_string=params))
    assert result["sent"] == "1"
    assert result["port"] == 1
    assert result["send_with_whatsapp"] == "1"
    assert result["encrypted"] == {"status": "1"}
    assert "scheduled" in result["note"]
    [row] = app.extensions["smsbridge"].backend.sent("k")
    assert (row["port"], row["sidentifiant"], row["via_sms"], row["via_whatsapp"]) == ("1", "phone-7", 1, 1)
    assert (row["encrypted"], row["shorturl"], row["schedule_timestamp"]) == (1, 1, 1893456000)
    assert row["url_media"] == "https://example.org/a.pdf"


def test_sandbox_whatsapp_only(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox")
    result = result_of(
        app.test_client().get(
            "/sendsms",
            query_string={"apikey": "k", "recipients": "191728660", "message": "Hi", "waonly": "yes"},
        )
    )
    assert result["send_with_whatsapp"] == "1"
    assert result["note"].startswith("sent by WhatsApp")
    [row] = app.extensions["smsbridge"].backend.sent("k")
    assert (row["via_sms"], row["via_whatsapp"]) == (0, 1)


def test_passthrough_forwards_every_parameter_verbatim(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    params = [
        ("apikey", "vendor-key-1"),
        ("recipients", TO),
        ("message", "Hi"),
        *ALL_OPTIONS.items(),
        ("from", "composer"),
    ]
    make_app("smsmobileapi").test_client().get("/sendsms/", query_string=params)
    assert fake_vendor.received[0].query == params


def test_mobsms_maps_sidentifiant_to_device_id(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms").test_client()
    result = result_of(
        client.get(
            "/sendsms/",
            query_string={
                "apikey": "mobsms-key-1",
                "recipients": "0032470000001",
                "message": "Hi",
                "sIdentifiant": "abc123",
                "port": "",
                "shorturl": "0",
                "sendsms": "1",
                "sendwa": "0",
                "from": "composer",
            },
        )
    )
    assert result["sent"] == "1"
    assert fake_mobsms.received[0].json == {"message": "Hi", "recipient_number": TO, "device_id": "abc123"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sendwa", "1"),
        ("waonly", "yes"),
        ("url_media", "https://example.org/a.pdf"),
        ("pdf_with_image", "yes"),
        ("url_media_shorted", "yes"),
        ("port", "2"),
        ("encrypt_message", "yes"),
        ("shorturl", "1"),
        ("schedule_timestamp", "1893456000"),
        ("sendsms", "0"),
    ],
)
def test_mobsms_refuses_what_it_cannot_honour_by_name(
    name: str, value: str, make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    response = (
        make_app("mobsms")
        .test_client()
        .get(
            "/sendsms/",
            query_string={"apikey": "mobsms-key-1", "recipients": TO, "message": "Hi", name: value},
        )
    )
    assert response.status_code == 400
    result = result_of(response)
    assert (result["error"], result["error_code"], result["sent"]) == (14, "unsupported_by_backend", "0")
    assert f"{name} (" in result["note"]
    assert fake_mobsms.received == []


# --- several recipients -----------------------------------------------------------------------------------


def test_several_recipients_are_each_sent(
    backend: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms
) -> None:
    app = make_app(backend)
    numbers = [TO, "+32470000002", "+32470000003"]
    response = app.test_client().post(
        "/sendsms/",
        data={"apikey": GOOD_KEY[backend], "recipients": " , ".join(numbers) + ",", "message": "Hi {name}"},
    )
    result = result_of(response)
    assert result["sent"] == "1"
    if backend == "sandbox":
        rows = app.extensions["smsbridge"].backend.sent(GOOD_KEY[backend])
        assert [r["recipient"] for r in rows] == numbers
        assert result["ids"] == [r["guid"] for r in rows]
        assert result["id"] == rows[0]["guid"]
    elif backend == "mobsms":
        [got] = fake_mobsms.received
        assert got.path == "/api/sms/bulk"
        # A literal "{name}" survives mobsms's personalisation.
        assert got.json == {
            "message": "Hi {name}",
            "recipients": [{"number": n, "name": "{name}"} for n in numbers],
        }
        assert result["ids"] == [m["message_id"] for m in fake_mobsms.queued]
    else:
        assert dict(fake_vendor.received[0].form)["recipients"] == " , ".join(numbers) + ","


def test_mobsms_bulk_without_placeholders_sends_plain_numbers(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    make_app("mobsms").test_client().get(
        "/sendsms/",
        query_string={
            "apikey": "mobsms-key-1",
            "recipients": "32470000001,+32 470 00 00 02",
            "message": "Hi",
        },
    )
    assert fake_mobsms.received[0].json == {"message": "Hi", "recipients": [TO, "+32470000002"]}


# --- failures ---------------------------------------------------------------------------------------------

MISSING = {
    "apikey": {"recipients": TO, "message": "Hi"},
    "recipients": {"apikey": "k", "message": "Hi"},
    "message": {"apikey": "k", "recipients": TO},
    "recipients (only commas)": {"apikey": "k", "recipients": " , ,", "message": "Hi"},
    "apikey (empty)": {"apikey": "", "recipients": TO, "message": "Hi"},
}


@pytest.mark.parametrize("missing", MISSING)
def test_a_missing_parameter_is_a_400_in_the_dialect_and_nothing_is_sent(
    missing: str,
    backend: str,
    make_app: Callable[..., Flask],
    fake_vendor: FakeSmsMobileApi,
    fake_mobsms: FakeMobsms,
) -> None:
    app = make_app(backend)
    response = app.test_client().get("/sendsms/", query_string=MISSING[missing])
    assert response.status_code == 400
    document = response.get_json()
    result = result_of(response)
    assert (result["error"], result["error_code"], result["sent"]) == (10, "missing_parameter", "0")
    assert result["note"].startswith(missing.split()[0] + " is missing")
    assert (document["error"], document["message"]) == (10, result["note"])
    assert fake_vendor.received == [] and fake_mobsms.received == []


def test_a_refused_key_is_a_403(backend: str, make_app: Callable[..., Flask]) -> None:
    app = make_app(backend, sandbox_api_keys=frozenset({"sandbox-key-1"}))
    response = app.test_client().get(
        "/sendsms/", query_string={"apikey": "wrong-key", "recipients": TO, "message": "Hi"}
    )
    assert response.status_code == 403
    if backend == "smsmobileapi":
        assert response.get_json()["message"] == "API key invalid, expired or unauthorized"
    else:
        result = result_of(response)
        assert (result["error"], result["error_code"], result["sent"]) == (20, "key_refused", "0")
        assert "wrong-key" not in response.get_data(as_text=True)


@pytest.mark.parametrize("backend_name", ["smsmobileapi", "mobsms"])
def test_an_unreachable_backend_is_a_502_that_says_nothing_was_sent(
    backend_name: str, make_app: Callable[..., Flask]
) -> None:
    url = closed_port_url()
    app = make_app(backend_name, smsmobileapi_url=url, mobsms_url=url)
    response = app.test_client().get(
        "/sendsms/", query_string={"apikey": GOOD_KEY[backend_name], "recipients": TO, "message": "Hi"}
    )
    assert response.status_code == 502
    result = result_of(response)
    assert (result["error"], result["error_code"], result["sent"]) == (31, "backend_unreachable", "0")
    assert "refused the connection; nothing was sent" in result["note"]
    assert str(url.rsplit(":", 1)[1]) not in result["note"]


def test_mobsms_without_an_active_device_answers_200_with_an_error(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    fake_mobsms.no_device = True
    response = (
        make_app("mobsms")
        .test_client()
        .get("/sendsms/", query_string={"apikey": "mobsms-key-1", "recipients": TO, "message": "Hi"})
    )
    assert response.status_code == 200
    result = result_of(response)
    assert (result["error"], result["error_code"], result["sent"]) == (30, "no_device_available", "0")
    assert result["note"] == "mobsms has no active device to send from; nothing was sent"


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (Reply(503, b"<html><body>Service Unavailable</body></html>", "text/html"), 502, "backend_failed"),
        (Reply.json(429, {"message": "Too Many Attempts."}, **{"Retry-After": "30"}), 429, "rate_limited"),
        (Reply.json(403, {"success": False, "message": "Premium only", "upgrade": True}), 403, "not_allowed"),
        (Reply(201, b'{"success": true, "data": {"id": 1', "application/json"), 502, "backend_bad_json"),
        (Reply.json(201, {"success": True, "data": {"status": "pending"}}), 502, "backend_unexpected_answer"),
        (
            Reply.json(
                422, {"message": "The recipient number is invalid.", "errors": {"recipient_number": ["bad"]}}
            ),
            400,
            "invalid_parameter",
        ),
    ],
)
def test_mobsms_answers_are_translated_into_the_dialect(
    reply: Reply, status: int, code: str, make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    fake_mobsms.next_reply = reply
    response = (
        make_app("mobsms")
        .test_client()
        .get("/sendsms/", query_string={"apikey": "mobsms-key-1", "recipients": TO, "message": "Hi"})
    )
    assert response.status_code == status
    result = result_of(response)
    assert (result["error_code"], result["sent"]) == (code, "0")
    assert "<html" not in result["note"]
    if code == "rate_limited":
        assert response.headers["Retry-After"] == "30"
    if code == "invalid_parameter":
        assert "recipient_number: bad" in result["note"]
    if code in ("backend_bad_json", "backend_unexpected_answer", "backend_failed"):
        # The message may have been sent: the answer says so and gives a reference to check later.
        assert "may have been sent" in result["note"]
        assert result["reference"] == response.headers["X-Request-ID"]
    else:
        assert "reference" not in result
    assert len(fake_mobsms.received) == 1


@pytest.mark.parametrize(
    ("recipients", "named"),
    [("0470123456", "national number"), ("+32abc", "not a phone number"), ("+0123456789", "E.164")],
)
def test_mobsms_refuses_numbers_it_cannot_take_by_name(
    recipients: str, named: str, make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    response = (
        make_app("mobsms")
        .test_client()
        .get(
            "/sendsms/",
            query_string={"apikey": "mobsms-key-1", "recipients": f"{TO},{recipients}", "message": "Hi"},
        )
    )
    assert response.status_code == 400
    result = result_of(response)
    assert result["error_code"] == "invalid_recipient"
    assert repr(recipients) in result["note"] and named in result["note"]
    assert fake_mobsms.received == []


def test_mobsms_receives_national_numbers_in_e164_with_a_default_region(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms", default_region="BE").test_client()
    one = client.get(
        "/sendsms/", query_string={"apikey": "mobsms-key-1", "recipients": "0470 00 00 01", "message": "Hi"}
    )
    assert result_of(one)["sent"] == "1"
    bulk = client.post(
        "/sendsms/",
        data={
            "apikey": "mobsms-key-1",
            "recipients": "0470 00.00.02,0032 470 00 00 03,32470000004,+32 (0)470 00 00 05",
            "message": "Hi",
        },
    )
    assert result_of(bulk)["sent"] == "1"
    assert [r.json for r in fake_mobsms.received] == [
        {"message": "Hi", "recipient_number": TO},
        {"message": "Hi", "recipients": ["+32470000002", "+32470000003", "+32470000004", "+32470000005"]},
    ]


@pytest.mark.parametrize(
    ("recipients", "named"),
    [
        # The national 0 kept after the country code once reached mobsms as +320470000001: a wrong number.
        ("+32 (0)470 00 00 01", None),
        # A number of a possible length in no allocated range once reached mobsms, which then failed it.
        ("+1 555 0100 000", "no +1 number is allocated"),
        ("0470 00 00 01", "SMSBRIDGE_DEFAULT_REGION"),
    ],
)
def test_mobsms_never_receives_a_number_that_is_not_valid_e164(
    recipients: str, named: str | None, make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    response = (
        make_app("mobsms")
        .test_client()
        .get("/sendsms/", query_string={"apikey": "mobsms-key-1", "recipients": recipients, "message": "Hi"})
    )
    if named is None:
        assert result_of(response)["sent"] == "1"
        assert [r.json["recipient_number"] for r in fake_mobsms.received] == [TO]
    else:
        assert response.status_code == 400
        result = result_of(response)
        assert result["error_code"] == "invalid_recipient"
        assert repr(recipients) in result["note"] and named in result["note"]
        assert fake_mobsms.received == []


def test_passthrough_sends_recipients_as_written_whatever_the_default_region(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    recipients = "0470 00 00 01, 32470000002,+32 (0)470 00 00 03"
    client = make_app("smsmobileapi", default_region="BE").test_client()
    response = client.post(
        "/sendsms/", data={"apikey": "vendor-key-1", "recipients": recipients, "message": "Hi"}
    )
    assert result_of(response)["sent"] == "1"
    assert dict(fake_vendor.received[0].form)["recipients"] == recipients


def test_mobsms_refuses_a_message_over_1600_characters(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms").test_client()
    ok = client.post("/sendsms/", data={"apikey": "mobsms-key-1", "recipients": TO, "message": "€" * 1600})
    assert result_of(ok)["sent"] == "1"
    too_long = client.post(
        "/sendsms/", data={"apikey": "mobsms-key-1", "recipients": TO, "message": "€" * 1601}
    )
    assert too_long.status_code == 400
    assert result_of(too_long)["error_code"] == "message_too_long"
    assert len(fake_mobsms.received) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [("port", "3"), ("schedule_timestamp", "tomorrow"), ("sendwa", "true"), ("url_media", "http://x/a.png")],
)
def test_sandbox_refuses_invalid_option_values_by_name(
    name: str, value: str, make_app: Callable[..., Flask]
) -> None:
    response = (
        make_app("sandbox")
        .test_client()
        .get("/sendsms/", query_string={"apikey": "k", "recipients": TO, "message": "Hi", name: value})
    )
    assert response.status_code == 400
    result = result_of(response)
    assert result["error_code"] == "invalid_parameter"
    assert result["note"].startswith(name)


def test_errors_outside_sendsms_are_in_the_dialect_too(make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox", max_body_bytes=4096).test_client()
    not_found = client.get("/nope/")
    assert not_found.status_code == 404
    assert result_of(not_found)["error_code"] == "not_found"
    not_allowed = client.put("/sendsms/")
    assert not_allowed.status_code == 405
    assert result_of(not_allowed)["error_code"] == "method_not_allowed"
    too_big = client.post("/sendsms/", data={"apikey": "k", "recipients": TO, "message": "x" * 5000})
    assert too_big.status_code == 413
    assert result_of(too_big)["error_code"] == "body_too_large"


def test_an_unexpected_error_is_a_json_500_without_a_traceback(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app("sandbox")

    def broken(request: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["smsbridge"].backend, "send", broken)
    response = app.test_client().get(
        "/sendsms/", query_string={"apikey": "secret-key", "recipients": TO, "message": "Hi"}
    )
    assert response.status_code == 500
    result = result_of(response)
    assert result["error_code"] == "internal_error"
    assert "Traceback" not in response.get_data(as_text=True)
    assert "boom" not in response.get_data(as_text=True)
    assert "RuntimeError: boom" in caplog.text
    assert "secret-key" not in caplog.text
