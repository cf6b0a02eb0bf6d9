"""The request log, read from a real gunicorn's output: one JSON line per request, and no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import zeep

from app.fronts import request_log
from app.fronts.request_log import mask_number
from app.service import context
from tests.harness.bridge import UNICODE_TEXT
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.gunicorn import Gunicorn, log_lines

KEY = "mobsms-key-1"
SECRET_TEXT = "the code is 482913, tell nobody"


def run_bridge(fake_mobsms: FakeMobsms, tmp_path: Path, **env: str) -> Gunicorn:
    return Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "mobsms",
            "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
            **env,
        },
        tmp_path / "gunicorn.log",
    )


def test_one_line_per_request_with_what_an_on_call_engineer_needs(
    fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    bridge = run_bridge(fake_mobsms, tmp_path)
    try:
        sent = requests.get(
            bridge.url + "/sendsms/",
            params={"apikey": KEY, "recipients": "+32470000001,+32470000002", "message": SECRET_TEXT},
            headers={"X-Request-ID": "order-42.attempt-1", "X-Forwarded-For": "198.51.100.9"},
            timeout=10,
        )
        assert sent.headers["X-Request-ID"] == "order-42.attempt-1"
        refused = requests.post(
            bridge.url + "/sendsms",
            data={"apikey": "wrong-key", "recipients": "+32470000009", "message": "x"},
            headers={"X-Request-ID": "bad id with spaces"},
            timeout=10,
        )
        assert refused.status_code == 403
        assert len(refused.headers["X-Request-ID"]) == 32
        client = zeep.Client(bridge.url + "/sendsms/wsdl/sendsms.wsdl")
        client.service.sendSms(recipients="+32470000003", message=UNICODE_TEXT, apikey=KEY)
        requests.get(bridge.url + "/healthz", timeout=5)
    finally:
        output = bridge.stop()

    lines = log_lines(output)
    rest, bad, soap = [line for line in lines if line["path"] != "/sendsms/wsdl/sendsms.wsdl"]
    assert rest["request_id"] == "order-42.attempt-1"
    assert rest["client_ip"] == "127.0.0.1"  # X-Forwarded-For is not believed without trusted proxies
    assert (rest["method"], rest["path"], rest["dialect"], rest["operation"]) == (
        "GET",
        "/sendsms/",
        "rest",
        "sendsms",
    )
    assert (rest["backend"], rest["status"], rest["outcome"]) == ("mobsms", 200, "ok")
    assert rest["recipients"] == ["+********001", "+********002"]
    assert (rest["upstream_status"], rest["upstream_calls"]) == (201, 1)
    assert 0 < rest["upstream_ms"] <= rest["ms"]
    assert rest["client"] == rest["client"].lower() and len(rest["client"]) == 12
    assert (bad["status"], bad["outcome"], bad["upstream_status"]) == (403, "key_refused", 401)
    assert bad["request_id"] == refused.headers["X-Request-ID"]
    assert (soap["dialect"], soap["operation"], soap["outcome"], soap["recipients"]) == (
        "soap",
        "sendSms",
        "ok",
        ["+********003"],
    )
    assert soap["client"] == rest["client"]
    assert not any(line["path"] == "/healthz" for line in lines)
    for secret in (KEY, "wrong-key", SECRET_TEXT, UNICODE_TEXT, "32470000001", "482913"):
        assert secret not in output


def test_gunicorns_access_log_is_off_and_when_turned_on_shows_no_query_string(
    fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    """The request log is the one line per request; gunicorn's own, when wanted, keeps queries out."""
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    quiet = run_bridge(fake_mobsms, tmp_path / "off")
    try:
        assert requests.get(quiet.url + "/getsms/", params={"apikey": KEY}, timeout=10).status_code == 200
    finally:
        output = quiet.stop()
    assert [line["path"] for line in log_lines(output)] == ["/getsms/"]
    assert '"GET /getsms/' not in output

    verbose = run_bridge(fake_mobsms, tmp_path / "on", GUNICORN_CMD_ARGS="--access-logfile=-")
    try:
        sent = requests.get(
            verbose.url + "/sendsms/",
            params={"apikey": KEY, "recipients": "+32470000001", "message": SECRET_TEXT},
            timeout=10,
        )
        assert sent.status_code == 200
    finally:
        output = verbose.stop()
    assert '"GET /sendsms/ HTTP/1.1" 200' in output
    for secret in (KEY, SECRET_TEXT, "apikey", "32470000001"):
        assert secret not in output


def test_trusted_proxies_decide_the_client_ip(fake_mobsms: FakeMobsms, tmp_path: Path) -> None:
    bridge = run_bridge(fake_mobsms, tmp_path, SMSBRIDGE_TRUSTED_PROXIES="1")
    try:
        requests.get(
            bridge.url + "/getsms/",
            params={"apikey": KEY},
            headers={"X-Forwarded-For": "192.0.2.1, 203.0.113.7"},
            timeout=10,
        )
    finally:
        output = bridge.stop()
    [line] = [line for line in log_lines(output) if line["path"] == "/getsms/"]
    # One trusted proxy: the address it saw (the last) is the client's; the first is only a claim.
    assert line["client_ip"] == "203.0.113.7"


def test_numbers_are_masked_to_their_last_three_digits() -> None:
    assert mask_number("+32 470 00 00 01") == "+********001"
    assert mask_number("0032470000001") == "**********001"
    assert mask_number("12") == "12"


def test_request_ids_are_unique_32_hex_digits_and_differ_between_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [context.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # A forked worker (another pid) starts its own random half, so two workers never make the same id.
    monkeypatch.setattr(context.os, "getpid", lambda: -1)
    other = context.new_request_id()
    assert other[:16] != ids[0][:16] and other not in ids


def test_log_times_are_utc_with_milliseconds() -> None:
    assert request_log._timestamp(1795435200.0456) == "2026-11-23T12:00:00.045Z"
    assert request_log._timestamp(1795435201.9999) == "2026-11-23T12:00:01.999Z"
