"""Failover and the circuit breaker: a second backend only when the first provably received nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app.access.resolution import hash_key
from app.config import ConfigError, Settings
from app.errors import BackendUnreachable
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn, log_lines

TO = "+32470000001"
SEND = {"apikey": "mobsms-key-1", "recipients": TO, "message": "Hi"}


def count_calls(app: Flask, backend: str, *, fail: bool) -> list[int]:
    """Wrap a backend's send to count its calls and, with `fail`, to fail as if unreachable."""
    target = app.extensions["smsbridge"].backend_for(backend)
    original, calls = target.send, []

    def send(request: object) -> object:
        calls.append(1)
        if fail:
            raise BackendUnreachable(f"the {backend} backend refused the connection; nothing was sent")
        return original(request)

    target.send = send
    return calls


def test_an_unreachable_backend_fails_over(make_app: Callable[..., Flask]) -> None:
    app = make_app("mobsms", mobsms_url="http://127.0.0.1:9", failover_backend="sandbox")
    answer = app.test_client().post("/sendsms/", data=SEND)
    result = answer.get_json()["result"]
    assert (answer.status_code, result["sent"]) == (200, "1")
    assert "smsbridge sandbox" in result["note"]
    [row] = app.extensions["smsbridge"].backend_for("sandbox").sent("failover")
    assert (row["recipient"], row["message"]) == (TO, "Hi")


def test_no_failover_once_the_backend_may_have_received_the_send(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    app = make_app("mobsms", failover_backend="sandbox")
    fake_mobsms.next_reply = Reply(201, b'{"success": tr', "application/json")
    answer = app.test_client().post("/sendsms/", data=SEND)
    assert answer.get_json()["result"]["error_code"] == "backend_bad_json"
    assert app.extensions["smsbridge"].backend_for("sandbox").sent("failover") == []
    assert len(fake_mobsms.received) == 1


def test_the_breaker_skips_a_failing_backend_then_probes_it(make_app: Callable[..., Flask]) -> None:
    app = make_app("mobsms", failover_backend="sandbox", breaker_failures=2, breaker_cooldown=0.3)
    client = app.test_client()
    calls = count_calls(app, "mobsms", fail=True)
    for _ in range(4):
        assert client.post("/sendsms/", data=SEND).get_json()["result"]["sent"] == "1"
    assert len(calls) == 2  # two failures opened the breaker; the next two went straight to the sandbox
    time.sleep(0.35)
    client.post("/sendsms/", data=SEND)
    assert len(calls) == 3  # one probe after the cool-down, which failed: open again
    client.post("/sendsms/", data=SEND)
    assert len(calls) == 3
    breaker = app.extensions["smsbridge"].breaker
    assert breaker.state("mobsms") == "open"
    app.extensions["smsbridge"].backend_for("mobsms").send = (
        app.extensions["smsbridge"].backend_for("sandbox").send
    )
    time.sleep(0.35)
    client.post("/sendsms/", data=SEND)
    assert breaker.state("mobsms") == "closed"


def test_without_a_failover_an_open_breaker_answers_at_once(make_app: Callable[..., Flask]) -> None:
    app = make_app("mobsms", breaker_failures=1, breaker_cooldown=30)
    client = app.test_client()
    calls = count_calls(app, "mobsms", fail=True)
    first = client.post("/sendsms/", data=SEND)
    second = client.post("/sendsms/", data=SEND)
    assert len(calls) == 1
    assert (
        first.get_json()["result"]["error_code"]
        == second.get_json()["result"]["error_code"]
        == "backend_unreachable"
    )
    assert "is skipped for up to 30 s; nothing was sent" in second.get_json()["result"]["note"]


def test_a_managed_client_fails_over_with_its_own_second_credential(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f"""
[clients.shop]
key_sha256 = ["{hash_key("shop-key")}"]
backend = "smsmobileapi"
upstream_key = "vendor-key-1"
failover_backend = "mobsms"
failover_upstream_key = "mobsms-key-1"
"""
    )
    app = make_app("sandbox", clients_file=str(clients), smsmobileapi_url="http://127.0.0.1:9")
    answer = app.test_client().post(
        "/sendsms/", data={"apikey": "shop-key", "recipients": TO, "message": "Hi"}
    )
    assert answer.get_json()["result"]["sent"] == "1"
    [sent] = fake_mobsms.received
    assert sent.headers["authorization"] == "Bearer mobsms-key-1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"SMSBRIDGE_BACKEND": "mobsms", "SMSBRIDGE_FAILOVER_BACKEND": "mobsms"},
            "SMSBRIDGE_FAILOVER_BACKEND",
        ),
        ({"SMSBRIDGE_FAILOVER_BACKEND": "mobsms"}, "SMSBRIDGE_FAILOVER_KEY is needed"),
        ({"SMSBRIDGE_BREAKER_FAILURES": "0"}, "SMSBRIDGE_BREAKER_FAILURES"),
    ],
)
def test_failover_settings_are_checked(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_the_request_log_shows_the_failover(tmp_path: Path) -> None:
    bridge = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "mobsms",
            "SMSBRIDGE_MOBSMS_URL": "http://127.0.0.1:9",
            "SMSBRIDGE_FAILOVER_BACKEND": "sandbox",
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
        },
        tmp_path / "gunicorn.log",
    )
    try:
        answer = requests.post(bridge.url + "/sendsms/", data=SEND, timeout=10)
    finally:
        output = bridge.stop()
    assert answer.json()["result"]["sent"] == "1"
    [line] = [line for line in log_lines(output) if line["path"] == "/sendsms/"]
    assert line["failover"] == {"from": "mobsms", "why": "backend_unreachable"}
    assert (line["status"], line["outcome"]) == (200, "ok")


def test_failover_hands_on_the_whole_send(make_app: Callable[..., Flask]) -> None:
    """Every field of the send reaches the failover backend, a field added later included."""
    import dataclasses

    from app.service.delivery import CircuitBreaker, deliver
    from app.vocabulary import Credential, CredentialSource, SendOptions, SendRequest

    @dataclasses.dataclass(frozen=True)
    class LaterSend(SendRequest):
        campaign: str = ""

    app = make_app("mobsms", mobsms_url="http://127.0.0.1:9", failover_backend="sandbox")
    state = app.extensions["smsbridge"]
    received: list[SendRequest] = []
    sandbox = state.backend_for("sandbox")
    original = sandbox.send
    sandbox.send = lambda request: received.append(request) or original(request)
    send = LaterSend(
        credential=Credential("mobsms-key-1", CredentialSource.FORM),
        recipients=(TO,),
        message="Hi",
        options=SendOptions(),
        reference="ref-1",
        idempotency_key="key-1",
        campaign="spring",
    )
    with app.test_request_context():
        caller = state.access.resolve(send.credential)
        deliver(caller, send, CircuitBreaker(3, 30))
    [handed] = received
    assert handed == dataclasses.replace(send, credential=caller.failover[1])
    assert isinstance(handed, LaterSend) and handed.campaign == "spring"


# --- every way a probe can end (issue 12, item 3) ---------------------------------------------------------

COOLDOWN = 0.05
VENDOR_SEND = {"apikey": "vendor-key-1", "recipients": TO, "message": "Hi"}


def probe(app: Flask, backend: str, send: dict[str, str]) -> tuple[FlaskClient, requests.Response]:
    """Open `backend`'s breaker, wait out the cool-down, and let the send `send` probe it."""
    breaker = app.extensions["smsbridge"].breaker
    breaker.failed(backend)  # breaker_failures=1: one failure that reached nothing opens it
    assert breaker.state(backend) == "open"
    time.sleep(COOLDOWN * 2)
    client = app.test_client()
    return client, client.post("/sendsms/", data=send)


def assert_next_send_reaches(client: FlaskClient, fake: FakeSmsMobileApi | FakeMobsms, send: dict) -> None:
    """The breaker was left usable: the next send goes to the backend and succeeds."""
    before = len(fake.received)
    answer = client.post("/sendsms/", data=send)
    assert answer.get_json()["result"]["sent"] == "1", answer.get_json()
    assert len(fake.received) == before + 1


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("answered 400", 400),
        ("answered 403", 403),
        ("answered 429", 429),
        ("answered JSON 500", 500),
        ("answered an HTML 503", 502),
        ("answered JSON of another shape", 502),
        ("timed out after the request was written", 504),
        ("lost the connection", 502),
        ("succeeded", 200),
    ],
)
def test_a_probe_the_backend_answered_or_took_closes_the_breaker(
    how: str, status: int, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    app = make_app("smsmobileapi", breaker_failures=1, breaker_cooldown=COOLDOWN, read_timeout=0.3)
    if how == "answered 400":
        fake_vendor.next_reply = Reply.json(400, {"error": 400, "message": "invalid recipient"})
    elif how == "answered 403":
        fake_vendor.next_reply = Reply.json(403, {"error": 403, "message": "API key invalid"})
    elif how == "answered 429":
        fake_vendor.misbehave("rate_limited")
    elif how == "answered JSON 500":
        fake_vendor.next_reply = Reply.json(500, {"error": 500, "message": "maintenance"})
    elif how == "answered an HTML 503":
        fake_vendor.misbehave("html_5xx")
    elif how == "answered JSON of another shape":
        fake_vendor.misbehave("unexpected_json")
    elif how == "timed out after the request was written":
        fake_vendor.misbehave("slow", seconds=2)
    elif how == "lost the connection":
        fake_vendor.misbehave("reset")
    client, answer = probe(app, "smsmobileapi", VENDOR_SEND)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert app.extensions["smsbridge"].breaker.state("smsmobileapi") == "closed"
    fake_vendor.behave()
    assert_next_send_reaches(client, fake_vendor, VENDOR_SEND)


def test_a_probe_that_reaches_nothing_opens_the_breaker_again(make_app: Callable[..., Flask]) -> None:
    app = make_app("mobsms", mobsms_url="http://127.0.0.1:9", breaker_failures=1, breaker_cooldown=30)
    breaker = app.extensions["smsbridge"].breaker
    breaker.cooldown = COOLDOWN  # the first cool-down is short; the one the probe starts is 30 s
    breaker.failed("mobsms")
    time.sleep(COOLDOWN * 2)
    breaker.cooldown = 30
    client = app.test_client()
    first = client.post("/sendsms/", data=SEND).get_json()["result"]
    assert first["error_code"] == "backend_unreachable" and "skipped" not in first["note"]
    assert breaker.state("mobsms") == "open"
    second = client.post("/sendsms/", data=SEND).get_json()["result"]
    assert "is skipped for up to 30 s; nothing was sent" in second["note"]


def test_a_probe_refused_before_anything_was_sent_is_released(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    """A message too long for mobsms is refused before any call: the next send probes again."""
    app = make_app("mobsms", breaker_failures=1, breaker_cooldown=COOLDOWN)
    client, answer = probe(app, "mobsms", {**SEND, "message": "x" * 5000})
    assert answer.get_json()["result"]["error_code"] == "message_too_long"
    assert fake_mobsms.received == []
    assert app.extensions["smsbridge"].breaker.state("mobsms") == "open"  # no verdict: not closed
    assert_next_send_reaches(client, fake_mobsms, SEND)
    assert app.extensions["smsbridge"].breaker.state("mobsms") == "closed"


def test_a_probe_that_fails_unexpectedly_is_released(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    app = make_app("mobsms", breaker_failures=1, breaker_cooldown=COOLDOWN)
    backend = app.extensions["smsbridge"].backend_for("mobsms")
    original = backend.send

    def send_once_broken(request: object) -> object:
        backend.send = original
        raise RuntimeError("a bug in the backend")

    backend.send = send_once_broken
    client, answer = probe(app, "mobsms", SEND)
    assert (answer.status_code, answer.get_json()["result"]["error_code"]) == (500, "internal_error")
    assert app.extensions["smsbridge"].breaker.state("mobsms") == "open"
    assert_next_send_reaches(client, fake_mobsms, SEND)


def test_errors_that_reached_the_backend_end_an_unreached_run(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    """The breaker counts unreached failures in a row: a timeout in between proves the backend reachable."""
    app = make_app("smsmobileapi", breaker_failures=2, breaker_cooldown=30, read_timeout=0.3)
    breaker = app.extensions["smsbridge"].breaker
    breaker.failed("smsmobileapi")
    fake_vendor.misbehave("slow", seconds=2)
    assert app.test_client().post("/sendsms/", data=VENDOR_SEND).status_code == 504
    breaker.failed("smsmobileapi")
    assert breaker.state("smsmobileapi") == "closed"
