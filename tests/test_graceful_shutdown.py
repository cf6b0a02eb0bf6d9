"""SIGTERM under gunicorn: sends in flight finish and their answers reach the clients."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Received, Reply
from tests.harness.gunicorn import GUNICORN, ROOT, Gunicorn, gunicorn_env
from tests.harness.net import free_port

UPSTREAM_SECONDS = 2.0


class SlowMobsms(FakeMobsms):
    """mobsms taking two seconds to queue each SMS, as a real gateway under load may."""

    def handle(self, received: Received) -> Reply:
        time.sleep(UPSTREAM_SECONDS)
        return super().handle(received)


@pytest.fixture
def slow_mobsms() -> Iterator[SlowMobsms]:
    server = SlowMobsms()
    yield server
    server.stop()


def test_sends_in_flight_finish_after_sigterm(slow_mobsms: SlowMobsms, tmp_path: Path) -> None:
    bridge = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "mobsms",
            "SMSBRIDGE_MOBSMS_URL": slow_mobsms.url,
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
            "SMSBRIDGE_READ_TIMEOUT": "5",
        },
        tmp_path / "gunicorn.log",
    )
    answers: list[requests.Response] = []

    def send(n: int) -> None:
        answers.append(
            requests.post(
                bridge.url + "/sendsms/",
                data={"apikey": "mobsms-key-1", "recipients": f"+3247000000{n}", "message": f"in flight {n}"},
                timeout=15,
            )
        )

    senders = [threading.Thread(target=send, args=(n,)) for n in range(3)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 5
    while len(slow_mobsms.received) < 3:  # every send has reached the upstream and waits on it
        assert time.monotonic() < deadline, "the sends never reached the upstream"
        time.sleep(0.02)
    stopped_at = time.monotonic()
    bridge.process.send_signal(signal.SIGTERM)
    for sender in senders:
        sender.join()
    exit_code = bridge.process.wait(timeout=30)
    output = bridge.stop()

    assert [a.status_code for a in answers] == [200, 200, 200], output
    assert all(a.json()["result"]["sent"] == "1" for a in answers)
    assert sorted(a.json()["result"]["id"] for a in answers) == sorted(
        m["message_id"] for m in slow_mobsms.queued
    )
    assert len(slow_mobsms.received) == 3  # each sent once, none again
    assert exit_code == 0
    assert time.monotonic() - stopped_at < 10
    assert "Handling signal: term" in output


def test_sigterm_while_workers_boot_stops_gunicorn_at_once(tmp_path: Path) -> None:
    """A worker that gets SIGTERM while it is still starting exits; it does not run until killed.

    gunicorn's gevent worker monkey-patches the standard library before it installs its own signal
    handlers, and a SIGTERM in that window went to the handler inherited from the master, which did
    nothing in a worker: the worker then served on until the graceful timeout (30 s) ran out and the
    master killed it. gunicorn.conf.py's post_fork hook closes the window. SIGTERM is sent as soon as
    the master says it booted the workers, which is inside that window.
    """
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            GUNICORN,
            cwd=ROOT,
            env=gunicorn_env(free_port(), SMSBRIDGE_DATA_DIR=str(tmp_path), SMSBRIDGE_WORKERS="2"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while log.read_text().count("Booting worker") < 2:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.005)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=25) == 0, log.read_text()
            assert time.monotonic() - signalled < 10, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "graceful timeout" not in log.read_text()
