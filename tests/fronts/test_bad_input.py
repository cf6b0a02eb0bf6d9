"""Bad input on every front: answered in the caller's dialect, with nothing sent, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.fronts.smsmobileapi.dialect import RESULT_FIELDS
from app.fronts.webhook_sources import source_urls
from tests.harness.bridge import BACKENDS, GOOD_KEY
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn
from tests.harness.soap import envelope, fault_of

TO = "+32470000001"


def sent_upstream(fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms) -> int:
    return len(fake_vendor.received) + len(fake_mobsms.received)


def test_invalid_utf8_is_refused_by_name(
    backend: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms
) -> None:
    client = make_app(backend).test_client()
    in_query = client.get(f"/sendsms/?apikey={GOOD_KEY[backend]}&recipients=%2B32470000001&message=caf%E9%FF")
    in_form = client.post(
        "/sendsms/",
        data=f"apikey={GOOD_KEY[backend]}&recipients=%2B32470000001&message=%C3%28".encode(),
        content_type="application/x-www-form-urlencoded",
    )
    for answer, where in ((in_query, "query string"), (in_form, "form body")):
        assert answer.status_code == 400
        assert answer.get_json()["result"]["note"] == f"message in the {where} is not valid UTF-8"
    assert sent_upstream(fake_vendor, fake_mobsms) == 0


def test_non_numeric_port_and_schedule_are_refused_on_every_backend(
    backend: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms
) -> None:
    client = make_app(backend).test_client()
    for name, value in (("port", "one"), ("schedule_timestamp", "tomorrow"), ("port", "\uff11")):
        answer = client.get(
            "/sendsms/",
            query_string={"apikey": GOOD_KEY[backend], "recipients": TO, "message": "Hi", name: value},
        )
        assert answer.status_code == 400
        assert answer.get_json()["result"]["note"].startswith(f"{name}=")
    assert sent_upstream(fake_vendor, fake_mobsms) == 0


def test_too_many_recipients_and_too_long_a_query(
    backend: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms
) -> None:
    client = make_app(backend).test_client()
    crowd = ",".join(f"+3247{n:07d}" for n in range(501))
    many = client.post("/sendsms/", data={"apikey": GOOD_KEY[backend], "recipients": crowd, "message": "Hi"})
    assert many.status_code == 400
    assert many.get_json()["result"]["note"] == "501 recipients: one send takes at most 500"
    long = client.get(
        "/sendsms/", query_string={"apikey": GOOD_KEY[backend], "recipients": TO, "message": "x" * 8000}
    )
    assert long.status_code == 414
    assert long.get_json()["result"]["error_code"] == "uri_too_long"
    assert sent_upstream(fake_vendor, fake_mobsms) == 0


def test_a_long_query_string_gets_the_dialects_414_through_gunicorn(tmp_path: Path) -> None:
    bridge = Gunicorn({"SMSBRIDGE_DATA_DIR": str(tmp_path)}, tmp_path / "gunicorn.log")
    try:
        answer = requests.get(
            bridge.url + "/sendsms/",
            params={"apikey": "k", "recipients": TO, "message": "x" * 8000},
            timeout=10,
        )
    finally:
        bridge.stop()
    assert answer.status_code == 414
    assert answer.json()["result"]["error_code"] == "uri_too_long"


NAMES = st.sampled_from(
    [
        "apikey",
        "recipients",
        "message",
        *RESULT_FIELDS,
        "port",
        "sendwa",
        "waonly",
        "url_media",
        "schedule_timestamp",
        "sIdentifiant",
        "from",
        "idempotency_key",
        "guid",
        "x",
    ]
)
VALUES = st.one_of(
    st.text(max_size=40), st.sampled_from(["", "1", "0", "yes", "+32470000001", "0032 470", "-1"])
)
PATHS = st.sampled_from(
    [
        "/sendsms/",
        "/getsms/",
        "/log/sent/sms/",
        "/resend/",
        "/deletesms/",
        "/conversation/sms/list/",
        "/gateway/mobile/list/",
        "/getwa/",
        "/whatsapp/checknumber/",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, params=st.dictionaries(NAMES, VALUES, max_size=8), post=st.booleans())
def test_no_input_gets_a_500_or_a_traceback(
    make_app: Callable[..., Flask], path: str, params: dict[str, str], post: bool
) -> None:
    for backend in BACKENDS:
        client = _clients(make_app)[backend]
        answer = client.post(path, data=params) if post else client.get(path, query_string=params)
        assert answer.status_code < 500 or answer.status_code in (502, 504), (
            backend,
            answer.get_data()[:300],
        )
        text = answer.get_data(as_text=True)
        assert "Traceback" not in text and "<html" not in text.lower()
        assert answer.content_type.startswith("application/json")


_CLIENTS: dict = {}


def _clients(make_app: Callable[..., Flask]) -> dict:
    if not _CLIENTS:
        _CLIENTS.update({b: make_app(b, rate_limit="1000000/minute").test_client() for b in BACKENDS})
    return _CLIENTS


# --- issue 12, item 7: bad bodies and headers, answered in the dialect (through gunicorn as well:
# tests/fronts/test_bad_input_gunicorn.py) -------------------------------------------------------------------

DEEP_JSON = b'{"apikey": "k", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
DEEP_OBJECT = b'{"a": ' * 5000 + b"1" + b"}" * 5000


@pytest.mark.parametrize(
    "body",
    [DEEP_JSON, DEEP_OBJECT, b'{"apikey": "k", "message": "cut sh'],
    ids=["deep-array", "deep-object", "cut-short"],
)
def test_json_that_does_not_parse_is_the_dialects_400_on_every_json_endpoint(
    body: bytes,
    make_app: Callable[..., Flask],
    fake_vendor: FakeSmsMobileApi,
    fake_mobsms: FakeMobsms,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for backend in BACKENDS:
        client = _clients(make_app)[backend]
        for path in ("/sendsms/", "/getsms/", "/log/sent/sms/", "/resend/", "/oauth2/token", "/deletesms/"):
            answer = client.post(path, data=body, content_type="application/json")
            assert answer.status_code == 400, (backend, path, answer.get_data()[:300])
            assert answer.content_type.startswith("application/json")
            document = answer.get_json()
            # /oauth2/token answers in OAuth's own words (RFC 6749 5.2) when the bridge issues the tokens
            assert document.get("error") in (11, "invalid_request"), (backend, path, document)
    assert sent_upstream(fake_vendor, fake_mobsms) == 0
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_signed_webhook_body_nested_too_deep_is_the_dialects_400(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app("mobsms")
    url = urlsplit(source_urls(app.extensions["smsbridge"], "default")["mobsms"])
    answer = app.test_client().post(
        f"{url.path}?{url.query}", data=DEEP_OBJECT, content_type="application/json"
    )
    assert answer.status_code == 400
    assert answer.get_json()["result"]["error_code"] == "invalid_parameter"
    assert "Traceback" not in caplog.text


MTOM_ENVELOPE = envelope(key=GOOD_KEY["sandbox"])


def _mtom(part_headers: str) -> bytes:
    return (
        f"--b\r\n{part_headers}\r\n\r\n{MTOM_ENVELOPE}\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        "\r\nxx\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            _mtom('Content-Type: application/xop+xml; charset=x-nope; type="text/xml"\r\nContent-ID: <r>'),
            'multipart/related; type="application/xop+xml"; boundary=b; start="<r>"; start-info="text/xml"',
        ),
        (
            _mtom('Content-Type: application/xop+xml; charset=utf-8; type="text/xml"'),
            'multipart/related; type="application/xop+xml"; boundary=b; start="<r>"',
        ),
        (_mtom("Content-Type: text/xml; charset=utf-8\r\nContent-ID: <r>"), "multipart/related; boundary=b"),
        (MTOM_ENVELOPE.encode(), "multipart/related; boundary=b; charset=x-nope"),
        (MTOM_ENVELOPE.encode(), "multipart/related"),
        (MTOM_ENVELOPE.encode(), "multipart/form-data; boundary=b"),
    ],
    ids=[
        "mtom-unknown-charset",
        "mtom-part-without-content-id",
        "swa",
        "bare-envelope-as-multipart",
        "multipart-without-boundary",
        "form-data",
    ],
)
def test_mtom_and_multipart_soap_calls_are_client_faults(
    body: bytes, content_type: str, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app("sandbox")
    answer = app.test_client().post("/sendsms/soap/", data=body, headers={"Content-Type": content_type})
    code, string = fault_of(answer)
    assert code == "soap11env:Client.UnsupportedMediaType", string
    assert app.extensions["smsbridge"].backend.sent(GOOD_KEY["sandbox"]) == []
    assert "Traceback" not in caplog.text


# --- issue 12, item 15: a refused key is the same SOAP fault on every backend -------------------------

REFUSALS = {
    # the vendor's "documented application error" with 200 (its OpenAPI), as the audit saw it
    "200-error-1-not-authorized": Reply.json(
        200,
        {
            "result": {
                "error": "1",
                "sent": "0",
                "id": "",
                "note": "API key invalid",
                "iac_control": "1",
                "iac_authorized": "0",
                "send_with_whatsapp": "0",
            }
        },
    ),
    "200-error-1-key-in-the-note": Reply.json(
        200, {"result": {"error": 1, "sent": "0", "note": "Invalid or expired API key"}}
    ),
    "403": Reply.json(403, {"error": 403, "message": "API key invalid, expired or unauthorized"}),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refused_key_over_soap_is_client_key_refused_on_every_backend(
    refusal: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    codes = {}
    for backend in BACKENDS:
        overrides = {"sandbox_api_keys": frozenset({GOOD_KEY["sandbox"]})} if backend == "sandbox" else {}
        client = make_app(backend, **overrides).test_client()
        fake_vendor.next_reply = REFUSALS[refusal] if backend == "smsmobileapi" else None
        answer = client.post("/sendsms/soap/", data=envelope(key="wrong-key"), content_type="text/xml")
        codes[backend] = fault_of(answer)[0]
    assert codes == dict.fromkeys(BACKENDS, "soap11env:Client.KeyRefused")


def test_a_refusal_with_200_reaches_a_rest_caller_unchanged_and_a_soap_caller_as_a_fault(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi").test_client()
    credit = Reply.json(200, {"result": {"error": "2", "sent": "0", "id": "", "note": "no credit left"}})
    fake_vendor.next_reply = credit
    rest = client.post("/sendsms/", data={"apikey": "vendor-key-1", "recipients": TO, "message": "Hi"})
    assert (rest.status_code, rest.get_data()) == (200, credit.body)
    fake_vendor.next_reply = credit
    code, string = fault_of(
        client.post("/sendsms/soap/", data=envelope(key="vendor-key-1"), content_type="text/xml")
    )
    assert code == "soap11env:Client.Error"
    assert string == "SMSMobileAPI refused the request: no credit left"
    # a send the vendor took is still a result
    answer = client.post("/sendsms/soap/", data=envelope(key="vendor-key-1"), content_type="text/xml")
    assert answer.status_code == 200
    assert b"<tns:sent>1</tns:sent>" in answer.get_data()


def test_json_nesting_is_refused_past_the_same_depth_on_every_python() -> None:
    """3.11's parser fails on deep nesting, 3.12 and later read it: the bridge's own limit decides."""
    from app.fronts.smsmobileapi.dialect import MAX_JSON_DEPTH, parse_json

    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    assert parse_json('{"a": ' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH) is not None
    for deep in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "[" * 5000 + "]" * 5000):
        with pytest.raises(ValueError, match="nested"):
            parse_json(deep)
