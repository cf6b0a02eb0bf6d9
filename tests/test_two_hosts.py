"""Two bridges, one PostgreSQL: what one host does, the other sees (issue 14, item 4's end-to-end module).

Two hosts as docs/deployment.md "Several hosts" runs them (tests/harness/hosts.py): separate gunicorn
masters and data directories; the same PostgreSQL (SMSBRIDGE_STATE_URL), Redis (the rate-limit counts),
token secret and clients file; both in front of one fake mobsms, made slow where a send must be in
flight. The servers are shared by the module; a test that kills a host has it started again for the next.

The lease (120 s, app/state/base.py's LEASE_SECONDS) is not waited out: once the test has seen that the
other host leaves a leased event alone, it moves the lease's end to now in the database, as 120 s would.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
import requests

from app.access.resolution import hash_key
from tests.harness.clients import KEY_A, KEY_S, MOBSMS_CLIENT, MOBSMS_KEY, SANDBOX_CLIENT, write_clients
from tests.harness.fakes.mobsms import FakeMobsms, iso
from tests.harness.fakes.server import Received, Reply
from tests.harness.hosts import Host, Hosts, shared_env
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer
from tests.harness.webhooks import RECEIVED_AT, SECRET, SENDER, V2Receiver, gunicorn_source_url, wait_for

TO = "+32470000001"
#: a client of its own for the lease test, whose receiver can hold an attempt
KEY_L = "client-key-L"
#: a client of its own for the limits, at LIMIT a minute
KEY_5 = "client-key-5"
LIMIT = 5
#: the PHP SDK's timeout: every answer, even with PostgreSQL frozen, comes before it
SDK_TIMEOUT = 10.0
#: how long the fake mobsms holds its answer to a send that must be in flight
SLOW = 2.0


class Holding(V2Receiver):
    """A V2 receiver that, once `hold_next()` is called, holds the next request until `let_go()`.

    The held request is then answered 503 (its sender is gone by then): only a later attempt is accepted.
    """

    def __init__(self, secret: str) -> None:
        self._hold = False
        self._held = threading.Event()
        super().__init__(secret)

    def hold_next(self) -> None:
        self._held.clear()
        self._hold = True

    def let_go(self) -> None:
        self._held.set()

    def handle(self, received: Received) -> Reply:
        with self._guard:
            hold, self._hold = self._hold, False
        if hold:
            self._held.wait(30)
            return Reply.json(503, {"error": "held"})
        return super().handle(received)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="module")
def receivers() -> Iterator[dict[str, V2Receiver]]:
    made = {"shop-a": V2Receiver(SECRET), "shop-l": Holding(SECRET)}
    yield made
    for receiver in made.values():
        if isinstance(receiver, Holding):
            receiver.let_go()
        receiver.stop()


@pytest.fixture(scope="module")
def two_hosts(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    fake_mobsms: FakeMobsms,
    receivers: dict[str, V2Receiver],
) -> Iterator[Hosts]:
    directory = tmp_path_factory.mktemp("two-hosts")
    (directory / "redis").mkdir()
    redis_server = RedisServer(directory / "redis")
    hook = {"webhook_secret": SECRET}
    clients = write_clients(
        directory / "clients.toml",
        {
            "shop-a": {**MOBSMS_CLIENT, "webhook_url": receivers["shop-a"].url, **hook},
            "shop-l": {
                "key_sha256": [hash_key(KEY_L)],
                "backend": "mobsms",
                "upstream_key": MOBSMS_KEY,
                "webhook_url": receivers["shop-l"].url,
                **hook,
            },
            "shop-s": SANDBOX_CLIENT,
            "shop-5": {
                "key_sha256": [hash_key(KEY_5)],
                "backend": "sandbox",
                "rate_limit": f"{LIMIT}/minute",
            },
        },
    )
    env = shared_env(
        postgres.create_database("two_hosts"),
        ratelimit_storage=redis_server.url,
        clients_file=clients,
        backend="mobsms",
        SMSBRIDGE_MOBSMS_URL=fake_mobsms.url,
        SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE="true",
    )
    hosts = Hosts.start(directory, env)
    try:
        yield hosts
    finally:
        outputs = hosts.stop()
        redis_server.stop()
    for name, output in outputs.items():
        assert "Traceback" not in output, f"host {name}:\n{output}"
        assert KEY_A not in output and MOBSMS_KEY not in output


@pytest.fixture
def hosts(two_hosts: Hosts, postgres: PostgresServer) -> Hosts:
    """Both hosts running (a test before may have killed one), PostgreSQL running and thawed."""
    postgres.thaw()
    two_hosts.ensure_running()
    return two_hosts


def send(host: Host, key: str | None = None, apikey: str = KEY_A, **params: str) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    form = {"apikey": apikey, "recipients": TO, "message": "Two hosts", **params}
    return requests.post(host.url + "/sendsms/", data=form, headers=headers, timeout=30)


def get(host: Host, path: str, apikey: str = KEY_A, **params: str) -> requests.Response:
    return requests.get(host.url + path, params={"apikey": apikey, **params}, timeout=30)


def posted_sends(fake: FakeMobsms) -> list[Received]:
    return [r for r in fake.received if r.method == "POST" and r.path.startswith("/api/sms")]


def error_of(answer: requests.Response) -> tuple[int, str, str]:
    result = answer.json()["result"]
    return answer.status_code, result["error_code"], result["sent"]


def mobsms_event(number: int) -> dict:
    """An incoming-SMS webhook as mobsms posts it."""
    return {
        "event": "incoming",
        "data": {
            "id": number,
            "message_id": str(uuid.uuid4()),
            "sender_number": SENDER,
            "message": f"event {number}",
            "direction": "inbound",
            "status": "received",
            "created_at": RECEIVED_AT,
        },
        "timestamp": iso(None),
    }


def post_event(host: Host, client: str, body: dict) -> requests.Response:
    assert host.bridge is not None
    return requests.post(
        gunicorn_source_url(host.bridge, client=client),
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        timeout=SDK_TIMEOUT,
    )


# --- idempotency keys ----------------------------------------------------------------------------------


def test_a_keyed_send_repeated_on_b_while_as_is_in_flight_gets_the_same_answer_and_one_sms(
    hosts: Hosts, fake_mobsms: FakeMobsms
) -> None:
    a, b = hosts["a"], hosts["b"]
    fake_mobsms.misbehave("slow", seconds=SLOW)
    key = f"order-{uuid.uuid4()}"
    with ThreadPoolExecutor(1) as pool:
        first: Future[requests.Response] = pool.submit(send, a, key)
        wait_for(lambda: posted_sends(fake_mobsms), "A's send at mobsms")
        assert not first.done()
        repeat = send(b, key)
        original = first.result()

    assert original.status_code == 200, original.text
    assert repeat.status_code == 200, repeat.text
    assert repeat.json() == original.json()
    assert len(posted_sends(fake_mobsms)) == 1
    assert len(fake_mobsms.queued) == 1
    assert original.json()["result"]["id"] == fake_mobsms.queued[0]["message_id"]


def test_the_same_key_with_other_parameters_on_the_other_host_is_a_422(
    hosts: Hosts, fake_mobsms: FakeMobsms
) -> None:
    a, b = hosts["a"], hosts["b"]
    key = f"order-{uuid.uuid4()}"
    assert send(a, key).status_code == 200

    other = send(b, key, message="Something else")

    assert error_of(other) == (422, "idempotency_key_reused", "0")
    assert len(posted_sends(fake_mobsms)) == 1


# --- webhook events --------------------------------------------------------------------------------------


def event_row(postgres: PostgresServer, event_id: str) -> dict:
    with postgres.connect("two_hosts", row_factory=psycopg.rows.dict_row) as db:
        row = db.execute("SELECT * FROM webhook_events WHERE id = %s", (event_id,)).fetchone()
    assert row is not None, f"event {event_id} is not stored"
    return row


def test_an_event_a_leased_then_died_with_is_delivered_by_b_once_the_lease_ends(
    hosts: Hosts, postgres: PostgresServer, receivers: dict[str, V2Receiver]
) -> None:
    a, b = hosts["a"], hosts["b"]
    receiver = receivers["shop-l"]
    assert isinstance(receiver, Holding)
    receiver.hold_next()
    body = mobsms_event(301)
    # B stalls while A stores the event, so that A's deliverer is the one that leases it.
    with b.paused():
        stored = post_event(a, "shop-l", body)
        assert stored.status_code == 200, stored.text
        event_id = stored.json()["id"]
        wait_for(lambda: len(receiver.received) == 1, "A's attempt at the receiver")
        a.kill()
    leased = event_row(postgres, event_id)
    assert (leased["status"], leased["attempts"]) == ("pending", 1)
    assert leased["lease_until"] > time.time() + 60, "the lease of A's attempt should hold for minutes"

    # B's deliverer polls every 0.5 s: for 2 s it leaves the event alone, A's lease holds it.
    time.sleep(2)
    assert len(receiver.received) == 1
    assert event_row(postgres, event_id)["attempts"] == 1

    # As if the lease's 120 s had passed.
    with postgres.connect("two_hosts", autocommit=True) as db:
        db.execute("UPDATE webhook_events SET lease_until = %s WHERE id = %s", (time.time() - 1, event_id))
    wait_for(receiver.envelopes, "B's delivery", timeout=10)
    receiver.let_go()

    [envelope] = receiver.envelopes()
    assert envelope["id"] == event_id
    assert envelope["data"]["message"] == "event 301"
    wait_for(lambda: event_row(postgres, event_id)["status"] == "delivered", "the delivery recorded")
    row = event_row(postgres, event_id)
    assert row["attempts"] == 2
    assert len(receiver.received) == 2


def test_the_same_vendor_event_posted_to_both_hosts_is_delivered_once(
    hosts: Hosts, receivers: dict[str, V2Receiver]
) -> None:
    a, b = hosts["a"], hosts["b"]
    receiver = receivers["shop-a"]
    body = mobsms_event(401)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda host: post_event(host, "shop-a", body), [a, b]))
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    [event_id] = {answer.json()["id"] for answer in answers}

    wait_for(lambda: receiver.ids_accepted()[event_id], "the delivery", timeout=10)
    time.sleep(1.5)  # three polls of each deliverer: time enough for a second delivery, were there one
    assert receiver.ids_received()[event_id] == 1
    assert receiver.ids_accepted()[event_id] == 1


# --- tokens, read flags, resends, limits, the sandbox --------------------------------------------------


def test_a_token_issued_by_a_works_on_b(hosts: Hosts, fake_mobsms: FakeMobsms) -> None:
    a, b = hosts["a"], hosts["b"]
    issued = requests.post(
        a.url + "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "shop-a", "client_secret": KEY_A},
        timeout=10,
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]

    sent = requests.post(
        b.url + "/sendsms/",
        data={"recipients": TO, "message": "With A's token"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert sent.status_code == 200, sent.text
    [posted] = posted_sends(fake_mobsms)
    assert posted.headers["authorization"] == f"Bearer {MOBSMS_KEY}"


def test_a_message_read_on_a_is_read_on_b(hosts: Hosts, fake_mobsms: FakeMobsms) -> None:
    a, b = hosts["a"], hosts["b"]
    old = fake_mobsms.add_inbound(TO, "old", created_at=time.time() - 60)
    new = fake_mobsms.add_inbound(TO, "new", created_at=time.time() - 30)

    marked = get(a, "/getsms/set-read/", guid_message=new["message_id"])
    assert marked.status_code == 200, marked.text

    unread = get(b, "/getsms/", onlyunread="yes")
    assert unread.status_code == 200, unread.text
    assert [s["guid"] for s in unread.json()["result"]["sms"]] == [old["message_id"]]


def test_resends_on_both_hosts_at_once_send_one_copy_and_count_alike(
    hosts: Hosts, fake_mobsms: FakeMobsms
) -> None:
    a, b = hosts["a"], hosts["b"]
    failed = fake_mobsms.add_outbound(TO, "Ticket 42 is ready", "failed", created_at=time.time() - 60)
    guid = failed["message_id"]
    fake_mobsms.misbehave("slow", always=True, seconds=1)  # both reads of the message overlap
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda host: get(host, "/resend/", guid=guid), [a, b]))
    fake_mobsms.behave()

    assert sorted(answer.status_code for answer in answers) == [200, 409], [a.text for a in answers]
    [won] = [answer for answer in answers if answer.status_code == 200]
    [lost] = [answer for answer in answers if answer.status_code == 409]
    assert won.json()["result"]["attempt"] == 1
    assert error_of(lost)[1:] in {("resend_in_flight", "0"), ("not_resendable", "0")}
    [copy] = fake_mobsms.queued
    assert won.json()["result"]["id"] == copy["message_id"]

    # Once the copy fails too, the other host counts the next attempt as the second.
    fake_mobsms.set_status(copy["message_id"], "failed")
    host_of_the_loser = b if answers[1] is lost else a
    second = get(host_of_the_loser, "/resend/", guid=guid)
    assert second.status_code == 200, second.text
    assert second.json()["result"]["attempt"] == 2
    assert len(fake_mobsms.queued) == 2


def test_a_limit_is_counted_once_across_both_hosts(hosts: Hosts) -> None:
    a, b = hosts["a"], hosts["b"]
    statuses = [
        send(host, apikey=KEY_5).status_code
        for host in [a, b] * LIMIT  # twice the limit, alternating
    ]
    assert sorted(statuses) == [200] * LIMIT + [429] * LIMIT, statuses
    assert statuses[:LIMIT] == [200] * LIMIT


def test_a_message_sent_through_the_sandbox_on_a_is_in_bs_sent_log(hosts: Hosts) -> None:
    a, b = hosts["a"], hosts["b"]
    message = f"sandbox {uuid.uuid4()}"
    sent = send(a, apikey=KEY_S, message=message)
    assert sent.status_code == 200, sent.text
    guid = sent.json()["result"]["id"]

    log = get(b, "/log/sent/sms/", apikey=KEY_S)

    assert log.status_code == 200, log.text
    entries = {e["guid_message"]: e for e in log.json()["result"]["sms"]}
    assert (entries[guid]["sms"], entries[guid]["recipients"]) == (message, TO)


# --- PostgreSQL frozen -----------------------------------------------------------------------------------


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def test_postgresql_frozen_keyed_sends_503_within_the_sdks_timeout_then_work_again_after_a_thaw(
    hosts: Hosts, postgres: PostgresServer, fake_mobsms: FakeMobsms
) -> None:
    a, b = hosts["a"], hosts["b"]
    # Each host has used the database (its pool holds a connection that the freeze leaves hanging).
    assert send(a, f"warm-{uuid.uuid4()}").status_code == 200
    assert send(b, f"warm-{uuid.uuid4()}").status_code == 200
    fake_mobsms.reset()
    postgres.freeze()
    timings: dict[str, float] = {}
    try:
        for host in (a, b):
            answer, took = timed(lambda host=host: send(host, f"frozen-{uuid.uuid4()}"))
            timings[f"send {host.name}"] = took
            assert error_of(answer) == (503, "storage_unavailable", "0"), answer.text
            assert "nothing was sent" in answer.json()["result"]["note"]
            assert answer.headers["Retry-After"] == "1"
            assert took < SDK_TIMEOUT, f"host {host.name} answered in {took:.1f} s"

            ready, took = timed(lambda host=host: requests.get(host.url + "/readyz", timeout=30))
            timings[f"readyz {host.name}"] = took
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["state_store"] != "ok"
            assert took < SDK_TIMEOUT
        assert posted_sends(fake_mobsms) == []
    finally:
        postgres.thaw()
    print(f"\nPostgreSQL frozen, seconds to answer: {timings}")

    for host in (a, b):
        key = f"thawed-{uuid.uuid4()}"
        answer = send(host, key)
        assert answer.status_code == 200, answer.text
        assert send(a if host is b else b, key).json() == answer.json()
        assert requests.get(host.url + "/readyz", timeout=30).status_code == 200
    assert len(posted_sends(fake_mobsms)) == 2
