"""The vendor's contract: every operation of SMSMobileAPI's public OpenAPI file, fuzzed by schemathesis.

The bridge runs as in production (`gunicorn -c gunicorn.conf.py wsgi:app`, gevent workers) on 127.0.0.1,
one per backend: the sandbox, mobsms in front of tests/harness/fakes/mobsms.py, and smsmobileapi passing the
vendor's API through to tests/harness/fakes/smsmobileapi.py (answering, past `/sendsms/`, each of the file's
other operations as documented). Real gunicorn rather than Flask's WSGI in-process: gunicorn's own HTTP
parsing and rejections, the gevent worker, the redacting logger and multi-process metrics are what
callers meet, and the server's own output can be searched for a traceback afterwards.

For each backend and operation: one well-formed call (an answer the vendor documents), then
schemathesis' generated calls, valid and invalid against the file, a bounded and seeded number of each.
Every answer must be no 5xx, carry no traceback, be of the documented type and valid against the
documented schema. The file documents few statuses; the dialect's refusals the file does not list are
excused one by one below (DIALECT_REFUSALS), each only with the file's own error body.

tests/specs/smsmobileapi-openapi.yaml is a copy of the vendor's file (info.version 2026-09-23): its
`servers` names the real vendor, so every call is sent to an explicit base URL on 127.0.0.1 and a check
refuses any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from tests import schemas
from tests.harness.bridge import BACKENDS, GOOD_KEY
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Received, Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import ROOT, Gunicorn

SPEC = ROOT / "tests" / "specs" / "smsmobileapi-openapi.yaml"


def load_schema() -> schemathesis.BaseSchema:
    """Load the file with schemathesis' defaults (no configuration file is looked for)."""
    return schemathesis.openapi.from_path(SPEC, config=schemathesis.Config())


DOCUMENT = load_schema().raw_schema
OPERATIONS = [result.ok().label for result in load_schema().get_all_operations()]

#: generated calls per operation, backend and mode (valid, invalid): 2 x 25 x 15 x 3 = 2,250 in all
EXAMPLES = 25
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same calls on every run: CI is repeatable
    database=None,
    deadline=None,  # a real server on a loaded 2-core machine
    # No shrinking: a failure is reported with the call that made it (as curl), and a run stays bounded.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

#: Statuses the file does not document for an operation, answered anyway, each with the bridge's
#: `result.error_code`s it may carry and why. Every such answer must still be the file's ErrorResponse.
#: This is the whole list of exclusions: anything else undocumented fails.
DIALECT_REFUSALS: dict[int, tuple[frozenset[str], str]] = {
    400: (
        frozenset({"invalid_parameter", "missing_parameter", "invalid_recipient", "unsupported_by_backend"}),
        "the dialect refuses a bad or missing parameter with 400 on every endpoint (the file documents 400 "
        "on /sendsms/ only), and so an operation the backend cannot do (mobsms: WhatsApp, calls, e-mail...)",
    ),
    403: (
        frozenset({"key_refused"}),
        "the file's wrong: its security (ApiKeyQuery) covers every operation, but it documents 403 on "
        "/sendsms/ and /getsms/ only; the vendor's own 403 comes through the smsmobileapi backend as it is",
    ),
    404: (
        frozenset({"unknown_device"}),
        "a notification to a sid the sandbox account has no phone of (docs/backends.md, simulated endpoints)",
    ),
    409: (
        frozenset({"sync_required"}),
        "/getwa/ before /getwa/synchronisation/: the vendor's docs require the synchronisation first",
    ),
}

#: the refusals the smsmobileapi backend passes through from the vendor, without the bridge's `result`
VENDOR_REFUSALS = frozenset({403})

#: schemathesis' checks left out, and why
#: - status_code_conformance: replaced by `documented_or_dialect_refusal`, which excuses DIALECT_REFUSALS
#:   only, and only with the documented error body.
#: - negative_data_rejection: the dialect, like the vendor's PHP, ignores parameters it does not know and
#:   reads numbers leniently (`port=2.0`), so an invalid call may be answered 200.
#: - positive_data_acceptance: the file types recipients and ids as any string; the bridge refuses a
#:   string that is not a phone number or a known id, with 400, as the vendor does.
#: - max_response_time and the stateful checks: not contract checks.

#: what the fake vendor answers, per path, to a call with a valid key: each answer valid against the file
VENDOR_ANSWERS: dict[str, object] = {
    "/getsms/": {
        "result": {
            "error": "",
            "sms": [
                {
                    "id": 1,
                    "sIdentifiantPhone": "sid-1",
                    "timestamp_unix": 1741692420,
                    "message": "Hi",
                    "number": "+32470000001",
                    "guid": "652fcfc0-12a8-46f5-b5ba-9391135b8b4c",
                    "alias": None,
                }
            ],
        }
    },
    "/log/sent/sms/": {"result": {"error": "0", "sms": []}},
    "/gateway/mobile/list/": {"result": {"error": "0", "mobiles": []}},
    "/call/missed/list/": {"success": True, "offset": 0, "limit": 100, "count": 0, "data": []},
    "/call/incoming/list/": {"success": True, "count": 0, "rows": []},
    "/call/outgoing/list/": {"success": True, "count": 0, "rows": []},
    "/notification/send/": {"success": True, "message": "created", "id": 7, "sid": "sid-1"},
    # The file fixes no field of these three answers: the shapes the sandbox answers (docs/backends.md).
    "/notification/list/": {"success": True, "count": 0, "notifications": []},
    "/getwa/active/": {"error": "0", "statut": "1"},
    "/getwa/synchronisation/": {
        "error": "0",
        "messages": "synchronized",
        "expire_at": "2025-03-11 12:27:00",
        "expire_at_unix": "1741692420",
    },
    "/getwa/": {"error": "0", "count": 0, "messages": []},
    "/whatsapp/checknumber/": {"error": "0", "recipients": "32470000001", "whatsapp": "1"},
    "/sendemail/": {"error": "0", "sent": "1", "id": 1, "mbox": "Sent"},
    "/getemail/": {"error": "0", "mbox": "INBOX", "start": 0, "count": 0, "total": 0, "emails": []},
}


class DocumentedVendor(FakeSmsMobileApi):
    """The fake vendor, answering each operation of the file as documented (it knows `/sendsms/` only)."""

    def handle(self, received: Received) -> Reply:
        reply = super().handle(received)
        answer = VENDOR_ANSWERS.get(received.path.rstrip("/") + "/")
        if reply.status == 404 and answer is not None:
            return Reply.json(200, answer)
        return reply


#: well-formed calls, one per operation: (query, form body); the credential is added per backend
WELL_FORMED: dict[str, tuple[dict[str, str], dict[str, str] | None]] = {
    "POST /sendsms/": ({}, {"recipients": "+32470000001", "message": "contract"}),
    "GET /getsms/": ({"onlyunread": "yes"}, None),
    "GET /log/sent/sms/": ({"error_api": "0"}, None),
    "GET /gateway/mobile/list/": ({}, None),
    "GET /call/missed/list/": ({"limit": "10"}, None),
    "GET /call/incoming/list/": ({"sort_dir": "asc"}, None),
    "GET /call/outgoing/list/": ({}, None),
    "POST /notification/send": ({}, {"sid": "sandbox-phone-1", "message": "contract"}),
    "GET /notification/list/": ({}, None),
    "GET /getwa/active/": ({"statut": "1"}, None),
    "GET /getwa/synchronisation/": ({}, None),
    "GET /getwa/": ({"message_type": "text"}, None),
    "GET /whatsapp/checknumber/": ({"recipients": "32470000001"}, None),
    "POST /sendemail/": (
        {},
        {
            "apikeybox": "box",
            "sender_name": "A",
            "sender_email": "a@example.test",
            "recipient_email": "b@example.test",
            "mail_subject": "s",
            "mail_body": "b",
            "allow_self_signed": "no",
        },
    ),
    "GET /getemail/": ({"apikeybox": "box", "mbox": "INBOX", "start": "0"}, None),
}

#: calls, notifications and e-mail: simulated by the sandbox, passed through by the smsmobileapi backend,
#: refused by name by mobsms (400 unsupported_by_backend)
NOT_SERVED = {
    op
    for op in OPERATIONS
    if op.split()[1].startswith(("/call/", "/notification/", "/sendemail", "/getemail"))
}
#: operations mobsms refuses (it has no WhatsApp)
NO_WHATSAPP = {op for op in OPERATIONS if "/getwa/" in op or "/whatsapp/" in op}


def expected_status(backend: str, operation: str) -> int:
    """Return the status a well-formed call to `operation` gets from `backend`."""
    if backend == "mobsms" and (operation in NOT_SERVED or operation in NO_WHATSAPP):
        return 400
    return 200


def test_every_operation_has_a_well_formed_call() -> None:
    assert sorted(WELL_FORMED) == sorted(OPERATIONS)


# --- the checks ---------------------------------------------------------------------------------------------


#: the file's error body (components.schemas.ErrorResponse), which every refusal must be
ERROR_RESPONSE = DOCUMENT["components"]["schemas"]["ErrorResponse"]
#: the bridge's own refusal: the dialect's `result`, with the OpenAPI fields beside it
BRIDGE_ERROR = {
    "allOf": [
        schemas.ERROR,
        {
            "type": "object",
            "required": ["result"],
            "properties": {
                "result": {
                    "type": "object",
                    "required": ["error", "error_code", "sent", "note"],
                    "properties": {"error_code": {"type": "string"}, "sent": {"const": "0"}},
                }
            },
        },
    ]
}


def stays_on_loopback(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool | None:
    """The call went to the bridge on 127.0.0.1, never to the file's `servers` (the real vendor)."""
    host = urlsplit(response.request.url).hostname
    if host != "127.0.0.1":
        raise AssertionError(f"a call left 127.0.0.1: {host}")
    return None


def no_traceback(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool | None:
    """No answer shows a Python traceback or an HTML error page."""
    text = response.text or ""
    if "Traceback (most recent call last)" in text or 'File "/' in text:
        raise AssertionError(f"a traceback in the answer: {text[:300]!r}")
    if text.lstrip().lower().startswith(("<!doctype html", "<html")):
        raise AssertionError(f"an HTML answer: {text[:300]!r}")
    return None


def documented_or_dialect_refusal(
    ctx: CheckContext, response: schemathesis.Response, case: Case
) -> bool | None:
    """The status is documented for the operation, or one of DIALECT_REFUSALS with the file's error body."""
    status = response.status_code
    if str(status) in case.operation.responses.status_codes:
        return None
    if status not in DIALECT_REFUSALS:
        raise AssertionError(
            f"{status} is neither documented for {case.operation.label} nor a dialect refusal"
        )
    document = response.json()
    jsonschema.validate(document, ERROR_RESPONSE)
    if "result" not in document and status in VENDOR_REFUSALS:
        return None  # the vendor's own refusal, passed through
    jsonschema.validate(document, BRIDGE_ERROR)
    codes, _why = DIALECT_REFUSALS[status]
    code = document["result"]["error_code"]
    if code not in codes:
        raise AssertionError(f"{status} with error_code {code!r}: expected one of {sorted(codes)}")
    return None


CHECKS = [
    stays_on_loopback,
    not_a_server_error,
    no_traceback,
    documented_or_dialect_refusal,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# --- the bridges --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documented_vendor() -> Iterator[DocumentedVendor]:
    server = DocumentedVendor()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bridges(
    documented_vendor: DocumentedVendor, fake_mobsms: FakeMobsms, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Gunicorn]]:
    """Return the bridge of a backend under gunicorn, started on first use and kept for the module."""
    started: dict[str, Gunicorn] = {}

    def bridge(backend: str) -> Gunicorn:
        if backend not in started:
            data = tmp_path_factory.mktemp(f"contract-{backend}")
            started[backend] = Gunicorn(
                {
                    "SMSBRIDGE_BACKEND": backend,
                    "SMSBRIDGE_SMSMOBILEAPI_URL": documented_vendor.url,
                    "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
                    "SMSBRIDGE_DATA_DIR": str(data),
                    "SMSBRIDGE_RATE_LIMIT": "100000/minute",
                },
                data / "gunicorn.log",
            )
        return started[backend]

    yield bridge
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def schema() -> schemathesis.BaseSchema:
    return load_schema()


def prepared(case: Case, backend: str, keyed: bool, reachable: bool) -> Case:
    """Give the case the backend's valid key if `keyed`, and a recipient a send can reach if `reachable`.

    Hypothesis picks both flags, so that some calls keep the key and the recipient it generated (the
    refusals) and the others get past them to the views and the backend (the answers to accepted calls).
    """
    if keyed and isinstance(case.query, dict):
        case.query["apikey"] = GOOD_KEY[backend]
    if keyed and isinstance(case.body, dict) and "apikey" in case.body:
        case.body["apikey"] = GOOD_KEY[backend]
    if reachable and isinstance(case.body, dict) and "recipients" in case.body:
        case.body["recipients"] = "+32470000001"
    return case


def prepare_getwa(session: requests.Session, url: str, backend: str) -> None:
    """Open a WhatsApp synchronisation; on the sandbox, receive a WhatsApp message to read first."""
    key = {"apikey": GOOD_KEY[backend]}
    if backend == "sandbox":
        received = session.post(
            url + "/sandbox/inbound",
            data={**key, "number": "19176728660", "message": "order?", "channel": "whatsapp"},
            timeout=15,
        )
        assert received.status_code == 200, received.text
    session.get(url + "/getwa/synchronisation/", params=key, timeout=15)


# --- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_answer_follows_the_vendor_openapi(
    backend: str, operation: str, bridges: Callable[[str], Gunicorn], schema: schemathesis.BaseSchema
) -> None:
    bridge = bridges(backend)
    method, path = operation.split()
    api = schema[path][method]
    with requests.Session() as session:

        def call(case: Case) -> schemathesis.Response:
            return case.call_and_validate(
                base_url=bridge.url, session=session, checks=CHECKS, timeout=15, allow_redirects=False
            )

        if path == "/getwa/":
            prepare_getwa(session, bridge.url, backend)
        query, form = WELL_FORMED[operation]
        key = {"apikey": GOOD_KEY[backend]}
        if form is None:
            well_formed = api.Case(query={**key, **query})
        else:
            well_formed = api.Case(
                query={**key, **query}, body={**key, **form}, media_type="application/x-www-form-urlencoded"
            )
        answer = call(well_formed)
        assert answer.status_code == expected_status(backend, operation), answer.text[:500]
        if operation == "GET /getwa/" and backend == "sandbox":
            jsonschema.validate(answer.json(), schemas.GETWA)
            assert answer.json()["count"] >= 1

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=api.as_strategy(generation_mode=mode), keyed=st.booleans(), reachable=st.booleans())
            @SETTINGS
            def generated(case: Case, keyed: bool, reachable: bool) -> None:
                call(prepared(case, backend, keyed, reachable))

            generated()
    log = bridge.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
