"""End to end: `gunicorn -c gunicorn.conf.py wsgi:app`, as the README runs it, sending through mobsms."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import zeep
from gunicorn.workers.ggevent import GeventWorker

from app.gunicorn_worker import DialectGeventWorker
from tests.harness.bridge import UNICODE_TEXT
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.gunicorn import GUNICORN, ROOT, Gunicorn, gunicorn_env
from tests.harness.net import free_port


@pytest.fixture
def gunicorn_mobsms(fake_mobsms: FakeMobsms, tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "mobsms",
            "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
            "SMSBRIDGE_DATA_DIR": str(tmp_path),
        },
        tmp_path / "gunicorn.log",
    )
    yield server
    server.stop()


def test_rest_and_soap_send_through_gunicorn(gunicorn_mobsms: Gunicorn, fake_mobsms: FakeMobsms) -> None:
    rest = requests.get(
        gunicorn_mobsms.url + "/sendsms/",
        params={"apikey": "mobsms-key-1", "recipients": "+32470000001", "message": "Hello from REST"},
        timeout=10,
    )
    assert rest.status_code == 200
    assert rest.json()["result"]["sent"] == "1"
    assert rest.json()["result"]["id"] == fake_mobsms.queued[-1]["message_id"]

    client = zeep.Client(gunicorn_mobsms.url + "/sendsms/wsdl/sendsms.wsdl")
    soap = client.service.sendSms(recipients="+32470000002", message=UNICODE_TEXT, apikey="mobsms-key-1")
    assert soap["sent"] == "1"
    assert soap["id"] == fake_mobsms.queued[-1]["message_id"]

    assert [r.json for r in fake_mobsms.received] == [
        {"message": "Hello from REST", "recipient_number": "+32470000001"},
        {"message": UNICODE_TEXT, "recipient_number": "+32470000002"},
    ]
    output = gunicorn_mobsms.stop()
    assert '"method":"GET","path":"/sendsms/"' in output  # the request log's line
    assert "mobsms-key-1" not in output
    # The master loads no HTTP client before gevent patches ssl in the workers (it prepares the data
    # directory, the sandbox's database included, with app.backends' modules imported lazily).
    assert "MonkeyPatchWarning" not in output
    assert "Hello from REST" not in output


def test_no_app_module_imports_urllib3_when_it_is_imported() -> None:
    """What gunicorn's master imports (the app's modules, its worker class) loads no HTTP client."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, app, app.config, app.gunicorn_worker; print('urllib3' in sys.modules)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False", done.stdout + done.stderr


def test_a_webhook_url_checked_in_the_master_leaves_the_workers_ssl_patched(tmp_path: Path) -> None:
    """The master parses SMSBRIDGE_WEBHOOK_URL with urllib3; the workers still import it after gevent."""
    settings = {
        "SMSBRIDGE_DATA_DIR": str(tmp_path),
        "SMSBRIDGE_WEBHOOK_URL": "https://receiver.example/hook",
        "SMSBRIDGE_WEBHOOK_SECRET": "s" * 32,
    }
    server = Gunicorn(settings, tmp_path / "gunicorn.log")
    output = server.stop()
    assert "MonkeyPatchWarning" not in output, output


def test_an_invalid_webhook_url_stops_gunicorn_before_any_worker_with_one_line(tmp_path: Path) -> None:
    """The master checks the URL in a forked child (it imports no urllib3 itself) and stops in one line."""
    log = tmp_path / "gunicorn.log"
    env = {
        **gunicorn_env(free_port()),
        "SMSBRIDGE_DATA_DIR": str(tmp_path),
        "SMSBRIDGE_WEBHOOK_URL": "http://127.0.0.1:9\\@8.8.8.8/hook",
        "SMSBRIDGE_WEBHOOK_SECRET": "s" * 32,
    }
    with log.open("wb") as out:
        process = subprocess.run(
            GUNICORN, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=60, check=False
        )
    output = log.read_text()
    assert process.returncode != 0, output
    assert "smsbridge: SMSBRIDGE_WEBHOOK_URL" in output and "backslash" in output, output
    assert "Traceback" not in output, output
    assert "Booting worker" not in output, output


def test_the_default_backend_is_the_sandbox(tmp_path: Path) -> None:
    server = Gunicorn({"SMSBRIDGE_DATA_DIR": str(tmp_path)}, tmp_path / "gunicorn.log")
    try:
        response = requests.post(
            server.url + "/sendsms",
            data={"apikey": "any-key", "recipients": "+32470000001", "message": "Hi"},
            timeout=10,
        )
        assert response.json()["result"]["sent"] == "1"
        assert "smsbridge sandbox" in response.json()["result"]["note"]
    finally:
        server.stop()
    assert (tmp_path / "sandbox.sqlite3").exists()


def test_an_invalid_configuration_stops_gunicorn_with_a_clear_message(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.run(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env={**os.environ, "SMSBRIDGE_BACKEND": "twilio", "SMSBRIDGE_BIND": f"127.0.0.1:{free_port()}"},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    assert process.returncode != 0
    assert "SMSBRIDGE_BACKEND='twilio': expected one of sandbox, smsmobileapi, mobsms" in log.read_text()


def test_the_runtime_is_gevent_one_worker_per_core_with_a_graceful_timeout_above_the_upstreams(
    tmp_path: Path,
) -> None:
    """gunicorn.conf.py as gunicorn reads it: the settings the README's Runtime section promises."""
    env = gunicorn_env(
        free_port(),
        SMSBRIDGE_DATA_DIR=str(tmp_path),
        SMSBRIDGE_CONNECT_TIMEOUT="5",
        SMSBRIDGE_READ_TIMEOUT="60",
    )
    done = subprocess.run(
        [*GUNICORN[:-1], "--print-config", GUNICORN[-1]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config = dict(
        (name.strip(), value.strip())
        for name, sep, value in (line.partition("=") for line in done.stdout.splitlines())
        if sep
    )
    # gevent's worker, answering gunicorn's own refusals in the dialect
    assert config["worker_class"] == "app.gunicorn_worker.DialectGeventWorker"
    assert issubclass(DialectGeventWorker, GeventWorker)
    assert int(config["workers"]) == len(os.sched_getaffinity(0))
    assert int(config["worker_connections"]) >= 1000
    assert config["accesslog"] == "None"
    assert float(config["graceful_timeout"]) > 5 + 60  # a send in flight can still end and be answered
    assert float(config["timeout"]) > 5 + 60
