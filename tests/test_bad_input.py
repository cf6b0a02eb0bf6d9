"""Bad input on every front: answered in the caller's dialect, with nothing sent, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.fronts.dialect import RESULT_FIELDS
from tests.conftest import BACKENDS, GOOD_KEY
from tests.fakes.mobsms import FakeMobsms
from tests.fakes.smsmobileapi import FakeSmsMobileApi
from tests.test_gunicorn import Gunicorn

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
