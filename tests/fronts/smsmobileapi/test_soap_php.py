"""SOAP interop with real PHP clients: nusoap (the vendor's documented snippet) and PHP's SoapClient.

Each test runs `php tests/harness/php/<client>_send.php WSDL_URL` against a bridge served over HTTP on
127.0.0.1, for each backend, and checks both what the PHP program got back and what reached the
(fake) upstream. The arguments travel as JSON on stdin, so that the message's bytes are exactly
UTF-8. Debian's nusoap 0.9.5 only has PHP 4 constructors, which PHP 8 ignores: the tests load a copy
with `__construct` shims added (see `nusoap_php`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app import create_app
from tests.harness.bridge import GOOD_KEY, UNICODE_TEXT, LiveBridge
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Received, Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import ROOT

PHP_DIR = ROOT / "tests" / "harness" / "php"
NUSOAP_SOURCE = Path("/usr/share/php/nusoap/nusoap.php")
CLIENTS = ("nusoap", "soapclient")

ONE = "+32470000001"
TWO = "+32470000002"

#: the fields of every successful answer: the WSDL's, less `port`, which no send here asks for
SUCCESS_FIELDS = {
    "error",
    "sent",
    "id",
    "note",
    "datetime",
    "datetimeLocal",
    "iac_control",
    "iac_authorized",
    "send_with_whatsapp",
    "encrypted",
    "trial_account",
}

#: `note` of a successful send, per backend (the vendor's is the fake vendor's own)
SUCCESS_NOTE = {
    "sandbox": "sent by mobile; smsbridge sandbox: nothing left this machine",
    "smsmobileapi": "sent by mobile",
    "mobsms": "queued by mobsms (pending)",
}

#: the faultstring of a refused key, per backend
KEY_REFUSED_NOTE = {
    "sandbox": "the API key is not one of the sandbox's keys",
    "smsmobileapi": "SMSMobileAPI refused the API key: API key invalid, expired or unauthorized",
    "mobsms": "mobsms refused the API key: Unauthenticated.",
}

PhpCall = Callable[[str, dict], dict]


def shim_nusoap(source: str) -> tuple[str, list[str]]:
    """Return nusoap's source with a PHP 8 constructor added to each PHP 4 style class, and their names."""
    methods = {name.lower() for name in re.findall(r"function\s+(\w+)\s*\(", source)}
    shimmed: list[str] = []

    def add_constructor(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.lower() not in methods:
            return match.group(0)
        shimmed.append(name)
        return match.group(0) + f" function __construct(...$a){{ $this->{name}(...$a); }}"

    return re.sub(r"(?m)^\s*class\s+(\w+)[^{;]*\{", add_constructor, source), shimmed


@pytest.fixture(scope="session")
def nusoap_php(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of Debian's nusoap.php that PHP 8 can construct."""
    assert NUSOAP_SOURCE.is_file(), f"{NUSOAP_SOURCE} is missing: run scripts/setup --test"
    source, shimmed = shim_nusoap(NUSOAP_SOURCE.read_text(encoding="latin-1"))
    assert {"nusoap_base", "soap_transport_http", "wsdl", "nusoap_parser", "nusoap_client"} <= set(shimmed)
    path = tmp_path_factory.mktemp("nusoap") / "nusoap.php"
    path.write_text(source, encoding="latin-1")
    return path


@pytest.fixture(scope="session")
def php_env(nusoap_php: Path) -> dict[str, str]:
    """The PHP scripts' environment: no proxy (everything is on 127.0.0.1), the shimmed nusoap."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NUSOAP_PHP"] = str(nusoap_php)
    env.pop("NUSOAP_DEBUG", None)
    env.pop("SOAPCLIENT_DEBUG", None)
    return env


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """Each PHP client in turn."""
    return request.param


@pytest.fixture
def call(client: str, php_env: dict[str, str]) -> PhpCall:
    """Return `call(wsdl_url, arguments)`: run the client's sendSms; return its one line of JSON."""
    php = shutil.which("php")
    assert php, "php is missing: run scripts/setup --test"
    script = PHP_DIR / f"{client}_send.php"

    def run(wsdl_url: str, arguments: dict) -> dict:
        done = subprocess.run(
            [php, str(script), wsdl_url],
            input=json.dumps(arguments).encode(),
            capture_output=True,
            env=php_env,
            timeout=30,
            check=False,
        )
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 0, f"{script.name} exited {done.returncode}: {stderr}"
        lines = done.stdout.decode().splitlines()
        assert len(lines) == 1, f"{script.name} printed {lines!r}; stderr: {stderr}"
        return json.loads(lines[0])

    return run


@pytest.fixture
def mobsms_answers(fake_mobsms: FakeMobsms, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The messages the fake mobsms answered as queued, in order (to compare the ids the bridge gives)."""
    answers: list[dict] = []
    queued = fake_mobsms._queued

    def recording(number: str) -> dict:
        answers.append(queued(number))
        return answers[-1]

    monkeypatch.setattr(fake_mobsms, "_queued", recording)
    return answers


@pytest.fixture(scope="module")
def keyed_sandbox(settings_for: Callable[..., dict]) -> Iterator[LiveBridge]:
    """A live sandbox bridge that accepts only GOOD_KEY["sandbox"] (the shared one accepts any key)."""
    bridge = LiveBridge(
        lambda url: create_app(
            settings_for("sandbox", public_url=url, sandbox_api_keys=frozenset({GOOD_KEY["sandbox"]}))
        )
    )
    yield bridge
    bridge.stop()


def sandbox_rows(live: LiveBridge, key: str) -> list[tuple[str, str, str]]:
    """What the live sandbox recorded for `key`: (guid, recipient, message), oldest first."""
    rows = live.app.extensions["smsbridge"].backend.sent(key)
    return [(row["guid"], row["recipient"], row["message"]) for row in rows]


def assert_success(result: dict, backend: str) -> None:
    """Check the fields of a successful answer (all but `id`, which each test checks)."""
    assert set(result) == SUCCESS_FIELDS
    assert result["error"] == "0"
    assert result["sent"] == "1"
    assert result["note"] == SUCCESS_NOTE[backend]
    assert result["iac_control"] == "1"
    assert result["iac_authorized"] == "1"
    assert result["send_with_whatsapp"] == "0"
    assert result["encrypted"] == {"status": "0"}
    # nusoap hands every value over as a string; SoapClient reads xs:integer as an int
    assert result["trial_account"]["status"] == "0"
    assert str(result["trial_account"]["sms_sent"]) == "0"
    assert set(result["trial_account"]) == {"status", "sms_sent"}
    if backend == "smsmobileapi":
        assert (result["datetime"], result["datetimeLocal"]) == (
            "2026-03-20T21:07:44Z",
            "2026-03-20T22:07:44+01:00",
        )
    else:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["datetime"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", result["datetimeLocal"])


def assert_fault(answer: dict, code: str, string: str) -> None:
    assert set(answer) == {"fault"}, answer
    assert answer["fault"]["code"] == f"soap11env:{code}"
    assert answer["fault"]["string"] == string


def vendor_id(received: Received) -> str:
    """The id the fake vendor gives for a request (as tests/harness/fakes/smsmobileapi.py computes it)."""
    return hashlib.sha1(received.body + repr(received.query).encode()).hexdigest()  # noqa: S324


@pytest.mark.parametrize("recipients", [(ONE,), (ONE, TWO)], ids=["one", "several"])
def test_send_reaches_the_upstream_with_the_text_intact(
    call: PhpCall,
    backend: str,
    live: LiveBridge,
    recipients: tuple[str, ...],
    fake_vendor: FakeSmsMobileApi,
    fake_mobsms: FakeMobsms,
    mobsms_answers: list[dict],
) -> None:
    key = GOOD_KEY[backend]
    before = sandbox_rows(live, key) if backend == "sandbox" else []

    answer = call(live.wsdl_url, {"recipients": ",".join(recipients), "message": UNICODE_TEXT, "apikey": key})

    assert set(answer) == {"result"}, answer
    result = answer["result"]
    assert_success(result, backend)
    if backend == "sandbox":
        assert fake_vendor.received == [] and fake_mobsms.received == []
        new = sandbox_rows(live, key)[len(before) :]
        assert [(recipient, message) for _, recipient, message in new] == [
            (number, UNICODE_TEXT) for number in recipients
        ]
        assert result["id"] == new[0][0]
        assert re.fullmatch(r"[0-9a-f]{40}", result["id"])
    elif backend == "smsmobileapi":
        assert fake_mobsms.received == []
        assert len(fake_vendor.received) == 1
        sent = fake_vendor.received[0]
        assert (sent.method, sent.path) == ("POST", "/sendsms/")
        assert sent.form == [("apikey", key), ("recipients", ",".join(recipients)), ("message", UNICODE_TEXT)]
        assert result["id"] == vendor_id(sent)
    else:
        assert fake_vendor.received == []
        assert len(fake_mobsms.received) == 1
        sent = fake_mobsms.received[0]
        assert sent.headers["authorization"] == f"Bearer {key}"
        if len(recipients) == 1:
            assert sent.path == "/api/sms"
            assert sent.json == {"message": UNICODE_TEXT, "recipient_number": ONE}
        else:
            assert sent.path == "/api/sms/bulk"
            assert sent.json == {"message": UNICODE_TEXT, "recipients": list(recipients)}
        assert [a["recipient_number"] for a in mobsms_answers] == list(recipients)
        # The SOAP answer has one id: the first recipient's (REST's extra `ids` has no WSDL field).
        assert result["id"] == mobsms_answers[0]["message_id"]
        assert str(uuid.UUID(result["id"])) == result["id"]


def test_refused_key_is_a_key_refused_fault(
    call: PhpCall,
    backend: str,
    live: LiveBridge,
    keyed_sandbox: LiveBridge,
    fake_vendor: FakeSmsMobileApi,
    fake_mobsms: FakeMobsms,
) -> None:
    bridge = keyed_sandbox if backend == "sandbox" else live

    answer = call(bridge.wsdl_url, {"recipients": ONE, "message": UNICODE_TEXT, "apikey": "wrong-key"})

    assert_fault(answer, "Client.KeyRefused", KEY_REFUSED_NOTE[backend])
    if backend == "sandbox":
        assert fake_vendor.received == [] and fake_mobsms.received == []
        assert sandbox_rows(keyed_sandbox, "wrong-key") == []
    elif backend == "smsmobileapi":
        assert fake_mobsms.received == []
        assert [r.form for r in fake_vendor.received] == [
            [("apikey", "wrong-key"), ("recipients", ONE), ("message", UNICODE_TEXT)]
        ]
    else:
        assert fake_vendor.received == []
        assert [r.headers["authorization"] for r in fake_mobsms.received] == ["Bearer wrong-key"]


@pytest.mark.parametrize("apikey", [None, ""], ids=["omitted", "empty"])
def test_missing_apikey_is_refused_before_any_upstream_call(
    call: PhpCall,
    backend: str,
    live: LiveBridge,
    apikey: str | None,
    fake_vendor: FakeSmsMobileApi,
    fake_mobsms: FakeMobsms,
) -> None:
    arguments = {"recipients": ONE, "message": UNICODE_TEXT}
    if apikey is not None:
        arguments["apikey"] = apikey
    before = sandbox_rows(live, "") if backend == "sandbox" else []

    answer = call(live.wsdl_url, arguments)

    assert_fault(answer, "Client.MissingParameter", "apikey is missing")
    assert fake_vendor.received == []
    assert fake_mobsms.received == []
    if backend == "sandbox":
        assert sandbox_rows(live, "") == before


def test_mobsms_without_a_device_is_a_server_fault(
    call: PhpCall, live_bridges: dict[str, LiveBridge], fake_mobsms: FakeMobsms
) -> None:
    fake_mobsms.no_device = True

    answer = call(
        live_bridges["mobsms"].wsdl_url,
        {"recipients": ONE, "message": UNICODE_TEXT, "apikey": GOOD_KEY["mobsms"]},
    )

    assert_fault(
        answer, "Server.NoDeviceAvailable", "mobsms has no active device to send from; nothing was sent"
    )
    assert [r.json for r in fake_mobsms.received] == [{"message": UNICODE_TEXT, "recipient_number": ONE}]


def test_non_ascii_fault_string_reaches_php(
    call: PhpCall, client: str, live_bridges: dict[str, LiveBridge], fake_vendor: FakeSmsMobileApi
) -> None:
    fake_vendor.next_reply = Reply.json(403, {"error": 403, "message": "clé refusée € 你"})

    answer = call(
        live_bridges["smsmobileapi"].wsdl_url,
        {"recipients": ONE, "message": "hello", "apikey": GOOD_KEY["smsmobileapi"]},
    )

    # nusoap hands its program Latin-1 strings: characters beyond Latin-1 become "?".
    words = "clé refusée ? ?" if client == "nusoap" else "clé refusée € 你"
    assert_fault(answer, "Client.KeyRefused", f"SMSMobileAPI refused the API key: {words}")
    assert len(fake_vendor.received) == 1
