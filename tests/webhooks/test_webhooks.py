"""Webhooks end to end: upstreams post to the bridge, the bridge stores and delivers to the client's receiver.

Every party is a real HTTP server on 127.0.0.1: the bridge (served from a thread, or by gunicorn in a
child process), the upstream posting events (the test, as mobsms or the vendor would) and the client's
receivers below. A V2 receiver verifies as the vendor's example receivers do: HMAC-SHA256 hex of
`timestamp + "." + raw body` with the shared secret, compared in constant time to the signature after
`v1=`, timestamps more than 300 s off refused, repeats of an event id answered 200 {"duplicate": true},
anything else accepted with 202. A V1 receiver is the vendor's PHP example: 200 for a JSON payload.

In-process bridges retry after FIRST_RETRY_SECONDS patched down and poll every 50 ms; gunicorn bridges
keep the defaults (first retry after 1-3 s, polls every 0.5 s), which the restart test is built around.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

import app.state.sqlite.outbox
import app.webhooks.delivery
from app.access.resolution import hash_key
from app.access.tokens import TokenSigner
from app.fronts.webhook_sources import register_mobsms
from app.state.sqlite.outbox import SqliteOutbox as EventStore
from app.webhooks.delivery import API_VERSION
from tests.harness.bridge import UNICODE_TEXT, LiveBridge
from tests.harness.fakes.mobsms import DEFAULT_KEY, FakeMobsms, iso
from tests.harness.gunicorn import ROOT, Gunicorn, ready_workers, served_by, start_bridge
from tests.harness.net import port_of, stop_quickly
from tests.harness.redis import RedisServer
from tests.harness.webhooks import (
    RECEIVED_AT,
    SECRET,
    SENDER,
    TOKEN_SECRET,
    Endless,
    Redirecting,
    V1Receiver,
    V2Receiver,
    data_dir_of,
    event_in,
    events_in,
    gunicorn_source_url,
    mobsms_post,
    signature_problem,
    urls_of,
    wait_for,
)

VENDOR_SECRET = "whsec-vendor-shared-secret-0002"
ENVELOPE_KEYS = {"id", "type", "api_version", "created_at", "occurred_at", "data"}
V1_KEYS = {"date", "hour", "time_received", "message", "number", "guid"}
ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# --- helpers ----------------------------------------------------------------------------------------------


def mobsms_message(fake_mobsms: FakeMobsms, message: dict) -> dict:
    """Return a message as mobsms's GET /api/sms/{id} answers it (what its webhooks carry)."""
    answer = requests.get(
        f"{fake_mobsms.url}/api/sms/{message['id']}",
        headers={"Authorization": f"Bearer {DEFAULT_KEY}", "Accept": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 200
    return answer.json()["data"]


def signed(envelope: dict, secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """Return a body and headers as the vendor posts a V2 webhook."""
    body = json.dumps(envelope).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-SMSMobileAPI-Event": envelope["type"],
        "X-SMSMobileAPI-Event-ID": envelope["id"],
        "X-SMSMobileAPI-Timestamp": stamp,
        "X-SMSMobileAPI-Signature": f"v1={digest}",
        "Idempotency-Key": envelope["id"],
    }


def vendor_envelope(message: str = UNICODE_TEXT) -> dict:
    """A V2 `sms.received` event as the vendor sends it."""
    return {
        "id": str(uuid.uuid4()),
        "type": "sms.received",
        "api_version": API_VERSION,
        "created_at": "2026-11-23T10:15:00Z",
        "occurred_at": "2026-11-23T10:14:50Z",
        "data": {
            "guid": f"vendor-{uuid.uuid4().hex[:12]}",
            "from": "+32470000007",
            "message": message,
            "received_at": "2026-11-23T10:14:50Z",
            "alias": None,
            "device_id": "e5b7c9",
        },
    }


def check_v2_headers(headers: dict[str, str], envelope: dict) -> None:
    """The V2 headers agree with the envelope."""
    assert headers["content-type"] == "application/json"
    assert headers["x-smsmobileapi-event"] == envelope["type"]
    assert headers["x-smsmobileapi-event-id"] == envelope["id"]
    assert headers["idempotency-key"] == envelope["id"]
    assert re.fullmatch(r"v1=[0-9a-f]{64}", headers["x-smsmobileapi-signature"])
    assert abs(int(headers["x-smsmobileapi-timestamp"]) - time.time()) < 60
    assert set(envelope) == ENVELOPE_KEYS
    assert uuid.UUID(envelope["id"])
    assert envelope["api_version"] == API_VERSION
    assert ISO_SECONDS.match(envelope["created_at"]), envelope
    assert ISO_SECONDS.match(envelope["occurred_at"]), envelope


def label(text: str) -> str:
    return TokenSigner(TOKEN_SECRET.encode(), 3600).label(text)


# --- 1, 2: mobsms's events reach v1 and v2 receivers -----------------------------------------------------


def test_an_incoming_sms_from_mobsms_reaches_a_v1_receiver_as_the_vendors_payload(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    receiver: V1Receiver = receivers(V1Receiver)
    bridge = serve(webhook_url=receiver.url + "/sms/webhook.php", webhook_format="v1")
    inbound = mobsms_message(fake_mobsms, fake_mobsms.add_inbound(SENDER, UNICODE_TEXT, RECEIVED_AT))

    answer = mobsms_post(urls_of(bridge)["mobsms"], "incoming", inbound)

    assert answer.status_code == 200, answer.text
    event_id = answer.json()["id"]
    assert answer.json() == {"success": True, "stored": True, "id": event_id}
    # The answer came once the event was stored: it is there now, whatever the deliverer did meanwhile.
    assert event_in(data_dir_of(bridge), event_id)["type"] == "sms.received"

    wait_for(receiver.payloads, "the v1 receiver to get the SMS")
    assert receiver.payloads() == [
        {
            "date": "2026-11-23",
            "hour": "10:14:50",
            "time_received": "2026-11-23 10:14:50",
            "message": UNICODE_TEXT,
            "number": SENDER,
            "guid": inbound["message_id"],
        }
    ]
    _, request, status = receiver.log[0]
    assert status == 200
    assert request.method == "POST"
    assert request.path == "/sms/webhook.php"
    assert request.headers["content-type"] == "application/json"
    assert set(json.loads(request.body)) == V1_KEYS
    # Only the V2 format carries the X-SMSMobileAPI headers.
    assert not any(name.startswith("x-smsmobileapi") for name in request.headers)
    wait_for(lambda: event_in(data_dir_of(bridge), event_id)["status"] == "delivered", "delivered")
    assert event_in(data_dir_of(bridge), event_id)["attempts"] == 1
    assert len(receiver.log) == 1


def test_a_v2_receiver_verifies_and_accepts_received_sent_and_failed_events(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    bridge = serve(webhook_url=receiver.url + "/hooks", webhook_format="v2", webhook_secret=SECRET)
    url = urls_of(bridge)["mobsms"]
    inbound = mobsms_message(fake_mobsms, fake_mobsms.add_inbound(SENDER, UNICODE_TEXT, RECEIVED_AT))
    failed = fake_mobsms.add_outbound("+32470000001", "will fail", status="pending")
    fake_mobsms.set_status(failed["id"], "failed", "Generic failure")
    delivered = fake_mobsms.add_outbound("+32470000002", "will arrive", status="pending")
    fake_mobsms.set_status(delivered["id"], "delivered")

    ids = [
        mobsms_post(url, "incoming", inbound).json()["id"],
        mobsms_post(url, "status", mobsms_message(fake_mobsms, failed)).json()["id"],
        mobsms_post(url, "status", mobsms_message(fake_mobsms, delivered)).json()["id"],
    ]

    wait_for(lambda: len(receiver.envelopes()) == 3, "three events accepted")
    assert receiver.statuses() == [202, 202, 202]
    by_id = {envelope["id"]: (headers, envelope) for headers, envelope in receiver.events}
    assert sorted(by_id) == sorted(ids)
    for headers, envelope in by_id.values():
        check_v2_headers(headers, envelope)
        assert signature_problem(SECRET, headers, json.dumps(envelope, ensure_ascii=False).encode()) is None

    received = by_id[ids[0]][1]
    assert received["type"] == "sms.received"
    assert received["data"] == {
        "guid": inbound["message_id"],
        "from": SENDER,
        "message": UNICODE_TEXT,
        "received_at": "2026-11-23T10:14:50Z",
        "alias": None,
        "device_id": "5",
    }
    assert received["occurred_at"] == "2026-11-23T10:14:50Z"

    assert by_id[ids[1]][1]["type"] == "sms.failed"
    assert by_id[ids[1]][1]["data"] == {
        "guid": failed["message_id"],
        "to": "+32470000001",
        "status": "failed",
        "error": "Generic failure",
    }
    assert by_id[ids[2]][1]["type"] == "sms.sent"
    assert by_id[ids[2]][1]["data"] == {
        "guid": delivered["message_id"],
        "to": "+32470000002",
        "status": "delivered",
    }
    wait_for(
        lambda: {e["status"] for e in events_in(data_dir_of(bridge)).values()} == {"delivered"},
        "every event recorded as delivered",
    )


def test_a_v1_receiver_gets_no_status_events(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    receiver: V1Receiver = receivers(V1Receiver)
    bridge = serve(webhook_url=receiver.url, webhook_format="v1")
    url = urls_of(bridge)["mobsms"]
    failed = fake_mobsms.add_outbound("+32470000001", "x", status="failed", error_message="Generic failure")
    delivered = fake_mobsms.add_outbound("+32470000002", "y", status="delivered")

    answers = [mobsms_post(url, "status", failed), mobsms_post(url, "status", delivered)]

    assert [a.status_code for a in answers] == [200, 200]
    ids = [a.json()["id"] for a in answers]
    events = wait_for(
        lambda: (
            (e := events_in(data_dir_of(bridge)))
            and all(x["status"] == "delivered" for x in e.values())
            and e
        ),
        "the status events to be settled",
    )
    assert sorted(events) == sorted(ids)
    assert sorted(e["type"] for e in events.values()) == ["sms.failed", "sms.sent"]
    assert receiver.log == []


def test_a_status_without_a_known_status_stores_nothing(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    bridge = serve(webhook_url=receiver.url, webhook_secret=SECRET)
    pending = fake_mobsms.add_outbound("+32470000001", "x", status="pending")

    answer = mobsms_post(urls_of(bridge)["mobsms"], "status", pending)

    assert answer.status_code == 200
    assert answer.json() == {"success": True, "stored": False}
    assert events_in(data_dir_of(bridge)) == {}


# --- 3: only the URLs the bridge gave out -----------------------------------------------------------------


def test_a_source_url_the_bridge_did_not_give_out_is_refused_and_stores_nothing(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    bridge = serve(webhook_url=receiver.url, webhook_secret=SECRET)
    good = urls_of(bridge)["mobsms"]
    base = bridge.url + "/webhooks"
    inbound = fake_mobsms.add_inbound(SENDER, "hi", RECEIVED_AT)

    wrong_tag = mobsms_post(good[:-4] + "0000", "incoming", inbound)
    # A tag made right, but for a source the bridge does not have, or a client it does not serve.
    unknown_source = mobsms_post(f"{base}/twilio/default?key={label('twilio:default')}", "incoming", inbound)
    unknown_client = mobsms_post(f"{base}/mobsms/acme?key={label('mobsms:acme')}", "incoming", inbound)
    other_source_tag = mobsms_post(good.replace("/mobsms/", "/smsmobileapi/"), "incoming", inbound)

    for refused in (wrong_tag, unknown_source, unknown_client, other_source_tag):
        assert refused.status_code == 403, refused.text
        assert refused.json()["result"]["error_code"] == "key_refused"

    not_json = requests.post(good, data=b"event=incoming&message=hi", timeout=5)
    assert not_json.status_code == 400
    assert not_json.json()["result"]["error_code"] == "invalid_parameter"
    not_an_object = requests.post(good, json=[{"event": "incoming"}], timeout=5)
    assert not_an_object.status_code == 400

    assert events_in(data_dir_of(bridge)) == {}
    time.sleep(0.1)
    assert receiver.log == []


# --- 4: a receiver down for a while -----------------------------------------------------------------------


def test_an_event_arrives_once_with_its_id_after_the_receiver_comes_back(
    serve: Callable[..., LiveBridge],
    receivers: Callable[..., Any],
    fake_mobsms: FakeMobsms,
    fast_retries: None,
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    receiver.keep_alive = False
    receiver.failing = 3
    bridge = serve(webhook_url=receiver.url, webhook_secret=SECRET)
    inbound = fake_mobsms.add_inbound(SENDER, UNICODE_TEXT, RECEIVED_AT)

    event_id = mobsms_post(urls_of(bridge)["mobsms"], "incoming", inbound).json()["id"]

    # Three 503s, then the port closes: the next attempt is refused.
    wait_for(lambda: len(receiver.log) == 3, "three attempts answered 503", timeout=3)
    receiver.close_port()
    row = wait_for(
        lambda: (
            (r := event_in(data_dir_of(bridge), event_id))["attempts"] == 4 and r["lease_until"] == 0 and r
        ),
        "a fourth attempt, refused",
        timeout=3,
    )
    assert row["status"] == "pending"
    assert "refused the connection" in row["last_error"], row["last_error"]
    assert row["next_attempt_at"] > time.time()
    receiver.reopen_port()

    wait_for(receiver.envelopes, "the event after the receiver came back", timeout=4)
    time.sleep(0.3)
    assert receiver.statuses() == [503, 503, 503, 202]
    assert receiver.ids_received() == Counter({event_id: 4})
    assert [e["id"] for e in receiver.envelopes()] == [event_id]
    assert receiver.envelopes()[0]["data"]["message"] == UNICODE_TEXT
    row = event_in(data_dir_of(bridge), event_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 5, "")
    # Backoff: each wait is FIRST_RETRY_SECONDS (0.1) * 2^(attempt - 1), give or take half.
    arrivals = [arrived for arrived, _, _ in receiver.log]
    assert arrivals[1] - arrivals[0] >= 0.05
    assert arrivals[2] - arrivals[1] >= 0.1
    assert arrivals[3] - arrivals[2] >= 0.2 + 0.4  # after attempt 3, and after the refused attempt 4


# --- 5, 6: the real runtime --------------------------------------------------------------------------------


@dataclass
class TwoWorkerRun:
    ids: list[str]
    workers: set[int]
    storing_workers: set[int]
    receiver: V2Receiver
    events: dict[str, dict[str, Any]]
    output: str
    tag: str


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoWorkerRun]:
    """gunicorn with two workers (Redis for the limits) stores events posted to either worker."""
    tmp_path = tmp_path_factory.mktemp("two-workers")
    (tmp_path / "redis").mkdir()
    receiver = V2Receiver(SECRET, delay=0.02)
    redis_server = RedisServer(tmp_path / "redis")
    bridge = start_bridge(
        tmp_path,
        {
            "SMSBRIDGE_WORKERS": "2",
            "SMSBRIDGE_RATELIMIT_STORAGE": redis_server.url,
            "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
            "SMSBRIDGE_WEBHOOK_URL": receiver.url,
            "SMSBRIDGE_WEBHOOK_SECRET": SECRET,
            "SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        },
    )
    url = gunicorn_source_url(bridge)
    ids: list[str] = []
    probes: dict[str, str] = {}

    def post(n: int) -> None:
        probe = f"event-{n}"
        if n % 3 == 2:  # the sandbox console emits events too
            answer = requests.post(
                bridge.url + "/sandbox/inbound",
                data={"apikey": "sandbox-key-1", "number": SENDER, "message": f"{UNICODE_TEXT} {n}"},
                headers={"Connection": "close", "X-Probe": probe},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            probes[probe] = ""
            return
        body = {
            "event": "incoming",
            "data": {
                "id": 1000 + n,
                "message_id": str(uuid.uuid4()),
                "sender_number": SENDER,
                "message": f"{UNICODE_TEXT} {n}",
                "direction": "inbound",
                "status": "received",
                "created_at": RECEIVED_AT,
            },
            "timestamp": iso(None),
        }
        answer = requests.post(url, json=body, headers={"Connection": "close", "X-Probe": probe}, timeout=10)
        assert answer.status_code == 200, answer.text
        probes[probe] = answer.json()["id"]

    try:
        workers = ready_workers(bridge)
        storing: set[int] = set()
        batch = 0
        with ThreadPoolExecutor(6) as pool:
            while storing != workers:
                assert batch < 5, "one worker stored every event"
                list(pool.map(post, range(batch * 12, batch * 12 + 12)))
                storing = {pid for pid, _ in served_by(bridge, list(probes)).values()}
                batch += 1
        wait_for(lambda: len(receiver.envelopes()) >= len(probes), "every event delivered", timeout=10)
        time.sleep(1.2)  # more than two polls of each deliverer: any repeat would have come by now
        ids = [i for i in probes.values() if i]
        events = events_in(tmp_path / "gunicorn-data")
    finally:
        output = bridge.stop()
        redis_server.stop()
        stop_quickly(receiver.stop, port_of(receiver.url))
    yield TwoWorkerRun(ids, workers, storing, receiver, events, output, url.rsplit("key=", 1)[1])


def test_two_gunicorn_workers_deliver_each_event_exactly_once(two_worker_run: TwoWorkerRun) -> None:
    run = two_worker_run
    assert run.storing_workers == run.workers  # both workers' deliverers were running
    assert run.receiver.duplicates == 0
    assert set(run.receiver.ids_received().values()) == {1}
    assert set(run.receiver.ids_accepted().values()) == {1}
    assert set(run.ids) <= set(run.receiver.ids_accepted())
    assert set(run.events) == set(run.receiver.ids_accepted())
    # One attempt each: no two deliverers ever held the same event.
    assert {(e["status"], e["attempts"]) for e in run.events.values()} == {("delivered", 1)}
    assert {e["type"] for e in run.receiver.envelopes()} == {"sms.received"}
    messages = sorted(e["data"]["message"] for e in run.receiver.envelopes())
    assert len(set(messages)) == len(messages)
    assert all(m.startswith(UNICODE_TEXT) for m in messages)


def test_the_log_shows_no_message_text_and_no_source_url_secret(two_worker_run: TwoWorkerRun) -> None:
    output = two_worker_run.output
    assert "Traceback" not in output
    assert UNICODE_TEXT not in output
    assert SECRET not in output
    # The tag is the only credential of a source URL: whoever reads the log could post events with it.
    assert two_worker_run.tag not in output


def test_an_event_pending_when_the_bridge_restarts_is_delivered_once_with_its_id(
    receivers: Callable[..., Any], tmp_path: Path
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    receiver.failing = 1000
    env = {
        "SMSBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
        "SMSBRIDGE_WEBHOOK_URL": receiver.url,
        "SMSBRIDGE_WEBHOOK_SECRET": SECRET,
        "SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    first = Gunicorn(env, tmp_path / "first.log")
    try:
        body = {
            "event": "incoming",
            "data": {
                "id": 7,
                "message_id": str(uuid.uuid4()),
                "sender_number": SENDER,
                "message": UNICODE_TEXT,
                "direction": "inbound",
                "status": "received",
                "created_at": RECEIVED_AT,
            },
            "timestamp": iso(None),
        }
        answer = requests.post(gunicorn_source_url(first), json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        event_id = answer.json()["id"]
        # The first attempt failed and was recorded (no claim left open): stop before the retry.
        wait_for(
            lambda: (r := event_in(tmp_path / "data", event_id))["attempts"] >= 1 and r["lease_until"] == 0,
            "a failed first attempt",
        )
    finally:
        first.stop()  # SIGTERM, and wait until gunicorn has exited
    row = event_in(tmp_path / "data", event_id)
    assert (row["status"], row["last_error"]) == ("pending", "HTTP 503")
    assert receiver.envelopes() == []
    attempts_before = len(receiver.log)

    receiver.failing = 0
    second = Gunicorn(env, tmp_path / "second.log")
    try:
        wait_for(receiver.envelopes, "the event delivered by the restarted bridge", timeout=10)
        time.sleep(1.0)  # two polls: a repeat would have come by now
    finally:
        second.stop()
    assert [e["id"] for e in receiver.envelopes()] == [event_id]
    assert receiver.ids_received() == Counter({event_id: attempts_before + 1})
    assert receiver.envelopes()[0]["data"]["message"] == UNICODE_TEXT
    row = event_in(tmp_path / "data", event_id)
    assert (row["status"], row["attempts"]) == ("delivered", attempts_before + 1)


# --- 7: safety ----------------------------------------------------------------------------------------------


def test_a_loopback_target_is_refused_before_any_connection(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    bridge = serve(webhook_url=receiver.url, webhook_secret=SECRET, webhook_allow_private=False)

    event_id = mobsms_post(
        urls_of(bridge)["mobsms"], "incoming", fake_mobsms.add_inbound(SENDER, "hi", RECEIVED_AT)
    ).json()["id"]

    row = wait_for(
        lambda: (r := event_in(data_dir_of(bridge), event_id))["last_error"] and r, "a refused attempt"
    )
    assert row["status"] == "pending"
    assert receiver.connections == 0
    assert "private" in row["last_error"], f"last_error {row['last_error']!r} does not say why"


def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    elsewhere: V2Receiver = receivers(V2Receiver, SECRET)
    redirecting: Redirecting = receivers(Redirecting, elsewhere.url + "/stolen")
    bridge = serve(webhook_url=redirecting.url, webhook_secret=SECRET)

    event_id = mobsms_post(
        urls_of(bridge)["mobsms"], "incoming", fake_mobsms.add_inbound(SENDER, "hi", RECEIVED_AT)
    ).json()["id"]

    row = wait_for(
        lambda: (r := event_in(data_dir_of(bridge), event_id))["last_error"] and r, "a failed attempt"
    )
    assert (row["status"], row["last_error"]) == ("pending", "HTTP 302")
    assert redirecting.statuses() == [302]
    time.sleep(0.2)
    assert elsewhere.connections == 0


def test_a_huge_answer_is_not_read_past_the_bound(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], fake_mobsms: FakeMobsms
) -> None:
    endless: Endless = receivers(Endless)
    bridge = serve(webhook_url=endless.url, webhook_secret=SECRET)
    started = time.monotonic()

    event_id = mobsms_post(
        urls_of(bridge)["mobsms"], "incoming", fake_mobsms.add_inbound(SENDER, "hi", RECEIVED_AT)
    ).json()["id"]

    wait_for(lambda: event_in(data_dir_of(bridge), event_id)["status"] == "delivered", "delivery", 3)
    assert time.monotonic() - started < 2
    assert event_in(data_dir_of(bridge), event_id)["attempts"] == 1
    assert endless.statuses() == [202]
    # The bridge hung up after its 64 KiB: what went out is what the socket buffers took, far from 1 GiB.
    time.sleep(0.3)
    assert endless.sent < 64 * 1024 * 1024, endless.sent


# --- 8: dead events ---------------------------------------------------------------------------------------


def dead_event(data_dir: Path, message: str = UNICODE_TEXT) -> str:
    """Store an event whose one attempt failed after its retry window: dead."""
    store = EventStore(data_dir)
    data = {
        "guid": str(uuid.uuid4()),
        "from": SENDER,
        "message": message,
        "received_at": 1795428890,
        "alias": None,
        "device_id": "5",
    }
    event_id = store.add("default", "sms.received", data)
    claimed = store.claim()
    assert claimed is not None and claimed["id"] == event_id
    store.failed(claimed, "HTTP 503", retry_window=0.0)
    assert [e["id"] for e in store.dead()] == [event_id]
    return event_id


def webhooks_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSBRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "webhooks", *args],
        cwd=ROOT,
        env={**env, "SMSBRIDGE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_dead_event_is_listed_replayed_and_delivered_with_its_id(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], tmp_path: Path
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    data_dir = tmp_path / "data"
    event_id = dead_event(data_dir)

    listed = webhooks_cli(data_dir, "dead")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"{event_id} sms.received default 1 HTTP 503"]
    assert UNICODE_TEXT not in listed.stdout

    unknown = webhooks_cli(data_dir, "replay", str(uuid.uuid4()))
    assert unknown.returncode == 1
    replayed = webhooks_cli(data_dir, "replay", event_id)
    assert replayed.returncode == 0, replayed.stderr
    assert webhooks_cli(data_dir, "dead").stdout == ""
    assert events_in(data_dir)[event_id]["status"] == "pending"

    # The bridge (re)started on the data directory delivers the replayed event.
    serve(data_dir=data_dir, webhook_url=receiver.url, webhook_secret=SECRET)
    wait_for(receiver.envelopes, "the replayed event")
    assert [e["id"] for e in receiver.envelopes()] == [event_id]
    assert receiver.envelopes()[0]["data"]["message"] == UNICODE_TEXT
    assert receiver.envelopes()[0]["data"]["received_at"] == "2026-11-23T10:14:50Z"
    row = wait_for(lambda: (r := event_in(data_dir, event_id))["status"] == "delivered" and r, "delivered")
    assert row["attempts"] == 1


def test_a_running_bridge_delivers_an_event_replayed_while_it_runs(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], tmp_path: Path
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    data_dir = tmp_path / "data"
    event_id = dead_event(data_dir)
    bridge = serve(data_dir=data_dir, webhook_url=receiver.url, webhook_secret=SECRET)  # nothing pending

    assert webhooks_cli(data_dir, "replay", event_id).returncode == 0

    try:
        wait_for(receiver.envelopes, "the replayed event, delivered by the bridge already running", timeout=3)
    except AssertionError as failure:
        deliverer = bridge.app.extensions["smsbridge"].deliverer
        raise AssertionError(
            f"{failure}; event {event_in(data_dir, event_id)}; deliverer thread {deliverer._thread}"
        ) from None
    assert [e["id"] for e in receiver.envelopes()] == [event_id]


# --- 9: the vendor's webhooks, relayed --------------------------------------------------------------------


def test_the_vendors_v1_payload_is_relayed_without_a_vendor_secret(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any]
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    bridge = serve("smsmobileapi", webhook_url=receiver.url, webhook_secret=SECRET)
    payload = {
        "date": "2026-11-23",
        "hour": "12:00:00",
        "time_received": "2026-11-23 11:59:50",
        "message": UNICODE_TEXT,
        "number": "+123456789",
        "guid": "abcde12345",
    }

    answer = requests.post(urls_of(bridge)["smsmobileapi"], json=payload, timeout=5)

    assert answer.status_code == 200, answer.text
    wait_for(receiver.envelopes, "the relayed event")
    envelope = receiver.envelopes()[0]
    assert envelope["id"] == answer.json()["id"]
    assert envelope["type"] == "sms.received"
    data = envelope["data"]
    assert (data["from"], data["message"], data["guid"]) == ("+123456789", UNICODE_TEXT, "abcde12345")
    assert data["received_at"].startswith("2026-11-23T")


def test_the_vendors_v2_webhooks_are_verified_then_relayed(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any]
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    bridge = serve(
        "smsmobileapi", webhook_url=receiver.url, webhook_secret=SECRET, vendor_webhook_secret=VENDOR_SECRET
    )
    url = urls_of(bridge)["smsmobileapi"]
    now = int(time.time())

    refused = []
    envelope = vendor_envelope()
    body, headers = signed(envelope, "not-the-vendor-secret")
    refused.append(requests.post(url, data=body, headers=headers, timeout=5))
    body, headers = signed(envelope, VENDOR_SECRET, timestamp=now - 330)
    refused.append(requests.post(url, data=body, headers=headers, timeout=5))
    body, headers = signed(envelope, VENDOR_SECRET, timestamp=now + 330)
    refused.append(requests.post(url, data=body, headers=headers, timeout=5))
    body, headers = signed(envelope, VENDOR_SECRET)
    tampered = body.replace(b"+32470000007", b"+32470000666")
    refused.append(requests.post(url, data=tampered, headers=headers, timeout=5))
    refused.append(requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=5))
    # The vendor's V1 payloads are unsigned: with a vendor secret, only V2 gets in.
    refused.append(requests.post(url, json={"number": "+1", "message": "m", "guid": "g"}, timeout=5))
    for answer in refused:
        assert answer.status_code == 403, answer.text
        assert answer.json()["result"]["error_code"] == "key_refused"
    assert events_in(data_dir_of(bridge)) == {}

    body, headers = signed(envelope, VENDOR_SECRET, timestamp=now - 250)
    answer = requests.post(url, data=body, headers=headers, timeout=5)

    assert answer.status_code == 200, answer.text
    wait_for(receiver.envelopes, "the relayed event")
    [(headers, relayed)] = receiver.events
    check_v2_headers(headers, relayed)
    assert relayed["id"] == answer.json()["id"]
    assert relayed["type"] == "sms.received"
    assert relayed["data"] == envelope["data"]
    assert relayed["occurred_at"] == "2026-11-23T10:14:50Z"


def test_the_vendors_v2_received_sms_reaches_a_v1_receiver(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any]
) -> None:
    receiver: V1Receiver = receivers(V1Receiver)
    bridge = serve("smsmobileapi", webhook_url=receiver.url, webhook_format="v1")
    envelope = vendor_envelope()
    body, headers = signed(envelope, VENDOR_SECRET)

    answer = requests.post(urls_of(bridge)["smsmobileapi"], data=body, headers=headers, timeout=5)

    assert answer.status_code == 200, answer.text
    try:
        wait_for(receiver.payloads, "the relayed SMS at the v1 receiver", timeout=3)
    except AssertionError as failure:
        raise AssertionError(
            f"{failure}; event {event_in(data_dir_of(bridge), answer.json()['id'])}"
        ) from None
    assert receiver.payloads() == [
        {
            "date": "2026-11-23",
            "hour": "10:14:50",
            "time_received": "2026-11-23 10:14:50",
            "message": UNICODE_TEXT,
            "number": "+32470000007",
            "guid": envelope["data"]["guid"],
        }
    ]


def test_a_vendor_event_posted_twice_reaches_the_client_once(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any]
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    bridge = serve(
        "smsmobileapi", webhook_url=receiver.url, webhook_secret=SECRET, vendor_webhook_secret=VENDOR_SECRET
    )
    envelope = vendor_envelope()

    # The vendor retries an event whose answer it did not get: same event id, a fresh signature.
    for _ in range(2):
        body, headers = signed(envelope, VENDOR_SECRET)
        assert requests.post(urls_of(bridge)["smsmobileapi"], data=body, headers=headers, timeout=5).ok

    wait_for(
        lambda: all(e["status"] == "delivered" for e in events_in(data_dir_of(bridge)).values()),
        "every stored event delivered",
    )
    time.sleep(0.2)
    guids = [e["data"]["guid"] for e in receiver.envelopes()]
    assert guids == [envelope["data"]["guid"]], "the client got the vendor's one event as two events"


# --- 10: managed mode ---------------------------------------------------------------------------------------


def test_managed_clients_get_their_own_events_and_register_with_mobsms(
    serve: Callable[..., LiveBridge],
    receivers: Callable[..., Any],
    fake_mobsms: FakeMobsms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acme: V2Receiver = receivers(V2Receiver, "acme-webhook-secret")
    beta: V1Receiver = receivers(V1Receiver)
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", "acme-webhook-secret")
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f"""
[clients.acme-shop]
key_sha256 = ["{hash_key("acme-key")}"]
backend = "mobsms"
upstream_key = "{DEFAULT_KEY}"
webhook_url = "{acme.url}/sms/webhook"
webhook_format = "v2"
webhook_secret_env = "ACME_WEBHOOK_SECRET"
vendor_webhook_secret = "{VENDOR_SECRET}"

[clients.beta]
key_sha256 = ["{hash_key("beta-key")}"]
backend = "mobsms"
upstream_key = "{DEFAULT_KEY}"
webhook_url = "{beta.url}/webhook.php"
webhook_format = "v1"

[clients.quiet]
key_sha256 = ["{hash_key("quiet-key")}"]
backend = "sandbox"
"""
    )
    bridge = serve(clients_file=str(clients))
    state = bridge.app.extensions["smsbridge"]

    registered = register_mobsms(state, "acme-shop")

    acme_url = urls_of(bridge, "acme-shop")["mobsms"]
    assert registered == {"status": 200, "url": acme_url}
    [put] = fake_mobsms.received
    assert (put.method, put.path) == ("PUT", "/api/webhooks")
    assert put.headers["authorization"] == f"Bearer {DEFAULT_KEY}"
    assert put.json == {"webhook_url_incoming": acme_url, "webhook_url_status": acme_url}
    assert fake_mobsms.webhooks == put.json
    with pytest.raises(ValueError, match="not a mobsms client"):
        register_mobsms(state, "quiet")

    # mobsms posts where it was told.
    inbound = mobsms_message(fake_mobsms, fake_mobsms.add_inbound(SENDER, UNICODE_TEXT, RECEIVED_AT))
    to_acme = mobsms_post(fake_mobsms.webhooks["webhook_url_incoming"], "incoming", inbound)
    to_beta = mobsms_post(urls_of(bridge, "beta")["mobsms"], "incoming", inbound)
    to_quiet = mobsms_post(urls_of(bridge, "quiet")["mobsms"], "incoming", inbound)
    beta_path_acme_tag = mobsms_post(acme_url.replace("/acme-shop?", "/beta?"), "incoming", inbound)
    envelope = vendor_envelope()
    body, headers = signed(envelope, VENDOR_SECRET)
    vendor_to_acme = requests.post(
        urls_of(bridge, "acme-shop")["smsmobileapi"], data=body, headers=headers, timeout=5
    )
    body, headers = signed(envelope, "another-secret")
    vendor_bad = requests.post(
        urls_of(bridge, "acme-shop")["smsmobileapi"], data=body, headers=headers, timeout=5
    )

    assert [to_acme.status_code, to_beta.status_code, to_quiet.status_code] == [200, 200, 200]
    assert to_quiet.json() == {"success": True, "stored": False, "id": None}
    assert beta_path_acme_tag.status_code == 403
    assert vendor_to_acme.status_code == 200
    assert vendor_bad.status_code == 403

    wait_for(lambda: len(acme.envelopes()) == 2, "acme's two events")
    wait_for(beta.payloads, "beta's event")
    by_id = {e["id"]: e for e in acme.envelopes()}
    assert set(by_id) == {to_acme.json()["id"], vendor_to_acme.json()["id"]}
    assert by_id[to_acme.json()["id"]]["data"]["message"] == UNICODE_TEXT
    assert by_id[vendor_to_acme.json()["id"]]["data"] == envelope["data"]
    assert {r.path for _, r, _ in acme.log} == {"/sms/webhook"}
    assert beta.payloads() == [
        {
            "date": "2026-11-23",
            "hour": "10:14:50",
            "time_received": "2026-11-23 10:14:50",
            "message": UNICODE_TEXT,
            "number": SENDER,
            "guid": inbound["message_id"],
        }
    ]
    assert {e["client"] for e in events_in(data_dir_of(bridge)).values()} == {"acme-shop", "beta"}


def test_register_mobsms_is_for_managed_clients(
    serve: Callable[..., LiveBridge], fake_mobsms: FakeMobsms
) -> None:
    bridge = serve()
    with pytest.raises(ValueError, match="passthrough"):
        register_mobsms(bridge.app.extensions["smsbridge"], "default")
    assert fake_mobsms.received == []


# --- 11: targets resolved at delivery, never stored ------------------------------------------------------

OLD_SECRET = "whsec-acme-before-rotation-0003"
NEW_SECRET = "whsec-acme-after-the-rotation-000004"


def acme_clients_file(path: Path, webhook: str) -> None:
    """Write a clients file whose one client, acme (sandbox), has the given webhook lines."""
    path.write_text(
        f"""
[clients.acme]
key_sha256 = ["{hash_key("acme-key")}"]
backend = "sandbox"
{webhook}
"""
    )


def raw_bytes(data_dir: Path) -> bytes:
    """The webhook database's bytes on disk, its write-ahead log included."""
    return b"".join(
        path.read_bytes()
        for path in (data_dir / "webhooks.sqlite3", data_dir / "webhooks.sqlite3-wal")
        if path.exists()
    )


def test_a_rotated_secret_signs_the_pending_events_and_event_rows_hold_no_target(
    serve: Callable[..., LiveBridge],
    receivers: Callable[..., Any],
    fake_mobsms: FakeMobsms,
    fast_retries: None,
    tmp_path: Path,
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, NEW_SECRET)  # verifies with the secret after rotation
    receiver.failing = 10**6
    clients = tmp_path / "clients.toml"
    acme_clients_file(clients, f'webhook_url = "{receiver.url}/hook"\nwebhook_secret = "{OLD_SECRET}"')
    bridge = serve(clients_file=str(clients))
    state = bridge.app.extensions["smsbridge"]
    inbound = fake_mobsms.add_inbound(SENDER, UNICODE_TEXT, RECEIVED_AT)

    event_id = mobsms_post(urls_of(bridge, "acme")["mobsms"], "incoming", inbound).json()["id"]
    wait_for(lambda: len(receiver.log) >= 1, "a first attempt, answered 503")

    # The stored event holds neither the target nor its secret.
    with closing(sqlite3.connect(data_dir_of(bridge) / "webhooks.sqlite3")) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(webhook_events)")}
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not columns & {"url", "secret", "format"}, columns
    stored = raw_bytes(data_dir_of(bridge))
    assert event_id.encode() in stored  # the bytes read are the events' own
    assert OLD_SECRET.encode() not in stored
    assert receiver.url.encode() not in stored

    acme_clients_file(clients, f'webhook_url = "{receiver.url}/hook"\nwebhook_secret = "{NEW_SECRET}"')
    wait_for(lambda: state.access.webhook_for("acme").secret == NEW_SECRET, "the clients file reloaded")
    receiver.failing = 0

    wait_for(receiver.envelopes, "the pending event, signed with the new secret", timeout=10)
    assert [e["id"] for e in receiver.envelopes()] == [event_id]
    assert 401 not in receiver.statuses(), receiver.statuses()
    # The deliverer records the outcome after the receiver has answered: wait for it, don't race it.
    wait_for(lambda: event_in(data_dir_of(bridge), event_id)["status"] == "delivered", "recorded", 5)


def test_the_pending_events_of_a_client_whose_target_was_removed_go_dead_saying_why(
    serve: Callable[..., LiveBridge],
    receivers: Callable[..., Any],
    fake_mobsms: FakeMobsms,
    fast_retries: None,
    tmp_path: Path,
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, OLD_SECRET)
    receiver.failing = 10**6
    clients = tmp_path / "clients.toml"
    acme_clients_file(clients, f'webhook_url = "{receiver.url}/hook"\nwebhook_secret = "{OLD_SECRET}"')
    bridge = serve(clients_file=str(clients))
    state = bridge.app.extensions["smsbridge"]
    inbound = fake_mobsms.add_inbound(SENDER, "hi", RECEIVED_AT)
    event_id = mobsms_post(urls_of(bridge, "acme")["mobsms"], "incoming", inbound).json()["id"]
    wait_for(lambda: len(receiver.log) >= 1, "a first attempt, answered 503")

    acme_clients_file(clients, "# no webhook any more")
    wait_for(lambda: state.access.webhook_for("acme") is None, "the clients file reloaded")

    row = wait_for(
        lambda: (r := event_in(data_dir_of(bridge), event_id))["status"] == "dead" and r, "the event dead"
    )
    assert row["last_error"] == "the client has no webhook target now"
    attempts = len(receiver.log)
    time.sleep(0.3)
    assert len(receiver.log) == attempts  # nothing more is posted to the old target


def test_a_database_made_with_targets_in_its_rows_loses_them_and_their_secrets(tmp_path: Path) -> None:
    """The migration drops the url, format and secret of every stored event and leaves no copy behind."""
    path = tmp_path / "webhooks.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(app.state.sqlite.outbox.SCHEMA)
        db.execute("PRAGMA user_version = 1")
        for n in range(50):
            db.execute(
                "INSERT INTO webhook_events (id, client, type, data, url, format, secret, created_at,"
                " next_attempt_at, status) VALUES (?, 'acme', 'sms.sent', '{}', ?, 'v2', ?, 1.0, 1.0, ?)",
                (
                    f"event-{n}",
                    f"http://127.0.0.1:9/hook-{OLD_SECRET}",
                    OLD_SECRET,
                    "pending" if n else "dead",
                ),
            )
    assert OLD_SECRET.encode() in raw_bytes(tmp_path)

    with closing(EventStore(tmp_path)) as store:
        assert [event["id"] for event in store.dead()] == ["event-0"]
        assert store.counts() == {"pending": 49, "dead": 1}

    with closing(sqlite3.connect(path)) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(webhook_events)")}
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not columns & {"url", "secret", "format"}, columns
    assert OLD_SECRET.encode() not in raw_bytes(tmp_path)


# --- 12: one slow receiver, others on time ---------------------------------------------------------------


def test_one_slow_receiver_does_not_hold_back_another_clients_events(
    receivers: Callable[..., Any], tmp_path: Path
) -> None:
    """Under gunicorn's gevent worker: the slow target gets its cap of attempts at once, others go on."""
    slow: V2Receiver = receivers(V2Receiver, OLD_SECRET, delay=30.0)  # far past the 10 s timeout
    quick: V2Receiver = receivers(V2Receiver, NEW_SECRET)
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f"""
[clients.slow]
key_sha256 = ["{hash_key("slow-key")}"]
backend = "sandbox"
webhook_url = "{slow.url}/hook"
webhook_secret = "{OLD_SECRET}"

[clients.quick]
key_sha256 = ["{hash_key("quick-key")}"]
backend = "sandbox"
webhook_url = "{quick.url}/hook"
webhook_secret = "{NEW_SECRET}"
"""
    )
    bridge = Gunicorn(
        {
            "SMSBRIDGE_DATA_DIR": str(tmp_path / "data"),
            "SMSBRIDGE_WORKERS": "1",
            "SMSBRIDGE_CLIENTS_FILE": str(clients),
            "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
            "SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
            "SMSBRIDGE_WEBHOOK_TIMEOUT": "10",  # SMSBRIDGE_WEBHOOK_TARGET_CONCURRENCY: 4, the default
        },
        tmp_path / "gunicorn.log",
    )
    try:

        def post(client: str, n: int) -> None:
            body = {
                "event": "incoming",
                "data": {
                    "id": n,
                    "message_id": str(uuid.uuid4()),
                    "sender_number": SENDER,
                    "message": f"event {n}",
                    "direction": "inbound",
                    "status": "received",
                    "created_at": RECEIVED_AT,
                },
                "timestamp": iso(None),
            }
            url = gunicorn_source_url(bridge, client=client)
            assert requests.post(url, json=body, timeout=10).status_code == 200

        for n in range(6):
            post("slow", n)
        wait_for(lambda: slow.connections >= 1, "an attempt at the slow receiver", timeout=10)

        started = time.monotonic()
        post("quick", 100)
        wait_for(quick.envelopes, "the quick client's event", timeout=25)
        waited = time.monotonic() - started

        assert waited < 5.0, f"the quick client's event waited {waited:.1f} s behind the slow receiver"
        # The slow receiver holds its cap of attempts (4) for the whole timeout, and no more.
        wait_for(lambda: slow.connections >= 4, "four attempts at the slow receiver at once", timeout=3)
        time.sleep(0.5)
        assert slow.connections == 4, "more attempts at once than the cap per target"
    finally:
        output = bridge.stop()
    assert "Traceback" not in output


# --- 13: retention, and what reads the events ------------------------------------------------------------


def test_delivered_events_are_purged_after_the_retention_by_a_sweep_at_most_once_a_minute(
    tmp_path: Path,
) -> None:
    store = EventStore(tmp_path)
    now = time.time()
    ids = {}
    for name in ("delivered long ago", "delivered yesterday", "dead", "pending"):
        ids[name] = store.add("acme", "sms.sent", {"guid": name})
    for name, when in (("delivered long ago", now - 8 * 86400), ("delivered yesterday", now - 86400)):
        store.delivered(ids[name], now=when)
    claimed = store.claim(now=now + 1)
    assert claimed is not None and claimed["id"] == ids["dead"]
    store.failed(claimed, "HTTP 503", retry_window=0)

    assert store.sweep(7 * 86400, now=now) == 1
    assert set(events_in(tmp_path)) == {ids["delivered yesterday"], ids["dead"], ids["pending"]}

    store.delivered(ids["delivered yesterday"], now=now - 30 * 86400)
    assert store.sweep(7 * 86400, now=now + 59) == 0  # not again within the minute
    assert store.sweep(7 * 86400, now=now + 61) == 1
    assert set(events_in(tmp_path)) == {ids["dead"], ids["pending"]}  # dead events are kept
    store.close()


def test_a_running_bridge_purges_delivered_events_past_the_retention(
    serve: Callable[..., LiveBridge], receivers: Callable[..., Any], tmp_path: Path
) -> None:
    receiver: V2Receiver = receivers(V2Receiver, SECRET)
    data_dir = tmp_path / "data"
    with closing(EventStore(data_dir)) as store:
        old = store.add("default", "sms.sent", {"guid": "old"})
        store.delivered(old, now=time.time() - 3 * 86400)
        recent = store.add("default", "sms.sent", {"guid": "recent"})
        store.delivered(recent, now=time.time() - 86400)

    serve(data_dir=data_dir, webhook_url=receiver.url, webhook_secret=SECRET, webhook_retention_days=2)

    wait_for(lambda: old not in events_in(data_dir), "the event delivered 3 days ago purged")
    assert recent in events_in(data_dir)


def test_what_start_readyz_metrics_and_the_deliverer_read_of_events_searches_an_index(
    tmp_path: Path,
) -> None:
    """Worker start, /readyz and /metrics read `counts()`; the deliverer claims and sweeps.

    Each statement must SEARCH an index (cost by the events it finds), never SCAN the table (cost by
    every event ever delivered): read from SQLite's query plans, not from timings.
    """
    with closing(EventStore(tmp_path)) as store:
        for n in range(300):
            store.delivered(store.add("acme", "sms.sent", {"guid": str(n)}))
    with closing(sqlite3.connect(tmp_path / "webhooks.sqlite3")) as db:
        for sql, params in (
            (app.state.sqlite.outbox.COUNT_SQL, ()),
            (app.state.sqlite.outbox.PURGE_SQL, (0.0,)),
            (app.state.sqlite.outbox.CLAIM_SQL, (0.0, 0.0, 0.0, '["busy"]')),
        ):
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
            on_events = [step for step in plan if "webhook_events" in step]
            assert on_events, plan
            assert all(step.startswith("SEARCH webhook_events USING") for step in on_events), (sql, plan)


def test_dead_events_are_kept_until_the_operator_purges_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    event_id = dead_event(data_dir)
    with closing(EventStore(data_dir)) as store:
        assert store.sweep(0.0) == 0  # a retention of nothing purges delivered events only
    assert set(events_in(data_dir)) == {event_id}

    purged = webhooks_cli(data_dir, "purge-dead")

    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == "1 dead events purged\n"
    assert events_in(data_dir) == {}


def test_an_outcome_recorded_after_its_lease_never_ends_a_newer_attempt(tmp_path: Path) -> None:
    """A deliverer whose lease ran out (its store was down) records late: the newer claim stands."""
    store = EventStore(tmp_path)
    try:
        event_id = store.add("acme", "sms.sent", {"guid": "g1"})
        old = store.claim()
        assert old is not None and old["attempts"] == 1
        newer = store.claim(now=time.time() + 10_000)  # the first lease expired: another deliverer claims
        assert newer is not None and newer["id"] == event_id and newer["attempts"] == 2
        store.failed(old, "HTTP 503", retry_window=0.0)  # would make it dead
        store.delivered(event_id, attempt=old["attempts"])  # would end the newer attempt
        row = events_in(tmp_path)[event_id]
        assert (row["status"], row["attempts"]) == ("pending", 2), row
        assert row["lease_until"] > time.time(), row  # still the newer deliverer's
        store.delivered(event_id, attempt=newer["attempts"])
        assert events_in(tmp_path)[event_id]["status"] == "delivered"
        store.failed(newer, "HTTP 503", retry_window=0.0)  # late, after the delivery: undoes nothing
        assert events_in(tmp_path)[event_id]["status"] == "delivered"
    finally:
        store.close()
