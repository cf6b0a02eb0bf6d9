"""Upstream faults: each told apart, answered in the caller's dialect, and no SMS ever sent twice.

Every backend that calls out (smsmobileapi, mobsms) meets every fault through both fronts (REST by
Flask's test client, SOAP by posting an envelope). The network faults need nothing of the fakes:

    refused           a closed port on 127.0.0.1
    DNS failure       socket.getaddrinfo patched to fail for one made-up host name (nothing is resolved)
    connect timeout   a socket on 127.0.0.1 that listens with backlog 0, never accepts, and whose queue
                      is already full, so that a further connect hangs until the bridge gives up
    TLS failure       https:// to a fake's port, which speaks plain HTTP: the handshake fails

the others are the fakes misbehaving on command (tests/harness/fakes/server.py). Whatever happened, the fake
received exactly one send per call, never a retry, and none when nothing could reach it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.harness.bridge import GOOD_KEY
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import FakeUpstream
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn
from tests.harness.net import closed_port_url
from tests.harness.soap import envelope, fault_of

TO = "+32470000001"
CALLING_OUT = ("smsmobileapi", "mobsms")
FRONTS = ("rest", "soap")
#: small, so that the timeouts below cost half a second each
TIMEOUTS = {"connect_timeout": 0.5, "read_timeout": 0.5}
#: a host name that exists nowhere; getaddrinfo is patched to say so without asking any resolver
NO_SUCH_HOST = "upstream.smsbridge-faults.invalid"

NOTHING_SENT, MAYBE_SENT = "nothing was sent", "may have been sent"


@dataclass(frozen=True)
class Expected:
    """What the caller is told about one fault."""

    code: int
    name: str
    http_status: int
    fault: str
    #: what the note says of the SMS: NOTHING_SENT, MAYBE_SENT, or None for neither
    says: str | None
    #: True for faults that happen before anything reaches the upstream
    network: bool = False


FAULTS = {
    "refused": Expected(31, "backend_unreachable", 502, "Server.BackendUnreachable", NOTHING_SENT, True),
    "dns_failure": Expected(36, "backend_dns_failure", 502, "Server.BackendDnsFailure", NOTHING_SENT, True),
    "connect_timeout": Expected(
        37, "backend_connect_timeout", 502, "Server.BackendConnectTimeout", NOTHING_SENT, True
    ),
    "tls_failure": Expected(38, "backend_tls_failure", 502, "Server.BackendTlsFailure", NOTHING_SENT, True),
    "slow": Expected(32, "backend_timeout", 504, "Server.BackendTimeout", MAYBE_SENT),
    # The three below all break the connection after the request was written, so the send's outcome is
    # unknown. A truncated JSON body is 35 and not 34 (backend_bad_json) because it never reaches the
    # JSON parser: the answer's Content-Length promises more than arrives before the connection closes,
    # so urllib3 raises IncompleteRead (requests' ChunkedEncodingError), a broken transfer. 34 is for
    # a body that arrived whole but is not JSON (malformed_json).
    "reset": Expected(35, "backend_connection_lost", 502, "Server.BackendConnectionLost", MAYBE_SENT),
    "reset_mid_answer": Expected(
        35, "backend_connection_lost", 502, "Server.BackendConnectionLost", MAYBE_SENT
    ),
    "truncated_json": Expected(
        35, "backend_connection_lost", 502, "Server.BackendConnectionLost", MAYBE_SENT
    ),
    "html_5xx": Expected(33, "backend_failed", 502, "Server.BackendFailed", MAYBE_SENT),
    "rate_limited": Expected(29, "rate_limited", 429, "Client.RateLimited", None),
    "malformed_json": Expected(34, "backend_bad_json", 502, "Server.BackendBadJson", MAYBE_SENT),
    "unexpected_json": Expected(
        39, "backend_unexpected_answer", 502, "Server.BackendUnexpectedAnswer", MAYBE_SENT
    ),
}

#: faults where the vendor answers JSON of its own, which the passthrough returns to a REST caller unchanged
#: (a 2xx of an unknown shape is not among them: the bridge cannot tell whether it was sent, and says so)
VENDOR_JSON = ("rate_limited",)


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connects hang: backlog 0, never accepted, queue full of idle ones."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.05)  # the first filler's handshake completes and fills the queue
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


@pytest.fixture
def fakes(fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms) -> dict[str, FakeUpstream]:
    return {"smsmobileapi": fake_vendor, "mobsms": fake_mobsms}


def arrange(
    fault: str,
    backend: str,
    fake: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> dict[str, object]:
    """Make `fault` happen on the next send to `backend`; return the settings overrides it needs."""
    port = fake.url.rsplit(":", 1)[1]
    url = None
    if fault == "refused":
        url = closed_port_url()
    elif fault == "dns_failure":
        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host: str | None, *args: Any, **kwargs: Any) -> list:
            if host == NO_SUCH_HOST:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        url = f"http://{NO_SUCH_HOST}:{port}"
    elif fault == "connect_timeout":
        url = f"http://127.0.0.1:{request.getfixturevalue('unresponsive_port')}"
    elif fault == "tls_failure":
        url = f"https://127.0.0.1:{port}"
    elif fault == "slow":
        # Much longer than the read timeout; the next test's behave() lets the fake go.
        fake.misbehave("slow", seconds=5)
    elif fault in ("malformed_json", "unexpected_json"):
        fake.misbehave(fault, status=201 if backend == "mobsms" else 200)
    else:
        fake.misbehave(fault)
    return {**TIMEOUTS, **({f"{backend}_url": url} if url else {})}


def send(client: FlaskClient, front: str, backend: str) -> TestResponse:
    """Send "Hi" to TO through `front` with `backend`'s good key."""
    if front == "rest":
        return client.post("/sendsms/", data={"apikey": GOOD_KEY[backend], "recipients": TO, "message": "Hi"})
    return client.post("/sendsms/soap/", data=envelope(key=GOOD_KEY[backend]), content_type="text/xml")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("backend", CALLING_OUT)
def test_each_fault_is_told_apart_in_the_callers_dialect_and_sends_at_most_once(
    backend: str,
    front: str,
    fault: str,
    make_app: Callable[..., Flask],
    fakes: dict[str, FakeUpstream],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    expected = FAULTS[fault]
    fake = fakes[backend]
    app = make_app(backend, **arrange(fault, backend, fake, monkeypatch, request))

    started = time.monotonic()
    response = send(app.test_client(), front, backend)
    assert time.monotonic() - started < 3

    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert "<html" not in text.lower()
    request_id = response.headers["X-Request-ID"]
    if front == "soap":
        code, string = fault_of(response)
        assert code == f"soap11env:{expected.fault}"
        check_note(string, expected)
        if expected.says == MAYBE_SENT:
            assert string.endswith(f"(reference: {request_id})")
        else:
            assert "reference" not in string
    elif backend == "smsmobileapi" and fault in VENDOR_JSON:
        # The vendor's own JSON error passes through as it came: status, body and Retry-After.
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "17"
        assert response.get_json() == {"error": 429, "success": False, "message": "Too Many Attempts."}
    else:
        assert response.status_code == expected.http_status
        assert response.content_type.startswith("application/json"), text[:200]
        document = response.get_json()
        result = document["result"]
        assert (result["error"], result["error_code"], result["sent"], result["id"]) == (
            expected.code,
            expected.name,
            "0",
            "",
        )
        assert (document["error"], document["message"]) == (expected.code, result["note"])
        check_note(result["note"], expected)
        if expected.says == MAYBE_SENT:
            assert result["reference"] == request_id
        else:
            assert "reference" not in result
        if fault == "rate_limited":
            assert response.headers["Retry-After"] == "17"
        else:
            assert "Retry-After" not in response.headers

    # One send per call, never a retry; none reached the fake when the connection never was made.
    assert len(fake.received) == (0 if expected.network else 1)
    other = fakes["mobsms" if backend == "smsmobileapi" else "smsmobileapi"]
    assert other.received == []


def check_note(note: str, expected: Expected) -> None:
    """Check what the note says of the SMS: nothing was sent, it may have been, or neither."""
    maybe = "may have been sent" in note
    if expected.says == NOTHING_SENT:
        assert note.endswith("nothing was sent")
        assert not maybe
    elif expected.says == MAYBE_SENT:
        assert maybe, note
        assert "check" in note and "before sending it again" in note
        assert "nothing was sent" not in note
    else:
        assert "nothing was sent" not in note
        assert not maybe
    assert "127.0.0.1" not in note
    assert NO_SUCH_HOST not in note


@pytest.mark.parametrize("fault", ["reset", "reset_mid_answer", "truncated_json", "slow"])
@pytest.mark.parametrize("backend", CALLING_OUT)
def test_after_a_broken_connection_the_next_send_goes_through_once(
    backend: str, fault: str, make_app: Callable[..., Flask], fakes: dict[str, FakeUpstream]
) -> None:
    """A broken pooled connection is neither retried nor reused: the next call sends exactly once more."""
    fake = fakes[backend]
    client = make_app(backend, **TIMEOUTS).test_client()
    fake.misbehave(fault)
    assert send(client, "rest", backend).status_code == FAULTS[fault].http_status
    fake.behave()
    after = send(client, "rest", backend)
    assert after.status_code == 200
    assert after.get_json()["result"]["sent"] == "1"
    assert len(fake.received) == 2


def test_a_standing_misbehaviour_lasts_until_behave(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms", **TIMEOUTS).test_client()
    fake_mobsms.misbehave("html_5xx", always=True)
    statuses = [send(client, "rest", "mobsms").status_code for _ in range(3)]
    fake_mobsms.behave()
    statuses.append(send(client, "rest", "mobsms").status_code)
    assert statuses == [502, 502, 502, 200]
    assert len(fake_mobsms.received) == 4
    with pytest.raises(ValueError, match="unknown misbehaviour"):
        fake_mobsms.misbehave("teapot")


# --- through the real runtime ---------------------------------------------------------------------------


def test_a_read_timeout_through_gunicorn_is_logged_and_answered_in_time(
    fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    fake_mobsms.misbehave("slow", seconds=5)
    server = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "mobsms",
            "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
            "SMSBRIDGE_READ_TIMEOUT": "1",
        },
        tmp_path / "gunicorn.log",
    )
    try:
        started = time.monotonic()
        response = requests.post(
            server.url + "/sendsms/",
            data={"apikey": GOOD_KEY["mobsms"], "recipients": TO, "message": "Hi"},
            timeout=10,
        )
        elapsed = time.monotonic() - started
    finally:
        output = server.stop()
    assert elapsed < 3
    assert response.status_code == 504
    assert response.headers["Content-Type"].startswith("application/json")
    result = response.json()["result"]
    assert (result["error"], result["error_code"]) == (32, "backend_timeout")
    assert result["reference"] == response.headers["X-Request-ID"]
    [line] = [
        entry
        for entry in (json.loads(row) for row in output.splitlines() if row.startswith('{"time"'))
        if entry["path"] == "/sendsms/"
    ]
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["status"], line["outcome"]) == (504, "backend_timeout")
    assert line["upstream_status"] is None
    assert line["upstream_calls"] == 1
    assert len(fake_mobsms.received) == 1
