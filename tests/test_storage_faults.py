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
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
import requests
from flask import Flask

from tests.fakes.mobsms import FakeMobsms
from tests.fakes.server import Received, Reply
from tests.test_gunicorn import Gunicorn
from tests.test_soap import envelope, fault_of

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
    """A 6 MiB tmpfs, unmounted afterwards. Root only, as the suite runs: failing to mount is an error."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True, capture_output=True)


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
        with caplog.at_level(logging.ERROR, logger="app.idempotency"):
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
