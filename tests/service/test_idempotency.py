"""Idempotency keys: a repeated send returns the first answer and never sends twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from app.config import ConfigError, Settings
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.soap import envelope

TO = "+32470000001"
SEND = {"apikey": "mobsms-key-1", "recipients": TO, "message": "Your order shipped"}


def test_a_repeat_returns_the_first_answer_and_sends_nothing(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms").test_client()
    first = client.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "order-42"})
    again = client.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "order-42"})
    assert first.get_json()["result"]["sent"] == "1"
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    [sent] = fake_mobsms.received
    # The key also travels to mobsms as its own client reference.
    assert sent.json == {"message": "Your order shipped", "recipient_number": TO, "my_id": "order-42"}


def test_legacy_clients_give_the_key_as_a_parameter(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi").test_client()
    params = {
        "apikey": "vendor-key-1",
        "recipients": TO,
        "message": "Hi",
        "idempotency_key": "cron-2026-11-23",
    }
    first = client.get("/sendsms/", query_string=params)
    again = client.get("/sendsms/", query_string=params)
    assert again.get_data() == first.get_data()
    [sent] = fake_vendor.received
    # The vendor never sees the bridge's own parameter.
    assert sent.query == [("apikey", "vendor-key-1"), ("recipients", TO), ("message", "Hi")]


def test_the_same_key_with_other_parameters_is_refused(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms").test_client()
    client.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k1"})
    other = client.post(
        "/sendsms/", data={**SEND, "message": "Something else"}, headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 422
    assert other.get_json()["result"]["error_code"] == "idempotency_key_reused"
    assert len(fake_mobsms.received) == 1


def test_a_repeat_while_the_first_is_in_flight_waits_for_its_answer(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    app = make_app("mobsms")
    backend = app.extensions["smsbridge"].backend
    slow_send = backend.send

    def send_slowly(request: object) -> object:
        time.sleep(0.5)
        return slow_send(request)

    backend.send = send_slowly
    answers: list[bytes] = []

    def post() -> None:
        answers.append(
            app.test_client().post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k2"}).get_data()
        )

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert len(answers) == 3 and len(set(answers)) == 1
    assert len(fake_mobsms.received) == 1


def test_a_first_attempt_that_sent_nothing_leaves_the_key_free(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms").test_client()
    fake_mobsms.no_device = True
    first = client.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k3"})
    assert first.get_json()["result"]["error_code"] == "no_device_available"
    fake_mobsms.no_device = False
    again = client.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k3"})
    assert again.get_json()["result"]["sent"] == "1"
    assert "Idempotent-Replayed" not in again.headers
    assert len(fake_mobsms.queued) == 1


def test_an_unknown_outcome_is_kept_so_a_repeat_never_sends_twice(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    client = make_app("mobsms").test_client()
    fake_mobsms.next_reply = Reply(201, b'{"success": true, "data": {"id"', "application/json")
    first = client.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k4"})
    assert first.get_json()["result"]["error_code"] == "backend_bad_json"
    assert first.get_json()["result"]["reference"] == "k4"
    again = client.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k4"})
    assert again.get_data() == first.get_data()
    assert len(fake_mobsms.received) == 1


def test_keys_belong_to_their_client(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox")
    client = app.test_client()
    for key in ("alice-key", "bob-key"):
        answer = client.post("/sendsms/", data={**SEND, "apikey": key}, headers={"Idempotency-Key": "same"})
        assert answer.get_json()["result"]["sent"] == "1"
        assert "Idempotent-Replayed" not in answer.headers


def test_keys_are_shared_by_every_worker_through_the_state_store(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    one, two = (make_app("mobsms", data_dir=tmp_path).test_client() for _ in range(2))
    first = one.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k5"})
    again = two.post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k5"})
    assert again.get_data() == first.get_data()
    assert len(fake_mobsms.received) == 1


def test_soap_sends_take_the_header_too(make_app: Callable[..., Flask], fake_mobsms: FakeMobsms) -> None:
    client = make_app("mobsms").test_client()
    body = envelope(key="mobsms-key-1")
    answers = [
        client.post(
            "/sendsms/soap/", data=body, content_type="text/xml", headers={"Idempotency-Key": "soap-1"}
        )
        for _ in range(2)
    ]
    assert answers[0].status_code == 200
    assert answers[1].get_data() == answers[0].get_data()
    assert len(fake_mobsms.received) == 1


def test_a_malformed_key_is_refused(make_app: Callable[..., Flask], fake_mobsms: FakeMobsms) -> None:
    answer = (
        make_app("mobsms").test_client().post("/sendsms/", data=SEND, headers={"Idempotency-Key": "x" * 256})
    )
    assert answer.status_code == 400
    assert answer.get_json()["result"]["note"].startswith("Idempotency-Key must be")
    assert fake_mobsms.received == []


def test_keys_live_at_least_a_day() -> None:
    with pytest.raises(ConfigError, match="SMSBRIDGE_IDEMPOTENCY_TTL"):
        Settings.from_env({"SMSBRIDGE_IDEMPOTENCY_TTL": "3600"})


def test_a_redirected_send_keeps_its_key_so_a_repeat_never_sends_twice(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    """A 303 may come after the vendor acted: a repeat with the key gets the same redirect, not a send."""
    client = make_app("smsmobileapi").test_client()
    fake_vendor.next_reply = Reply(303, b"", "text/plain", headers={"Location": "/sendsms/done"})
    send = {"apikey": "vendor-key-1", "recipients": TO, "message": "Your order shipped"}
    first = client.post("/sendsms/", data=send, headers={"Idempotency-Key": "k-303"})
    assert first.status_code == 303
    again = client.post("/sendsms/", data=send, headers={"Idempotency-Key": "k-303"})
    assert (again.status_code, again.get_data()) == (303, first.get_data())
    assert len(fake_vendor.received) == 1


def test_expired_keys_are_swept_by_an_index_and_reclaimed_at_once(tmp_path: Path) -> None:
    """No full scan per keyed send: the sweep uses an index; a key past its TTL is free before it runs."""
    import sqlite3
    from contextlib import closing

    from app.state.sqlite.idempotency import SqliteIdempotency as StateStore

    store = StateStore(tmp_path)
    try:
        assert store.claim("scope-1", "digest-a", ttl=86400, hold=11) is None
        with closing(sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)) as db:
            plan = db.execute("EXPLAIN QUERY PLAN DELETE FROM idempotency WHERE created_at < 1").fetchall()
            db.execute("UPDATE idempotency SET created_at = created_at - 90000, done = 1, status = 200")
        assert any("idempotency_by_age" in str(row) for row in plan), plan
        # Expired (90,000 s old, TTL a day) and not swept yet (the sweep ran a moment ago): claimable.
        assert store.claim("scope-1", "digest-b", ttl=86400, hold=11) is None
        row = store.idempotent("scope-1")
        assert (row["fingerprint"], row["done"], row["status"]) == ("digest-b", 0, None)
        # Within its TTL it is held: the same claim returns the holder.
        assert store.claim("scope-1", "digest-c", ttl=86400, hold=11)["fingerprint"] == "digest-b"
    finally:
        store.close()


def test_a_repeat_whose_first_request_gave_the_key_up_sends_itself(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    """The first request sent nothing (no phone) while a repeat waited: the repeat sends, once."""
    app = make_app("mobsms")
    state = app.extensions["smsbridge"]
    state.idempotency.wait = state.idempotency.failover_wait = 2.0  # the holder's deadline: 2 s
    backend = state.backend
    send = backend.send
    calls: list[float] = []

    def first_sends_nothing_then_the_phone_is_back(request: object) -> object:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.5)
            fake_mobsms.no_device = True
            try:
                return send(request)
            finally:
                fake_mobsms.no_device = False
        return send(request)

    backend.send = first_sends_nothing_then_the_phone_is_back
    answers: dict[str, dict] = {}

    def post(name: str) -> None:
        answer = app.test_client().post("/sendsms/", data=SEND, headers={"Idempotency-Key": "k-given-up"})
        answers[name] = answer.get_json()["result"]

    first = threading.Thread(target=post, args=("first",))
    first.start()
    time.sleep(0.1)
    post("repeat")  # waits on the first, which gives the key up at 0.5 s, long before its 2 s deadline
    first.join()
    assert answers["first"]["error_code"] == "no_device_available"
    assert answers["repeat"]["sent"] == "1", answers["repeat"]
    assert len(fake_mobsms.queued) == 1 and len(calls) == 2


def test_a_keyed_soap_send_resolves_its_caller_once(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    """The caller resolved before the claim (for its hold) is the one sendSms uses: not resolved again."""
    app = make_app("mobsms")
    access = app.extensions["smsbridge"].access
    resolve = access.resolve
    resolved: list[object] = []

    def counted(credential: object) -> object:
        resolved.append(credential)
        return resolve(credential)

    access.resolve = counted
    answer = app.test_client().post(
        "/sendsms/soap/", data=envelope(key="mobsms-key-1"), content_type="text/xml",
        headers={"Idempotency-Key": "soap-once"},
    )  # fmt: skip
    assert answer.status_code == 200 and len(fake_mobsms.received) == 1
    assert len(resolved) == 1, resolved
