"""Bad input through the real gunicorn: answered in the caller's dialect, or the connection closed; never a
500, never a traceback in the log (issue 12, item 7).

What gunicorn itself reads (chunked framing, raw header bytes) is sent on a raw socket, as an attacker
would: an HTTP client library would refuse to write it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from lxml import etree

from app.fronts.webhook_sources import source_urls
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn
from tests.harness.soap import envelope

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TOKEN_SECRET = "a-token-secret-for-the-bad-input-tests-0123456789"
FORM = b"apikey=vendor-key-1&recipients=%2B32470000001&message=Hi"
JSON = b'{"apikey": "vendor-key-1", "recipients": "+32470000001", "message": "Hi"}'
SOAP = envelope(key="vendor-key-1").encode()
#: JSON nested 5,000 deep: Python's parser recurses once per level
DEEP = b'{"apikey": "vendor-key-1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


class Bridge:
    """gunicorn with the smsmobileapi backend (the fake vendor behind it); its log read piece by piece."""

    def __init__(self, server: Gunicorn) -> None:
        self.server = server
        self.url = server.url
        self._read = 0

    def new_log(self) -> str:
        """Return what gunicorn wrote since the last call."""
        text = self.server.log.read_bytes()[self._read :]
        self._read += len(text)
        return text.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def bridge(fake_vendor: FakeSmsMobileApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    data = tmp_path_factory.mktemp("bad-input-gunicorn")
    server = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "smsmobileapi",
            "SMSBRIDGE_SMSMOBILEAPI_URL": fake_vendor.url,
            "SMSBRIDGE_DATA_DIR": str(data),
            "SMSBRIDGE_RATE_LIMIT": "100000/minute",
            "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
        },
        data / "gunicorn.log",
    )
    yield Bridge(server)
    server.stop()


@pytest.fixture
def clean_log(bridge: Bridge) -> Iterator[Bridge]:
    """The bridge; after the test, nothing it logged may be a traceback or an ERROR."""
    bridge.new_log()
    yield bridge
    written = bridge.new_log()
    assert "Traceback" not in written, written
    assert "ERROR" not in written and "[ERROR]" not in written, written


def exchange(url: str, data: bytes, *, half_close: bool = False) -> bytes:
    """Send `data` on a fresh connection and return every byte read until the server closes it."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as connection:
        connection.sendall(data)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        return _read_to_the_end(connection)


def answer_then_closed(url: str, data: bytes) -> bytes:
    """Send `data`, read one whole answer, and return it after checking the server serves nothing more.

    A second request on the same connection must get no answer: after a body whose framing is broken,
    where the next request would start is unknown, so the connection must be closed.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as connection:
        connection.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            piece = connection.recv(65536)
            assert piece, received
            received += piece
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(dict(_header_lines(head))["content-length"])
        while len(body) < length:
            piece = connection.recv(65536)
            assert piece, received
            body += piece
        with contextlib.suppress(OSError):  # closed already
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        rest = body[length:] + _read_to_the_end(connection)
        assert rest == b"", rest[:300]
        return head + b"\r\n\r\n" + body[:length]


def _read_to_the_end(connection: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            piece = connection.recv(65536)
        except ConnectionResetError:
            break
        if not piece:
            break
        received += piece
    return received


def _header_lines(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(name.lower(), value) for name, _, value in (line.partition(": ") for line in lines)]


def chunked(path: str, content_type: str, framing: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bridge\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + framing


def split_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Return (status, headers, body) of the one HTTP answer in `raw` (checking there is only one)."""
    assert raw.count(b"HTTP/1.1 ") == 1, raw[:600]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert len(body) == int(headers["Content-Length"]), raw[:600]
    return int(lines[0].split()[1]), headers, body


BODIES = {
    "rest-form": ("/sendsms/", "application/x-www-form-urlencoded", FORM),
    "rest-json": ("/sendsms/", "application/json", JSON),
    "passthrough": ("/getsms/", "application/x-www-form-urlencoded", b"apikey=vendor-key-1"),
    "soap": ("/sendsms/soap/", "text/xml; charset=utf-8", SOAP),
}


def framings(body: bytes) -> dict[str, bytes]:
    size = b"%x" % len(body)
    return {
        "bad-chunk-size": b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        "negative-chunk-size": b"-" + size + b"\r\n" + body + b"\r\n0\r\n\r\n",
        "chunk-ext-garbage": size + b';\x01\x02="\r\n' + body + b"\r\n0\r\n\r\n",
        "chunk-ext-bare-cr": size + b";a=b\rc\r\n" + body + b"\r\n0\r\n\r\n",
        "missing-chunk-terminator": size + b"\r\n" + body + b"XX0\r\n\r\n",
    }


@pytest.mark.parametrize("framing", list(framings(b"")))
@pytest.mark.parametrize("front", list(BODIES))
def test_a_malformed_chunked_body_is_the_dialects_400_then_a_close(
    front: str, framing: str, clean_log: Bridge, fake_vendor: FakeSmsMobileApi
) -> None:
    path, content_type, body = BODIES[front]
    raw = answer_then_closed(clean_log.url, chunked(path, content_type, framings(body)[framing]))
    status, headers, answer = split_answer(raw)
    if front == "soap":
        assert status == 500
        fault = etree.fromstring(answer).find(f".//{{{SOAP_ENV}}}Fault")
        assert fault is not None
        assert fault.findtext("faultcode") == "soap11env:Client.MalformedBody"
    else:
        assert status == 400
        assert headers["Content-Type"] == "application/json"
        assert json.loads(answer)["result"]["error_code"] == "malformed_body"
    assert fake_vendor.received == []


@pytest.mark.parametrize("front", list(BODIES))
@pytest.mark.parametrize("cut", ["missing-last-chunk", "cut-inside-a-chunk"])
def test_a_chunked_body_cut_short_by_a_close_is_answered_in_the_dialect_or_closed(
    front: str, cut: str, clean_log: Bridge, fake_vendor: FakeSmsMobileApi
) -> None:
    path, content_type, body = BODIES[front]
    size = b"%x" % len(body)
    framing = size + b"\r\n" + body + b"\r\n" if cut == "missing-last-chunk" else size + b"0\r\n" + body
    raw = exchange(clean_log.url, chunked(path, content_type, framing), half_close=True)
    if raw:  # a clean close without an answer is as good: the client has stopped listening anyway
        status, _, answer = split_answer(raw)
        if front == "soap":
            assert status == 500
            assert b"soap11env:Client.MalformedBody" in answer
        else:
            assert status == 400
            assert json.loads(answer)["result"]["error_code"] == "malformed_body"
    assert fake_vendor.received == []


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/sendsms/", "application/json"),
        ("/getsms/", "application/json"),
        ("/oauth2/token", "application/json"),
        ("/sendsms/", "application/json; charset=utf-8"),
    ],
)
def test_json_nested_5000_deep_is_the_dialects_400(
    path: str, content_type: str, clean_log: Bridge, fake_vendor: FakeSmsMobileApi
) -> None:
    answer = requests.post(
        clean_log.url + path, data=DEEP, headers={"Content-Type": content_type}, timeout=20
    )
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["result"]["error_code"] == "invalid_parameter"
    assert "JSON" in answer.json()["message"]
    assert fake_vendor.received == []


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Basic dmVuZG9y\tLWtleS0x",
        b"Authorization: Basic dmVuZG9y\xe9",
        b"Content-Type: application/json;\tcharset=utf-8",
        b"Content-Type: application/json; x=\xe9",
    ],
    # (gunicorn itself refuses the other control characters, before the bridge sees the request)
    ids=["tab-in-basic", "8bit-in-basic", "tab-in-type", "8bit-in-type"],
)
@pytest.mark.parametrize("path", ["/sendsms/", "/getsms/", "/oauth2/token"])
def test_a_control_character_in_a_forwarded_header_is_refused_in_the_dialect(
    header: bytes, path: str, clean_log: Bridge, fake_vendor: FakeSmsMobileApi
) -> None:
    body = JSON if header.startswith(b"Content-Type") else FORM
    extra = (
        b"" if header.startswith(b"Content-Type") else b"Content-Type: application/x-www-form-urlencoded\r\n"
    )
    if path == "/oauth2/token" and not header.startswith(b"Content-Type"):
        body = b"grant_type=client_credentials"
    request = (
        f"POST {path} HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n".encode()
        + header
        + b"\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    status, headers, answer = split_answer(exchange(clean_log.url, request))
    assert status == 400, answer[:300]
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer)["result"]["error_code"] == "invalid_parameter"
    assert fake_vendor.received == []


@pytest.mark.parametrize("key", ["%C3%A9", "%FF%FE", "abc%00def", "%E2%80%AE" * 3, "x" * 300])
def test_a_non_ascii_webhook_key_is_the_dialects_403(key: str, clean_log: Bridge) -> None:
    answer = requests.post(
        f"{clean_log.url}/webhooks/mobsms/default?key={key}",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        timeout=20,
    )
    assert answer.status_code == 403
    assert answer.json()["result"]["error_code"] == "key_refused"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-SMSMobileAPI-Timestamp": "now", "X-SMSMobileAPI-Signature": "v1=\xe9"},
        {"X-SMSMobileAPI-Timestamp": "\u0661\u0667", "X-SMSMobileAPI-Signature": "v1=00"},
        # int() refuses a string of over 4,300 digits (ValueError): it was a 500
        {"X-SMSMobileAPI-Timestamp": "9" * 5000, "X-SMSMobileAPI-Signature": "v1=00"},
    ],
    ids=["latin1-signature", "arabic-digits-timestamp", "5000-digit-timestamp"],
)
def test_a_signed_vendor_webhook_with_odd_header_bytes_is_the_dialects_403(
    headers: dict[str, str], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    """compare_digest refuses a str holding a character past ASCII: the signature is compared as bytes."""
    server = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "smsmobileapi",
            "SMSBRIDGE_SMSMOBILEAPI_URL": fake_vendor.url,
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
            "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
            "SMSBRIDGE_VENDOR_WEBHOOK_SECRET": "the-vendors-webhook-secret",
        },
        tmp_path / "gunicorn.log",
    )
    try:
        path = signed_path(tmp_path, "smsmobileapi")
        now = str(int(time.time()))  # fresh: the signature itself is compared
        encoded = {
            name: value.replace("now", now).encode("utf-8").decode("latin-1")
            for name, value in headers.items()
        }
        answer = requests.post(server.url + path, data=b"{}", headers=encoded, timeout=20)
    finally:
        output = server.stop()
    assert answer.status_code == 403, answer.text[:300]
    assert answer.json()["result"]["error_code"] == "key_refused"
    assert "Traceback" not in output


def signed_path(data_dir: Path, source: str) -> str:
    """Return the path and query of the passthrough bridge's source URL, signed under TOKEN_SECRET."""
    from app import create_app

    app = create_app({"data_dir": data_dir / "signer", "token_secret": TOKEN_SECRET})
    url = urlsplit(source_urls(app.extensions["smsbridge"], "default")[source])
    return f"{url.path}?{url.query}"


def test_webhook_sources_are_rate_limited_per_source_url_with_a_429_to_retry(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    """Past the limit a source gets the dialect's 429 and Retry-After; other sources and sends count apart."""
    app = make_app("sandbox", rate_limit="3/minute", token_secret=TOKEN_SECRET)
    client = app.test_client()
    urls = {
        source: urlsplit(url) for source, url in source_urls(app.extensions["smsbridge"], "default").items()
    }
    mobsms = f"{urls['mobsms'].path}?{urls['mobsms'].query}"
    vendor = f"{urls['smsmobileapi'].path}?{urls['smsmobileapi'].query}"
    answers = [client.post(mobsms, json={}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.get_json()["result"]["error_code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    assert client.post(vendor, json={}).status_code == 200  # another source URL: a count of its own
    send = client.post("/sendsms/", data={"apikey": "k", "recipients": "+32470000001", "message": "Hi"})
    assert send.status_code == 200  # the client's own sends are not the source's count
    # URLs the bridge did not give out count by address, so guessing keys is limited too.
    guesses = [client.post("/webhooks/mobsms/default?key=guess", json={}) for _ in range(4)]
    assert [g.status_code for g in guesses] == [403, 403, 403, 429]


SECRET_KEY = "a-key-that-must-never-be-logged-4242"

#: requests gunicorn itself cannot read, and the status and error_code each must get, in the dialect
UNREADABLE = {
    "raw UTF-8 in the query": (
        f"GET /sendsms/?apikey={SECRET_KEY}&recipients=%2B32470000001&message=h\u00e9llo HTTP/1.1\r\n"
        "Host: bridge\r\n\r\n".encode(),
        400,
        "malformed_request",
    ),
    "a control character in the query": (
        f"GET /sendsms/?apikey={SECRET_KEY}&message=a\x01b HTTP/1.1\r\nHost: bridge\r\n\r\n".encode(),
        400,
        "malformed_request",
    ),
    "a raw non-ASCII webhook key": (
        "POST /webhooks/mobsms/default?key=\u00e9\u00e9 HTTP/1.1\r\nHost: bridge\r\n"
        "Content-Length: 0\r\n\r\n".encode(),
        400,
        "malformed_request",
    ),
    "a control character in a header": (
        f"GET /getsms/?apikey={SECRET_KEY} HTTP/1.1\r\nHost: bridge\r\nX-Note: a\x7fb\r\n\r\n".encode(),
        400,
        "malformed_request",
    ),
    "a request line over 8190 bytes": (
        f"GET /sendsms/?apikey={SECRET_KEY}&message={'x' * 9000} HTTP/1.1\r\nHost: bridge\r\n\r\n".encode(),
        414,
        "uri_too_long",
    ),
    "an unknown transfer coding": (
        b"POST /sendsms/ HTTP/1.1\r\nHost: bridge\r\nTransfer-Encoding: bogus\r\n\r\n",
        501,
        "malformed_request",
    ),
    "an obsolete folded header": (
        b"GET /getsms/ HTTP/1.1\r\nHost: bridge\r\nX-Note: a\r\n folded\r\n\r\n",
        400,
        "malformed_request",
    ),
}


@pytest.mark.parametrize("case", UNREADABLE, ids=list(UNREADABLE))
def test_a_request_gunicorn_cannot_read_is_answered_in_the_dialect_and_logged_without_it(
    case: str, clean_log: Bridge
) -> None:
    """gunicorn's own refusals are the dialect's JSON error, not its HTML page; the log names its kind."""
    raw, status, code = UNREADABLE[case]
    answer = exchange(clean_log.url, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == str(status).encode(), answer[:300]
    assert dict(_header_lines(head))["content-type"] == "application/json", head
    document = json.loads(body)
    assert document["result"]["error_code"] == code and document["result"]["sent"] == "0", document
    assert document["error"] == document["result"]["error"] != 0, document
    time.sleep(0.2)  # the log line is written after the answer
    written = clean_log.new_log()
    assert SECRET_KEY not in written and "h\u00e9llo" not in written and "xxxxxxxx" not in written, written
    assert "refused a request gunicorn could not read" in written, written
