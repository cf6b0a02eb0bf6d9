"""No key, token, secret or message text in any log line: the bridge's, urllib3's or gunicorn's own."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import pytest
import requests

from app.redaction import RedactSecrets, redact
from tests.harness.bridge import GOOD_KEY
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn

KEY = "k3y-S3CRET-77"
TEXT = "Pin6613Zq"
VENDOR_KEY = GOOD_KEY["smsmobileapi"]


@pytest.mark.parametrize(
    ("line", "hidden"),
    [
        ("GET /getsms/?apikey=k-123&x=1", ["k-123", "x=1"]),
        (
            "Invalid HTTP request line: 'GET /sendsms/?apikey=k-123&message=hi there HTTP/1.1'",
            ["k-123", "hi"],
        ),
        ("Authorization: Bearer t.o.k, then Basic dXNlcjpwYXNz", ["t.o.k", "dXNlcjpwYXNz"]),
        ('{"apikey": "k-123", "message": "hi there"}', ["k-123", "hi there"]),
        ("proxy http://user:pa55@127.0.0.1:3128 refused", ["user", "pa55"]),
        ("form apikey=k-123&recipients=1&message=hello", ["k-123", "hello"]),
        ("POST /webhooks/mobsms/acme?key=0123abcd", ["0123abcd"]),
        # Unencoded spaces: gunicorn reads a part of the message as the HTTP version.
        (
            "Invalid request from ip=10.0.0.7: Invalid HTTP Version: 'at 5pm by the back door HTTP/1.1'",
            ["5pm"],
        ),
        ("'GET /sendsms?apikey=K&message=it\\'s my secret plan HTTP/1.1'", ["secret plan"]),
        ('{"message": "don\'t tell Bob \\"the\\" code 1234"}', ["tell Bob", "1234"]),
    ],
)
def test_secrets_and_texts_are_hidden(line: str, hidden: list[str]) -> None:
    scrubbed = redact(line)
    assert all(value not in scrubbed for value in hidden), scrubbed
    assert "***" in scrubbed


def test_the_filter_rewrites_the_record_and_its_traceback() -> None:
    try:
        raise KeyError(f"/sendsms/?apikey={KEY}")
    except KeyError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", (f"apikey={KEY}",), sys.exc_info()
        )
    assert RedactSecrets().filter(record) is True
    text = logging.Formatter().format(record)
    assert KEY not in text
    assert "failed apikey=***" in text


def raw_request(url: str, line: bytes) -> bytes:
    """Send one raw request line (and a Host header) and return what came back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(line + b"\r\nHost: x\r\n\r\n")
        return sock.recv(65536)


def test_gunicorn_never_logs_a_rejected_request_line_whole(tmp_path: Path) -> None:
    bridge = Gunicorn({"SMSBRIDGE_DATA_DIR": str(tmp_path)}, tmp_path / "gunicorn.log")
    answers = [
        # A control character, then raw UTF-8, in the query: gunicorn refuses the request line itself.
        raw_request(bridge.url, f"GET /sendsms/?apikey={KEY}&message={TEXT}\x01 HTTP/1.1".encode()),
        raw_request(bridge.url, f"GET /sendsms/?apikey={KEY}&message={TEXT}é HTTP/1.1".encode()),
        raw_request(bridge.url, f"GET /sendsms/?apikey={KEY}&message={TEXT} two words HTTP/1.1".encode()),
    ]
    output = bridge.stop()
    assert all(answer.startswith(b"HTTP/1.1 400") for answer in answers), answers
    assert output.count("refused a request gunicorn could not read") >= 1, output  # it says what it refused
    assert KEY not in output
    assert TEXT not in output
    assert "two words" not in output  # the rest of a message sent with unencoded spaces


def test_debug_logging_writes_no_key_or_text(tmp_path: Path, fake_vendor: FakeSmsMobileApi) -> None:
    bridge = Gunicorn(
        {
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
            "SMSBRIDGE_BACKEND": "smsmobileapi",
            "SMSBRIDGE_SMSMOBILEAPI_URL": fake_vendor.url,
            "SMSBRIDGE_LOG_LEVEL": "DEBUG",
        },
        tmp_path / "gunicorn.log",
    )
    try:
        answer = requests.get(
            bridge.url + "/sendsms/",
            params={"apikey": VENDOR_KEY, "recipients": "+32470000001", "message": TEXT},
            timeout=10,
        )
        requests.get(bridge.url + "/getsms/", params={"apikey": VENDOR_KEY}, timeout=10)
    finally:
        output = bridge.stop()
    assert answer.status_code == 200
    assert fake_vendor.received, "the send reached the fake vendor"
    assert "DEBUG" in output  # DEBUG lines were written: the test looks at them
    assert VENDOR_KEY not in output
    assert TEXT not in output
