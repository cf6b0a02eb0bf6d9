"""PostgreSQL down or frozen, through the real fronts of one bridge under gunicorn (issue 14, item 3).

The bridge keeps its state in PostgreSQL (SMSBRIDGE_STATE_URL) and its rate-limit counts there too
(`postgresql://`), in front of the fake mobsms, with a webhook target. PostgreSQL is either stopped (its
port refuses connections) or frozen (SIGSTOP: connections open, nothing answers, not even a cancel):

- what must be stored first answers the retryable error of its dialect, saying nothing was sent, well
  within the PHP SDK's 10 s: a keyed REST send 503 `storage_unavailable` (JSON), a keyed SOAP sendSms the
  fault Server.StorageUnavailable, a webhook source's post 503 (so the upstream posts it again);
- /readyz answers 503, naming PostgreSQL;
- the rule for a send without a key (docs/deployment.md, "When PostgreSQL is down or slow"): it stores
  nothing before it is made, so it goes to the backend as usual (its limit counted in the worker's memory
  meanwhile);
- once PostgreSQL is back, the same worker serves everything again: no restart.

And gunicorn's master never imports psycopg: it migrates in a forked child (gunicorn.conf.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.harness.fakes.mobsms import FakeMobsms, iso
from tests.harness.fakes.server import Received
from tests.harness.gunicorn import ROOT, Gunicorn, gunicorn_env
from tests.harness.net import free_port
from tests.harness.postgres import PostgresServer, children_of
from tests.harness.soap import envelope, fault_of
from tests.harness.webhooks import (
    RECEIVED_AT,
    SECRET,
    SENDER,
    TOKEN_SECRET,
    V2Receiver,
    gunicorn_source_url,
    wait_for,
)

KEY = "mobsms-key-1"
TO = "+32470000001"
SEND = {"apikey": KEY, "recipients": TO, "message": "PostgreSQL trouble"}
NOTHING_SENT = "nothing was sent"
#: the PHP SDK's timeout: every answer comes before it
SDK_TIMEOUT = 10.0
DATABASE = "state_down"

#: what each test measured: {(outage, what): seconds}, printed at the module's end
TIMINGS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        server.create_database(DATABASE)
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[V2Receiver]:
    made = V2Receiver(SECRET)
    yield made
    made.stop()


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    fake_mobsms: FakeMobsms,
    receiver: V2Receiver,
) -> Iterator[Gunicorn]:
    data = tmp_path_factory.mktemp("state-down")
    server = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "mobsms",
            "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
            "SMSBRIDGE_DATA_DIR": str(data / "data"),
            "SMSBRIDGE_WORKERS": "1",
            "SMSBRIDGE_STATE_URL": postgres.url_for(DATABASE),
            "SMSBRIDGE_RATELIMIT_STORAGE": "postgresql://",
            "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
            "SMSBRIDGE_WEBHOOK_URL": receiver.url,
            "SMSBRIDGE_WEBHOOK_SECRET": SECRET,
            "SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        },
        data / "gunicorn.log",
    )
    yield server
    output = server.stop()
    if TIMINGS:
        print("\nseconds to answer with PostgreSQL down:")
        for (outage, what), seconds in sorted(TIMINGS.items()):
            print(f"  {outage:8} {what:24} {seconds:5.2f}")
    assert "Traceback" not in output, output
    assert KEY not in output
    assert postgres.url_for(DATABASE) not in output


@pytest.fixture(params=["stopped", "frozen"])
def outage(
    request: pytest.FixtureRequest, postgres: PostgresServer, bridge: Gunicorn, fake_mobsms: FakeMobsms
) -> Iterator[str]:
    """PostgreSQL stopped, or frozen, for the test; running again after it."""
    # The worker has a connection in its pool (a frozen server leaves it hanging; a stopped one, broken).
    assert keyed_send(bridge, f"warm-{uuid.uuid4()}").status_code == 200
    fake_mobsms.reset()
    fake_mobsms.queued.clear()
    if request.param == "stopped":
        postgres.stop()
    else:
        postgres.freeze()
    try:
        yield request.param
    finally:
        if request.param == "stopped":
            postgres.start()
        else:
            postgres.thaw()


def keyed_send(bridge: Gunicorn, key: str) -> requests.Response:
    return requests.post(
        bridge.url + "/sendsms/", data=SEND, headers={"Idempotency-Key": key}, timeout=SDK_TIMEOUT
    )


def keyed_soap_send(bridge: Gunicorn, key: str) -> requests.Response:
    return requests.post(
        bridge.url + "/sendsms/soap/",
        data=envelope(key=KEY).encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "Idempotency-Key": key},
        timeout=SDK_TIMEOUT,
    )


def webhook_post(bridge: Gunicorn, number: int) -> requests.Response:
    body = {
        "event": "incoming",
        "data": {
            "id": number,
            "message_id": f"state-down-{number}",
            "sender_number": SENDER,
            "message": f"event {number}",
            "direction": "inbound",
            "status": "received",
            "created_at": RECEIVED_AT,
        },
        "timestamp": iso(None),
    }
    return requests.post(
        gunicorn_source_url(bridge),
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        timeout=SDK_TIMEOUT,
    )


def sends(fake: FakeMobsms) -> list[Received]:
    return [r for r in fake.received if r.method == "POST" and r.path.startswith("/api/sms")]


def timed(outage: str, what: str, call: Callable[[], requests.Response]) -> requests.Response:
    started = time.monotonic()
    answer = call()
    took = TIMINGS[(outage, what)] = time.monotonic() - started
    assert took < SDK_TIMEOUT, f"{what} took {took:.1f} s with PostgreSQL {outage}"
    return answer


def assert_storage_error(answer: requests.Response) -> None:
    """The dialect's retryable server error, in JSON: 503, storage_unavailable, nothing sent, Retry-After."""
    assert answer.status_code == 503, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    result = answer.json()["result"]
    assert (result["error"], result["error_code"], result["sent"]) == (42, "storage_unavailable", "0")
    assert "postgresql" in result["note"] and NOTHING_SENT in result["note"], result["note"]
    assert answer.headers["Retry-After"] == "1"


# --- what must be stored first -----------------------------------------------------------------------


def test_a_keyed_rest_send_is_a_503_saying_nothing_was_sent(
    bridge: Gunicorn, outage: str, fake_mobsms: FakeMobsms
) -> None:
    answer = timed(outage, "keyed REST send", lambda: keyed_send(bridge, f"down-{uuid.uuid4()}"))
    assert_storage_error(answer)
    assert sends(fake_mobsms) == []


def test_a_keyed_soap_send_is_a_storage_fault(bridge: Gunicorn, outage: str, fake_mobsms: FakeMobsms) -> None:
    answer = timed(outage, "keyed SOAP sendSms", lambda: keyed_soap_send(bridge, f"down-{uuid.uuid4()}"))
    code, text = fault_of(answer)
    assert code == "soap11env:Server.StorageUnavailable"
    assert "postgresql" in text and NOTHING_SENT in text, text
    assert sends(fake_mobsms) == []


def test_a_webhook_post_is_a_503_so_that_the_upstream_posts_it_again(
    bridge: Gunicorn, outage: str, receiver: V2Receiver
) -> None:
    number = 500 + len(TIMINGS)
    answer = timed(outage, "webhook source post", lambda: webhook_post(bridge, number))
    assert answer.status_code == 503, answer.text
    assert answer.json()["result"]["error_code"] == "storage_unavailable"
    assert answer.headers["Retry-After"] == "1"


def test_readyz_is_a_503_naming_postgresql(bridge: Gunicorn, outage: str) -> None:
    answer = timed(outage, "/readyz", lambda: requests.get(bridge.url + "/readyz", timeout=SDK_TIMEOUT))
    assert answer.status_code == 503, answer.text
    document = answer.json()
    assert document["status"] == "not ready"
    assert "postgresql" in document["checks"]["state_store"], document


# --- the rule for sends without a key -----------------------------------------------------------------


def test_a_send_without_a_key_goes_to_mobsms_as_usual(
    bridge: Gunicorn, outage: str, fake_mobsms: FakeMobsms
) -> None:
    answer = timed(
        outage,
        "unkeyed REST send",
        lambda: requests.post(bridge.url + "/sendsms/", data=SEND, timeout=SDK_TIMEOUT),
    )
    assert answer.status_code == 200, answer.text
    [queued] = fake_mobsms.queued
    assert answer.json()["result"]["id"] == queued["message_id"]
    assert len(sends(fake_mobsms)) == 1


# --- recovery --------------------------------------------------------------------------------------------


#: how long each outage of the recovery test lasts: past a few of the connection pool's retries, which
#: back off (1 s, 2 s, 4 s, 8 s...), so that a pool still waiting to retry shows as a 503 after the return
RECOVERY_OUTAGE = {"stopped": 18.0, "frozen": 8.0}


@pytest.mark.parametrize("how", list(RECOVERY_OUTAGE))
def test_once_postgresql_is_back_everything_works_without_a_restart(
    bridge: Gunicorn, postgres: PostgresServer, fake_mobsms: FakeMobsms, receiver: V2Receiver, how: str
) -> None:
    workers = children_of(bridge.process.pid)
    number = 900 + list(RECOVERY_OUTAGE).index(how)
    assert keyed_send(bridge, f"warm-{uuid.uuid4()}").status_code == 200
    postgres.stop() if how == "stopped" else postgres.freeze()
    began = time.monotonic()
    try:
        refused = webhook_post(bridge, number)
        assert refused.status_code == 503, refused.text
        while time.monotonic() - began < RECOVERY_OUTAGE[how]:
            assert_storage_error(keyed_send(bridge, f"down-{uuid.uuid4()}"))
            time.sleep(0.5)
    finally:
        postgres.start() if how == "stopped" else postgres.thaw()
    fake_mobsms.reset()

    # The first request after: served at once, by the same worker.
    key = f"back-{uuid.uuid4()}"
    answer = timed(f"{how}→back", "keyed REST send", lambda: keyed_send(bridge, key))
    assert answer.status_code == 200, answer.text
    assert keyed_send(bridge, key).json() == answer.json()  # replayed: the key was stored
    assert len(sends(fake_mobsms)) == 1
    # Ready again once the counts are back in PostgreSQL too (the fallback tries about once a second).
    started = time.monotonic()
    wait_for(
        lambda: requests.get(bridge.url + "/readyz", timeout=SDK_TIMEOUT).status_code == 200,
        "/readyz ready again",
        timeout=5,
    )
    TIMINGS[(f"{how}→back", "/readyz ready again")] = time.monotonic() - started

    # The upstream posts the refused event again: stored now, and delivered.
    accepted = webhook_post(bridge, number)
    assert accepted.status_code == 200, accepted.text
    event_id = accepted.json()["id"]
    wait_for(lambda: receiver.ids_accepted()[event_id], "the delivery", timeout=10)
    assert children_of(bridge.process.pid) == workers, "a worker was restarted"


# --- gunicorn's master never imports psycopg ---------------------------------------------------------------

GUARD = """
import runpy, sys
config = runpy.run_path("gunicorn.conf.py")
config["on_starting"](None)
import app.startup
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("psycopg", "psycopg_pool"))
print("loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_gunicorns_master_never_imports_psycopg(postgres: PostgresServer, tmp_path: Path) -> None:
    """gunicorn.conf.py and its on_starting (which migrates, in a forked child) leave psycopg out."""
    database = postgres.create_database("guard")
    env = gunicorn_env(
        free_port(),
        SMSBRIDGE_STATE_URL=database,
        SMSBRIDGE_TOKEN_SECRET=TOKEN_SECRET,
        SMSBRIDGE_DATA_DIR=str(tmp_path / "data"),
    )
    done = subprocess.run(
        [sys.executable, "-c", GUARD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded: []" in done.stdout
    # The child did migrate: the work is done, only not in the master.
    with postgres.connect("guard") as db:
        assert db.execute("SELECT count(*) FROM smsbridge_migrations").fetchone()[0] > 0


def libpq_mapped(pid: int) -> bool:
    """Tell whether process `pid` has libpq (which importing psycopg loads) in its memory."""
    return "libpq" in Path(f"/proc/{pid}/maps").read_text()


def test_the_running_master_has_no_libpq_and_its_worker_has(bridge: Gunicorn) -> None:
    """The real master, as it serves: psycopg never loaded there, loaded in the worker that uses it."""
    assert keyed_send(bridge, f"probe-{uuid.uuid4()}").status_code == 200
    [worker] = children_of(bridge.process.pid)
    assert libpq_mapped(worker)
    assert not libpq_mapped(bridge.process.pid)
