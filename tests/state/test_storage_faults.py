"""Storage trouble and crashes: a locked database, a full data disk, a worker killed mid-send.

Through the real gunicorn (gevent worker) wherever the behaviour depends on it: a lock that SQLite
waits for in C holds the whole worker, prometheus_client's mmap files kill a process with SIGBUS on
a full disk, and only a real worker can be killed with SIGKILL mid-send.

The full disk is a small tmpfs mounted for the test (the suite runs as root): a test that cannot
mount one fails, it is not skipped.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
import requests
from flask import Flask

from app.access.resolution import hash_key
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Received, Reply
from tests.harness.gunicorn import Gunicorn
from tests.harness.soap import envelope, fault_of
from tests.harness.webhooks import TOKEN_SECRET, gunicorn_source_url

KEY = "mobsms-key-1"
TO = "+32470000001"
SEND = {"apikey": KEY, "recipients": TO, "message": "Storage trouble"}
NOTHING_SENT = "nothing was sent"


def mobsms_env(fake: FakeMobsms, data_dir: Path, **more: str) -> dict[str, str]:
    """Return the environment of a one-worker bridge in front of the fake mobsms."""
    return {
        "SMSBRIDGE_BACKEND": "mobsms",
        "SMSBRIDGE_MOBSMS_URL": fake.url,
        "SMSBRIDGE_DATA_DIR": str(data_dir),
        "SMSBRIDGE_WORKERS": "1",
        **more,
    }


def sends(fake: FakeMobsms) -> list[Received]:
    """Return the sends (POST /api/sms...) the fake received."""
    return [r for r in fake.received if r.method == "POST" and r.path.startswith("/api/sms")]


def keyed_send(url: str, key: str, timeout: float = 30) -> requests.Response:
    return requests.post(url + "/sendsms/", data=SEND, headers={"Idempotency-Key": key}, timeout=timeout)


def keyed_soap_send(url: str, key: str) -> requests.Response:
    return requests.post(
        url + "/sendsms/soap/",
        data=envelope(key=KEY).encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "Idempotency-Key": key},
        timeout=30,
    )


def workers_of(server: Gunicorn) -> list[int]:
    """Return the pids of the gunicorn master's children (its workers)."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {seconds} s"
        time.sleep(0.05)


def assert_storage_error(answer: requests.Response, says: str) -> None:
    """The dialect's retryable server error: 503, storage_unavailable, nothing sent, Retry-After."""
    assert answer.status_code == 503, answer.text
    result = answer.json()["result"]
    assert (result["error"], result["error_code"], result["sent"]) == (42, "storage_unavailable", "0")
    assert says in result["note"] and NOTHING_SENT in result["note"], result["note"]
    assert answer.headers["Retry-After"] == "1"


def assert_storage_fault(answer: requests.Response, says: str) -> None:
    code, text = fault_of(answer)
    assert code == "soap11env:Server.StorageUnavailable"
    assert says in text and NOTHING_SENT in text, text


# --- a locked database ---------------------------------------------------------------------------------


def test_a_locked_database_neither_freezes_the_worker_nor_hangs_the_send(
    fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    """Another process holds the state database's write lock: /healthz answers at once, the send 503s."""
    server = Gunicorn(mobsms_env(fake_mobsms, tmp_path), tmp_path / "gunicorn.log")
    try:
        with closing(sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            with ThreadPoolExecutor(2) as pool:
                rest = pool.submit(keyed_send, server.url, "locked-1")
                soap = pool.submit(keyed_soap_send, server.url, "locked-2")
                time.sleep(0.5)  # both wait for the lock now
                slowest = 0.0
                while not (rest.done() and soap.done()):
                    started = time.monotonic()
                    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
                    slowest = max(slowest, time.monotonic() - started)
                    time.sleep(0.2)
                # SQLite's own wait held the worker for 4.7 s before; now a few ms at a time.
                assert slowest < 1.5, slowest
                assert_storage_error(rest.result(), "database is locked")
                assert_storage_fault(soap.result(), "database is locked")
            holder.execute("ROLLBACK")
        assert sends(fake_mobsms) == []
        # Nothing was claimed: the same key sends once the lock is gone.
        again = keyed_send(server.url, "locked-1")
        assert again.status_code == 200 and again.json()["result"]["sent"] == "1"
        assert len(sends(fake_mobsms)) == 1
    finally:
        output = server.stop()
    assert KEY not in output


# --- a full data disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs owned by this user, unmounted afterwards; failing to mount is an error, not a skip.

    As root (CI) mount runs as it is; another user runs the suite with sudo, as scripts/test installs.
    """
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    as_root = [] if os.geteuid() == 0 else ["sudo", "-n"]
    owner = f"uid={os.getuid()},gid={os.getgid()}"
    subprocess.run(
        [*as_root, "mount", "-t", "tmpfs", "-o", f"size=6m,mode=0700,{owner}", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run([*as_root, "umount", "-l", str(mount_point)], check=True, capture_output=True)


def fill(disk: Path) -> Path:
    """Fill `disk` to its last byte with one file; return it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError as error:
                assert error.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def test_gunicorn_started_on_a_full_data_disk_stays_up_refuses_sends_and_recovers(
    fake_mobsms: FakeMobsms, small_disk: Path, tmp_path: Path
) -> None:
    """Data and metrics on a full disk: no SIGBUS, one clear line, 503 in the dialect, then recovery."""
    data = small_disk / "data"
    env = mobsms_env(fake_mobsms, data)
    first = Gunicorn(env, tmp_path / "first.log")  # the data directory as a running bridge leaves it
    assert keyed_send(first.url, "before").status_code == 200
    first.stop()
    subprocess.run(["rm", "-rf", str(data / "metrics")], check=True)
    filler = fill(small_disk)

    server = Gunicorn(env, tmp_path / "gunicorn.log")  # before, the master died of SIGBUS, silently
    try:
        [worker] = workers_of(server)
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        assert_storage_error(keyed_send(server.url, "full-1"), "disk is full")
        assert_storage_fault(keyed_soap_send(server.url, "full-2"), "disk is full")
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["state_store"].startswith("failing: the data disk is full")
        assert len(sends(fake_mobsms)) == 1  # the one before
        assert workers_of(server) == [worker]  # no worker died on the way
        assert server.process.poll() is None

        filler.unlink()
        wait_for(lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200, 15, "ready")
        again = keyed_send(server.url, "full-1")
        assert again.status_code == 200 and again.json()["result"]["sent"] == "1"
        assert len(sends(fake_mobsms)) == 2
        assert workers_of(server) == [worker]
    finally:
        output = server.stop()
    assert "smsbridge: metrics: cannot allocate" in output and "No space left on device" in output
    assert "SIGBUS" not in output
    assert KEY not in output


# --- an answer that cannot be kept -----------------------------------------------------------------------


def test_an_accepted_send_whose_answer_cannot_be_stored_still_reaches_its_caller(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database locks while mobsms takes the send: the caller still gets the success, and a log line."""
    app = make_app("mobsms", data_dir=tmp_path, connect_timeout=1.0, read_timeout=5.0)
    fake_mobsms.misbehave("slow", seconds=1)
    answers: list = []
    sender = threading.Thread(
        target=lambda: answers.append(
            app.test_client().post("/sendsms/", data=SEND, headers={"Idempotency-Key": "kept-1"})
        )
    )
    with closing(sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)) as holder:
        sender.start()
        wait_for(lambda: len(sends(fake_mobsms)) == 1, 10, "sent")
        holder.execute("BEGIN EXCLUSIVE")  # taken while mobsms works: the answer cannot be kept
        with caplog.at_level(logging.ERROR, logger="app.service.idempotency"):
            sender.join(30)
        holder.execute("ROLLBACK")
    [answer] = answers
    assert answer.status_code == 200 and answer.get_json()["result"]["sent"] == "1"
    assert any("idempotency record of this send could not be stored" in r.message for r in caplog.records)
    assert not any(KEY in r.getMessage() for r in caplog.records)
    # Its repeat never sends again: after the holder's deadline it says the outcome is unknown.
    again = app.test_client().post("/sendsms/", data=SEND, headers={"Idempotency-Key": "kept-1"})
    assert again.get_json()["result"]["error_code"] == "idempotency_outcome_unknown"
    assert again.get_json()["result"]["reference"] == "kept-1"
    assert len(sends(fake_mobsms)) == 1


# --- a worker killed mid-send ------------------------------------------------------------------------------


def test_a_send_whose_worker_was_killed_answers_outcome_unknown_and_never_sends_again(
    fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    """kill -9 of the worker holding a keyed send: repeats answer in time, never send a second copy."""
    # The holder's deadline: claim + connect (1 s) + read (3 s) + 1 s.
    env = mobsms_env(fake_mobsms, tmp_path, SMSBRIDGE_CONNECT_TIMEOUT="1", SMSBRIDGE_READ_TIMEOUT="3")
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    try:
        fake_mobsms.misbehave("slow", always=True, seconds=60)  # mobsms takes them and never answers
        [worker] = workers_of(server)
        with ThreadPoolExecutor(2) as pool:
            first = [
                pool.submit(keyed_send, server.url, "killed-1"),
                pool.submit(keyed_soap_send, server.url, "killed-2"),
            ]
            wait_for(lambda: len(sends(fake_mobsms)) == 2, 10, "sent")
            claimed = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            for holder in first:
                with pytest.raises(requests.ConnectionError):
                    holder.result()
        wait_for(lambda: workers_of(server) not in ([], [worker]), 30, "restarted")
        fake_mobsms.behave()

        started = time.monotonic()
        repeat = keyed_send(server.url, "killed-1")
        waited = time.monotonic() - started
        assert waited < 10, waited  # the PHP SDK gives up at 10 s (before: 11 s, then 409 for a day)
        assert time.monotonic() - claimed >= 5 - 0.5  # answered only once the holder's deadline was over
        assert repeat.status_code == 409, repeat.text
        result = repeat.json()["result"]
        assert (result["error"], result["error_code"]) == (43, "idempotency_outcome_unknown")
        assert result["sent"] == "0"
        assert result["reference"] == "killed-1"
        assert "may have sent" in result["note"]

        # Later repeats get the same, at once; over SOAP it is a Server fault.
        started = time.monotonic()
        later = keyed_send(server.url, "killed-1").json()["result"]
        assert later["error_code"] == "idempotency_outcome_unknown"
        code, text = fault_of(keyed_soap_send(server.url, "killed-2"))
        assert code == "soap11env:Server.IdempotencyOutcomeUnknown"
        assert "may have sent" in text and "Idempotency-Key" in text
        assert time.monotonic() - started < 3
        assert len(sends(fake_mobsms)) == 2  # one per key, never a second
    finally:
        fake_mobsms.behave()
        output = server.stop()
    assert KEY not in output


def test_a_repeat_waiting_on_a_live_holder_answers_in_flight_before_ten_seconds(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    """A holder may take 13 s (timeouts 3 s + 9 s, and 1 s): its repeat stops waiting before 10 s."""
    app = make_app("mobsms", connect_timeout=3.0, read_timeout=9.0)
    fake_mobsms.misbehave("slow", seconds=15)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            lambda: app.test_client().post("/sendsms/", data=SEND, headers={"Idempotency-Key": "live-1"})
        )
        wait_for(lambda: len(sends(fake_mobsms)) == 1, 10, "sent")
        started = time.monotonic()
        repeat = app.test_client().post("/sendsms/", data=SEND, headers={"Idempotency-Key": "live-1"})
        waited = time.monotonic() - started
        fake_mobsms.behave()
        first.result(timeout=30)
    assert waited < 9.5, waited
    assert repeat.status_code == 409
    assert repeat.get_json()["result"]["error_code"] == "idempotency_in_flight"
    assert repeat.headers["Retry-After"] == "1"
    assert len(sends(fake_mobsms)) == 1


# --- /resend/ on mobsms, twice at once ---------------------------------------------------------------------


def test_concurrent_resends_of_a_mobsms_message_send_once(fake_mobsms: FakeMobsms, tmp_path: Path) -> None:
    """Two /resend/ at once for one failed message: one copy goes out, the other caller hears why not."""
    failed = fake_mobsms.add_outbound(TO, "Ticket 7 is ready", "failed", error_message="NO_SERVICE")
    handle = fake_mobsms.handle

    def slow_sends(received: Received) -> Reply:
        if received.method == "POST":
            time.sleep(1.0)  # the copy takes a while to be queued: the second resend comes meanwhile
        return handle(received)

    server = Gunicorn(mobsms_env(fake_mobsms, tmp_path), tmp_path / "gunicorn.log")
    fake_mobsms.handle = slow_sends  # type: ignore[method-assign]
    try:
        fake_mobsms.reset()
        resend = lambda: requests.get(  # noqa: E731
            server.url + "/resend/", params={"apikey": KEY, "guid": failed["message_id"]}, timeout=30
        )
        with ThreadPoolExecutor(2) as pool:
            answers = [pool.submit(resend), pool.submit(resend)]
            answers = [answer.result() for answer in answers]
    finally:
        del fake_mobsms.handle
        output = server.stop()
    assert len(sends(fake_mobsms)) == 1  # before: 2
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 409], [a.text for a in answers]
    [won] = [a for a in answers if a.status_code == 200]
    [lost] = [a for a in answers if a.status_code == 409]
    assert won.json()["result"]["attempt"] == 1
    assert lost.json()["result"]["error_code"] == "resend_in_flight"
    assert NOTHING_SENT in lost.json()["result"]["note"]
    assert KEY not in output


# --- the sandbox's and the webhook events' databases ------------------------------------------------------

SANDBOX_KEY = "sandbox-key-1"
SANDBOX_SEND = {"apikey": SANDBOX_KEY, "recipients": TO, "message": "Storage trouble"}
WEBHOOK_SECRET = "whsec-storage-faults-0123456789"


def sandbox_env(data_dir: Path, **more: str) -> dict[str, str]:
    """Return the environment of a one-worker sandbox bridge whose webhook target refuses connections.

    Its events stay pending (each attempt is refused, then retried), so the deliverer keeps writing.
    """
    return {
        "SMSBRIDGE_BACKEND": "sandbox",
        "SMSBRIDGE_DATA_DIR": str(data_dir),
        "SMSBRIDGE_WORKERS": "1",
        "SMSBRIDGE_TOKEN_SECRET": TOKEN_SECRET,
        "SMSBRIDGE_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        "SMSBRIDGE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        **more,
    }


def sandbox_send(url: str) -> requests.Response:
    return requests.post(url + "/sendsms/", data=SANDBOX_SEND, timeout=30)


def sandbox_soap_send(url: str) -> requests.Response:
    return requests.post(
        url + "/sendsms/soap/",
        data=envelope(key=SANDBOX_KEY).encode(),
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=30,
    )


def post_event(server: Gunicorn, message_id: str) -> requests.Response:
    """Post an incoming SMS to the bridge's mobsms source URL, as mobsms does."""
    body = {
        "event": "incoming",
        "data": {
            "message_id": message_id,
            "sender_number": "+32470000002",
            "message": "Storage trouble",
            "direction": "inbound",
            "created_at": "2026-01-01T00:00:00Z",
        },
    }
    return requests.post(gunicorn_source_url(server), json=body, timeout=30)


def sandbox_rows(data_dir: Path) -> int:
    with closing(sqlite3.connect(data_dir / "sandbox.sqlite3")) as db:
        return db.execute("SELECT COUNT(*) FROM sent_sms").fetchone()[0]


def slowest_healthz(server: Gunicorn, *waiting: Future) -> float:
    """Ask /healthz every 0.2 s until every one of `waiting` is done; return its slowest answer's time."""
    time.sleep(0.5)  # they wait for the lock now
    slowest = 0.0
    while not all(future.done() for future in waiting):
        started = time.monotonic()
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.2)
    return slowest


def assert_event_not_stored(answer: requests.Response, says: str) -> None:
    """A source's post the bridge could not store: 503 and Retry-After (the source posts it again)."""
    assert answer.status_code == 503, answer.text
    result = answer.json()["result"]
    assert (result["error"], result["error_code"]) == (42, "storage_unavailable")
    assert says in result["note"] and "nothing was stored" in result["note"], result["note"]
    assert answer.headers["Retry-After"] == "1"


def assert_no_traceback(output: str) -> None:
    assert "Traceback" not in output, output
    assert "webhook deliverer failed" not in output, output
    assert "Server.InternalError" not in output
    assert SANDBOX_KEY not in output and "Storage trouble" not in output


def test_a_locked_sandbox_database_neither_freezes_the_worker_nor_fails_the_send(tmp_path: Path) -> None:
    """The sandbox is the upstream: locked, REST answers 503 and SOAP a Server.StorageUnavailable fault."""
    server = Gunicorn(sandbox_env(tmp_path), tmp_path / "gunicorn.log")
    try:
        assert sandbox_send(server.url).status_code == 200  # its account exists
        with closing(sqlite3.connect(tmp_path / "sandbox.sqlite3", isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            with ThreadPoolExecutor(2) as pool:
                rest = pool.submit(sandbox_send, server.url)
                soap = pool.submit(sandbox_soap_send, server.url)
                # SQLite's own wait held the worker for 5 s before (and SOAP answered InternalError).
                assert slowest_healthz(server, rest, soap) < 1.5
            holder.execute("ROLLBACK")
        assert_storage_error(rest.result(), "database is locked")
        assert_storage_fault(soap.result(), "database is locked")
        assert soap.result().headers["Retry-After"] == "1"
        assert sandbox_rows(tmp_path) == 1
        assert sandbox_send(server.url).status_code == 200
        answer = sandbox_soap_send(server.url)
        assert answer.status_code == 200, answer.text
        assert sandbox_rows(tmp_path) == 3
    finally:
        output = server.stop()
    assert_no_traceback(output)


def test_a_locked_webhook_database_answers_the_source_503_without_freezing_the_worker(tmp_path: Path) -> None:
    """An event posted while webhooks.sqlite3 is locked: 503 (the source retries), /healthz unaffected."""
    server = Gunicorn(sandbox_env(tmp_path), tmp_path / "gunicorn.log")
    try:
        stored = post_event(server, "before-the-lock")
        assert stored.status_code == 200 and stored.json()["stored"] is True
        with closing(sqlite3.connect(tmp_path / "webhooks.sqlite3", isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            with ThreadPoolExecutor(1) as pool:
                posted = pool.submit(post_event, server, "during-the-lock")
                assert slowest_healthz(server, posted) < 1.5
            holder.execute("ROLLBACK")
        assert_event_not_stored(posted.result(), "database is locked")
        # Posted again once the lock is gone (as the source retries), it is stored.
        again = post_event(server, "during-the-lock")
        assert again.status_code == 200 and again.json()["stored"] is True
    finally:
        output = server.stop()
    assert_no_traceback(output)
    assert output.count("webhook deliverer paused") <= 1


def test_a_full_disk_answers_sandbox_sends_sources_and_soap_in_the_dialect_and_the_deliverer_says_it_once(
    small_disk: Path, tmp_path: Path
) -> None:
    """The sandbox and the webhook events on a full disk: 503 / Server.StorageUnavailable, one log line."""
    data = small_disk / "data"
    log_file = tmp_path / "gunicorn.log"
    server = Gunicorn(sandbox_env(data), log_file)
    try:
        assert sandbox_send(server.url).status_code == 200
        assert post_event(server, "pending-1").json()["stored"] is True  # refused, retried: it stays pending
        filler = fill(small_disk)

        assert_storage_fault(sandbox_soap_send(server.url), "disk is full")  # before: Server.InternalError
        assert_storage_error(sandbox_send(server.url), "disk is full")
        assert_event_not_stored(post_event(server, "pending-2"), "disk is full")
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200

        # The deliverer fails to record its next attempt: one line says so, and no more while it lasts.
        wait_for(lambda: "webhook deliverer paused" in log_file.read_text(), 20, "said")
        time.sleep(4)  # before, every round of the loop wrote a traceback
        filler.unlink()
        stored = post_event(server, "pending-2")
        assert stored.status_code == 200 and stored.json()["stored"] is True
        assert sandbox_rows(data) == 1
    finally:
        output = server.stop()
    assert_no_traceback(output)
    assert output.count("webhook deliverer paused") == 1
    [line] = [line for line in output.splitlines() if "webhook deliverer paused" in line]
    assert "disk is full" in line


# --- a keyed send that fails over ---------------------------------------------------------------------------


def test_a_keyed_send_that_fails_over_is_held_for_both_backends_deadlines(
    fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    """The holder may take connect + read on the first backend, then on the failover: its claim covers both.

    Timeouts 1 s + 3 s: a holder's deadline was claim + 5 s with or without a failover backend, so a
    repeat after it (its worker killed while the failover backend had the send) answered "outcome
    unknown" while a live holder could still be sending. With a failover it is claim + 2 x 4 s + 1 s.
    """
    env = {
        "SMSBRIDGE_BACKEND": "smsmobileapi",
        "SMSBRIDGE_SMSMOBILEAPI_URL": "http://127.0.0.1:9",  # refuses: nothing reaches it, so it fails over
        "SMSBRIDGE_FAILOVER_BACKEND": "mobsms",
        "SMSBRIDGE_FAILOVER_KEY": KEY,
        "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
        "SMSBRIDGE_DATA_DIR": str(tmp_path),
        "SMSBRIDGE_WORKERS": "1",
        "SMSBRIDGE_CONNECT_TIMEOUT": "1",
        "SMSBRIDGE_READ_TIMEOUT": "3",
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    try:
        fake_mobsms.misbehave("slow", always=True, seconds=60)  # the failover backend takes them, silently
        [worker] = workers_of(server)
        started = time.monotonic()  # before either claim
        with ThreadPoolExecutor(2) as pool:
            first = [
                pool.submit(keyed_send, server.url, "failover-1"),
                pool.submit(keyed_soap_send, server.url, "failover-2"),
            ]
            wait_for(lambda: len(sends(fake_mobsms)) == 2, 10, "sent")
            os.kill(worker, signal.SIGKILL)
            for holder in first:
                with pytest.raises(requests.ConnectionError):
                    holder.result()
        wait_for(lambda: workers_of(server) not in ([], [worker]), 30, "restarted")
        fake_mobsms.behave()
        time.sleep(max(0.0, started + 6 - time.monotonic()))  # past the old deadline (claim + 5 s)

        def first_outcome_unknown(send: Callable[[], requests.Response]) -> tuple[float, requests.Response]:
            while True:
                answer = send()
                if answer.status_code != 409 or b"idempotency_in_flight" not in answer.content:
                    return time.monotonic() - started, answer
                time.sleep(0.2)

        after, repeat = first_outcome_unknown(lambda: keyed_send(server.url, "failover-1"))
        assert repeat.json()["result"]["error_code"] == "idempotency_outcome_unknown", repeat.text
        assert after >= 2 * (1 + 3) + 1 - 0.3, after  # never before the holder's failover could be over
        soap_after, soap_repeat = first_outcome_unknown(lambda: keyed_soap_send(server.url, "failover-2"))
        assert fault_of(soap_repeat)[0] == "soap11env:Server.IdempotencyOutcomeUnknown"
        assert soap_after >= 2 * (1 + 3) + 1 - 0.3, soap_after
        assert len(sends(fake_mobsms)) == 2  # one per key, never a second
    finally:
        fake_mobsms.behave()
        output = server.stop()
    assert KEY not in output


def test_a_managed_clients_keyed_sends_are_held_for_its_failover_only_when_it_has_one(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    """The hold follows the caller's own failover_backend, over REST and SOAP (resolved before the claim)."""
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f"""
[clients.shop]
key_sha256 = ["{hash_key("shop-key")}"]
backend = "smsmobileapi"
upstream_key = "vendor-key-1"
failover_backend = "mobsms"
failover_upstream_key = "{KEY}"

[clients.solo]
key_sha256 = ["{hash_key("solo-key")}"]
backend = "mobsms"
upstream_key = "{KEY}"
"""
    )
    app = make_app(
        "sandbox",
        clients_file=str(clients),
        data_dir=tmp_path,
        smsmobileapi_url="http://127.0.0.1:9",  # refuses: shop's sends fail over to mobsms
        connect_timeout=1.0,
        read_timeout=3.0,
    )
    client = app.test_client()

    def hold_of(send: Callable[[], object]) -> tuple[float, float]:
        """Return the bounds of the hold the send's claim was given (its deadline minus its claim time)."""
        before = time.time()
        answer = send()
        after = time.time()
        assert answer.status_code == 200, answer.get_data(as_text=True)
        with closing(sqlite3.connect(tmp_path / "state.sqlite3")) as db:
            (until,) = db.execute(
                "SELECT holder_until FROM idempotency ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
        return until - after, until - before

    def rest(key: str, idempotency_key: str) -> Callable[[], object]:
        data = {**SEND, "apikey": key}
        return lambda: client.post("/sendsms/", data=data, headers={"Idempotency-Key": idempotency_key})

    def soap(key: str, idempotency_key: str) -> Callable[[], object]:
        return lambda: client.post(
            "/sendsms/soap/",
            data=envelope(key=key).encode(),
            headers={"Content-Type": "text/xml; charset=utf-8", "Idempotency-Key": idempotency_key},
        )

    for send in (rest("shop-key", "shop-1"), soap("shop-key", "shop-2")):
        low, high = hold_of(send)
        assert low <= 2 * (1 + 3) + 1 <= high  # before: 1 + 3 + 1, as if it could not fail over
    for send in (rest("solo-key", "solo-1"), soap("solo-key", "solo-2")):
        low, high = hold_of(send)
        assert low <= 1 + 3 + 1 <= high
    assert len(sends(fake_mobsms)) == 4
