"""The vendor's other endpoints on the sandbox: calls, notifications, e-mail; and marking a message delivered.

Calls and arriving e-mail are made to happen through the console (`/sandbox/calls`, `/sandbox/email`),
then read back through the dialect (`/call/.../list/`, `/getemail/`) in the vendor's OpenAPI shapes
(tests/specs/smsmobileapi-openapi.yaml, validated here with jsonschema). On mobsms the same calls are
refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import jsonschema
import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from tests.harness.bridge import LiveBridge
from tests.harness.gunicorn import ROOT
from tests.harness.net import port_of, stop_quickly
from tests.harness.webhooks import V2Receiver, park, wait_for

KEY = {"apikey": "sandbox-key-1"}
OTHER_KEY = {"apikey": "sandbox-key-2"}
ALICE, BOB = "+32470000001", "+32470000002"
SECRET = "webhook-secret-for-extras"

SPEC = yaml.safe_load((ROOT / "tests" / "specs" / "smsmobileapi-openapi.yaml").read_text())


def answer_schema(path: str, method: str = "get") -> dict:
    """The 200 answer's schema of an operation, its $refs resolvable against the whole file."""
    schema = SPEC["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    return {**schema, "components": SPEC["components"]}


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app("sandbox").test_client()


def call(client: FlaskClient, direction: str, number: str, **extra: str) -> dict:
    response = client.post("/sandbox/calls", data={**KEY, "direction": direction, "number": number, **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["result"]


def get(client: FlaskClient, path: str, status: int = 200, key: dict = KEY, **params: str) -> dict:
    response = client.get(path, query_string={**key, **params})
    assert response.status_code == status, response.get_json()
    assert response.content_type.startswith("application/json")
    return response.get_json()


def refused(client: FlaskClient, path: str, name: str, **params: str) -> None:
    """A bad parameter is the dialect's 400, naming it."""
    answer = get(client, path, 400, **params)
    assert answer["result"]["error_code"] == "invalid_parameter"
    assert name in answer["message"]


# --- calls ------------------------------------------------------------------------------------------------


def test_missed_calls_are_listed_newest_first_in_the_openapi_shape(client: FlaskClient) -> None:
    first = call(client, "missed", ALICE, name="Morgan")
    second = call(client, "missed", BOB)
    call(client, "incoming", ALICE, duration="42")

    answer = get(client, "/call/missed/list/", offset="0", limit="100")
    jsonschema.validate(answer, answer_schema("/call/missed/list/"))
    assert answer["success"] is True
    assert (answer["offset"], answer["limit"], answer["count"]) == (0, 100, 2)
    assert [c["guid"] for c in answer["data"]] == [second["guid"], first["guid"]]
    morgan = answer["data"][1]
    assert morgan["number"] == morgan["phone_number"] == ALICE
    assert morgan["name"] == morgan["cached_name"] == "Morgan"
    assert morgan["duration_sec"] == 0
    assert morgan["sIdentifiant"] == "sandbox-phone-1"
    assert answer["data"][0]["name"] is None


def test_missed_calls_are_searched_paged_and_bounded_by_date(client: FlaskClient) -> None:
    call(client, "missed", ALICE, name="Morgan")
    call(client, "missed", BOB, name="Taylor")
    assert [c["name"] for c in get(client, "/call/missed/list/", search="morg")["data"]] == ["Morgan"]
    assert [c["number"] for c in get(client, "/call/missed/list/", search="470000002")["data"]] == [BOB]
    page = get(client, "/call/missed/list/", offset="1", limit="1")
    assert (page["count"], page["data"][0]["name"]) == (1, "Morgan")
    today = date.today()
    assert get(client, "/call/missed/list/", date_start=f"{today - timedelta(days=1)}")["count"] == 2
    assert get(client, "/call/missed/list/", date_end=f"{today - timedelta(days=2)}")["count"] == 0


def test_incoming_and_outgoing_calls_are_rows_sorted_both_ways(client: FlaskClient) -> None:
    early = call(client, "incoming", ALICE, duration="42", name="Morgan")
    late = call(client, "incoming", BOB, duration="7")
    out = call(client, "outgoing", BOB, duration="90")

    answer = get(client, "/call/incoming/list/", offset="0", limit="50", sort_dir="desc")
    jsonschema.validate(answer, answer_schema("/call/incoming/list/"))
    assert answer["success"] is True and answer["count"] == 2
    assert [r["guid"] for r in answer["rows"]] == [late["guid"], early["guid"]]
    assert answer["rows"][1]["duration_sec"] == 42
    ascending = get(client, "/call/incoming/list/", sort_dir="asc")["rows"]
    assert [r["guid"] for r in ascending] == [early["guid"], late["guid"]]
    assert [r["name"] for r in get(client, "/call/incoming/list/", q="morgan")["rows"]] == ["Morgan"]

    outgoing = get(client, "/call/outgoing/list/")
    jsonschema.validate(outgoing, answer_schema("/call/outgoing/list/"))
    assert [(r["guid"], r["duration_sec"], r["type"]) for r in outgoing["rows"]] == [
        (out["guid"], 90, "outgoing")
    ]


def test_call_lists_are_per_account(client: FlaskClient) -> None:
    call(client, "missed", ALICE)
    assert get(client, "/call/missed/list/", key=OTHER_KEY)["data"] == []


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/call/missed/list/", "offset", "-1"),
        ("/call/missed/list/", "limit", "0"),
        ("/call/missed/list/", "limit", "501"),
        ("/call/missed/list/", "limit", "many"),
        ("/call/missed/list/", "date_start", "yesterday"),
        ("/call/missed/list/", "date_end", "2026-13-01"),
        ("/call/incoming/list/", "limit", "201"),
        ("/call/incoming/list/", "sort_dir", "sideways"),
        ("/call/outgoing/list/", "offset", "1.5"),
        ("/notification/list/", "distribued", "2"),
        ("/notification/list/", "date_start", "someday"),
        ("/getemail/", "start", "-3"),
    ],
)
def test_bad_parameters_are_refused_by_name(client: FlaskClient, path: str, name: str, value: str) -> None:
    refused(client, path, name, **{name: value})


def test_the_limits_bounds_are_accepted(client: FlaskClient) -> None:
    assert get(client, "/call/missed/list/", limit="500")["limit"] == 500
    assert get(client, "/call/incoming/list/", limit="200", sort_dir="ASC")["success"] is True


def test_a_simulated_call_is_checked(client: FlaskClient) -> None:
    for data, name in [
        ({"direction": "ringing", "number": ALICE}, "direction"),
        ({"direction": "missed", "number": ALICE, "duration": "5"}, "duration"),
        ({"direction": "incoming", "number": ALICE, "duration": "-5"}, "duration"),
        ({"direction": "incoming", "number": "not a number"}, "not a number"),
    ]:
        response = client.post("/sandbox/calls", data={**KEY, **data})
        assert response.status_code == 400, response.get_json()
        assert name in response.get_json()["message"]
    unknown = client.post(
        "/sandbox/calls", data={**KEY, "direction": "missed", "number": ALICE, "sIdentifiantPhone": "nope"}
    )
    assert unknown.status_code == 404
    assert unknown.get_json()["result"]["error_code"] == "unknown_device"


# --- notifications ----------------------------------------------------------------------------------------


def test_a_notification_to_an_empty_sid_goes_to_the_first_phone_and_is_listed(client: FlaskClient) -> None:
    sent = client.post(
        "/notification/send",
        data={**KEY, "sid": "", "title": "Order ready", "message": "Order #1042 is ready for collection."},
    )
    assert sent.status_code == 200, sent.get_json()
    answer = sent.get_json()
    jsonschema.validate(answer, answer_schema("/notification/send", "post"))
    assert answer["success"] is True
    assert answer["sid"] == "sandbox-phone-1"
    assert answer["apikey"] == KEY["apikey"]  # the caller's own key, echoed as the vendor does
    assert isinstance(answer["id"], int)

    listed = get(client, "/notification/list/", sidentifiant="")
    assert listed["success"] is True and listed["count"] == 1
    [entry] = listed["notifications"]
    assert entry["id"] == answer["id"]
    assert (entry["sid"], entry["title"], entry["message"]) == (
        "sandbox-phone-1",
        "Order ready",
        "Order #1042 is ready for collection.",
    )
    assert (entry["type"], entry["distribued"]) == ("notification", 1)
    assert get(client, "/notification/list/", distribued="0")["count"] == 0
    assert get(client, "/notification/list/", sidentifiant="other-phone")["count"] == 0
    assert get(client, "/notification/list/", date_start=f"{date.today()}")["count"] == 1
    assert get(client, "/notification/list/", key=OTHER_KEY)["count"] == 0


def test_a_notification_takes_the_trailing_slash_and_defaults(client: FlaskClient) -> None:
    client.post("/sandbox/devices", data={**KEY, "sid": "phone-2"})
    sent = client.post("/notification/send/", data={**KEY, "sid": "phone-2", "message": "Hi"})
    assert sent.status_code == 200, sent.get_json()
    [entry] = get(client, "/notification/list/", sidentifiant="phone-2")["notifications"]
    assert (entry["title"], entry["type"]) == ("Notification", "notification")


def test_a_notification_needs_a_message_and_a_phone_of_the_account(client: FlaskClient) -> None:
    missing = client.post("/notification/send", data={**KEY, "sid": ""})
    assert missing.status_code == 400
    assert missing.get_json()["result"]["error_code"] == "missing_parameter"
    assert "message" in missing.get_json()["message"]
    unknown = client.post("/notification/send", data={**KEY, "sid": "nope", "message": "Hi"})
    assert unknown.status_code == 404
    assert unknown.get_json()["result"]["error_code"] == "unknown_device"


# --- e-mail -----------------------------------------------------------------------------------------------

EMAIL = {
    "apikeybox": "",
    "sender_name": "Example Team",
    "sender_email": "team@example.com",
    "recipient_email": "customer@example.net",
    "mail_subject": "Order confirmation",
    "mail_body": "Your order has been confirmed.",
    "allow_self_signed": "no",
}


def test_a_sent_email_is_kept_in_the_mailbox_sent_folder_not_its_inbox(client: FlaskClient) -> None:
    sent = client.post("/sendemail/", data={**KEY, **EMAIL})
    assert sent.status_code == 200, sent.get_json()
    answer = sent.get_json()
    assert (answer["error"], answer["sent"], answer["mbox"]) == ("0", "1", "Sent")

    inbox = get(client, "/getemail/", apikeybox="", mbox="INBOX", start="0")
    assert (inbox["error"], inbox["count"], inbox["emails"]) == ("0", 0, [])
    outbox = get(client, "/getemail/", apikeybox="", mbox="Sent", start="0")
    [kept] = outbox["emails"]
    assert kept["id"] == answer["id"]
    assert (kept["from_name"], kept["from_email"], kept["to"]) == (
        "Example Team",
        "team@example.com",
        "customer@example.net",
    )
    assert (kept["subject"], kept["body"]) == ("Order confirmation", "Your order has been confirmed.")
    # Another mailbox key is another mailbox; another API key another account.
    assert get(client, "/getemail/", apikeybox="box-2", mbox="Sent")["count"] == 0
    assert get(client, "/getemail/", key=OTHER_KEY, mbox="Sent")["count"] == 0


def test_an_arriving_email_is_in_the_inbox_newest_first_and_paged(client: FlaskClient) -> None:
    for n in range(3):
        arrived = client.post(
            "/sandbox/email",
            data={**KEY, "sender_email": "shop@example.org", "mail_subject": f"n{n}", "mail_body": "Hello"},
        )
        assert arrived.status_code == 200, arrived.get_json()
        assert arrived.get_json()["result"]["mbox"] == "INBOX"
    inbox = get(client, "/getemail/", mbox="inbox")
    assert [e["subject"] for e in inbox["emails"]] == ["n2", "n1", "n0"]
    assert (inbox["count"], inbox["total"]) == (3, 3)
    assert [e["subject"] for e in get(client, "/getemail/", start="2")["emails"]] == ["n0"]


@pytest.mark.parametrize(
    ("change", "name", "code"),
    [
        ({"sender_email": "not an address"}, "sender_email", "invalid_parameter"),
        ({"recipient_email": "nobody@"}, "recipient_email", "invalid_parameter"),
        ({"allow_self_signed": "maybe"}, "allow_self_signed", "invalid_parameter"),
        ({"allow_self_signed": ""}, "allow_self_signed", "missing_parameter"),
        ({"unsubscribe": "2"}, "unsubscribe", "invalid_parameter"),
        ({"attachmentBase64": "***"}, "attachmentBase64", "invalid_parameter"),
        ({"attachmentBase64": "é=="}, "attachmentBase64", "invalid_parameter"),
        ({"mail_body": ""}, "mail_body", "missing_parameter"),
        ({"mail_subject": ""}, "mail_subject", "missing_parameter"),
    ],
)
def test_a_bad_email_is_refused_by_name(
    client: FlaskClient, change: dict[str, str], name: str, code: str
) -> None:
    response = client.post("/sendemail/", data={**KEY, **EMAIL, **change})
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["result"]["error_code"] == code
    assert name in response.get_json()["message"]


def test_an_attachment_is_kept_by_name_and_size(client: FlaskClient) -> None:
    data = {**KEY, **EMAIL, "attachmentBase64": "aGVsbG8=", "attachmentBase64_name_1": "hello.txt"}
    assert client.post("/sendemail/", data=data).status_code == 200
    [kept] = get(client, "/getemail/", mbox="Sent")["emails"]
    assert (kept["attachment_name"], kept["attachment_size"]) == ("hello.txt", 5)


# --- on mobsms: refused by name ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "what"),
    [
        ("GET", "/call/missed/list/", "call logs"),
        ("GET", "/call/incoming/list/", "call logs"),
        ("GET", "/call/outgoing/list/", "call logs"),
        ("POST", "/notification/send", "notifications"),
        ("GET", "/notification/list/", "notifications"),
        ("POST", "/sendemail/", "e-mail"),
        ("GET", "/getemail/", "e-mail"),
    ],
)
def test_mobsms_refuses_them_by_name(
    make_app: Callable[..., Flask], method: str, path: str, what: str
) -> None:
    client = make_app("mobsms").test_client()
    data = {"apikey": "mobsms-key-1", "message": "Hi", **EMAIL}
    response = client.open(path, method=method, data=data if method == "POST" else None, query_string=data)
    assert response.status_code == 400, response.get_json()
    answer = response.get_json()
    assert answer["result"]["error_code"] == "unsupported_by_backend"
    assert f"the mobsms backend does not support {what}" in answer["message"]


# --- mark delivered, and the webhooks of what a tester makes happen --------------------------------------


@pytest.fixture
def hooked(make_app: Callable[..., Flask]) -> Iterator[tuple[LiveBridge, V2Receiver]]:
    """A sandbox bridge over HTTP whose webhook (V2, signed) is a receiver on 127.0.0.1."""
    receiver = V2Receiver(SECRET)
    bridge = LiveBridge(
        lambda url: make_app(
            "sandbox",
            public_url=url,
            webhook_url=receiver.url + "/hooks",
            webhook_format="v2",
            webhook_secret=SECRET,
            webhook_allow_private=True,
        )
    )
    bridge.app.extensions["smsbridge"].deliverer.poll = 0.05
    yield bridge, receiver
    stop_quickly(bridge.stop, port_of(bridge.url))
    park(bridge.app)
    stop_quickly(receiver.stop, port_of(receiver.url))


def test_mark_delivered_shows_in_the_log_and_emits_sms_sent(
    hooked: tuple[LiveBridge, V2Receiver],
) -> None:
    bridge, receiver = hooked
    client = bridge.app.test_client()
    guid = client.post("/sendsms/", data={**KEY, "recipients": ALICE, "message": "Hi"}).get_json()["result"][
        "id"
    ]

    delivered = client.post("/sandbox/deliver", data={**KEY, "guid": guid})
    assert delivered.status_code == 200, delivered.get_json()
    assert delivered.get_json()["result"] == {"error": 0, "guid": guid, "status": "delivered"}
    [entry] = get(client, "/log/sent/sms/")["result"]["sms"]
    assert entry["send_from_mobile"] == 1  # delivered: sent, and more
    assert [s["message"] for s in get(client, "/log/sent/frommobile/")["result"]["sms"]] == ["Hi"]

    envelopes = wait_for(receiver.envelopes, "the sms.sent event")
    assert [(e["type"], e["data"]) for e in envelopes] == [
        ("sms.sent", {"guid": guid, "to": ALICE, "status": "delivered"})
    ]

    again = client.post("/sandbox/deliver", data={**KEY, "guid": guid})
    assert again.status_code == 200  # a repeated report changes nothing
    client.post("/sandbox/fail", data={**KEY, "guid": guid})
    failed = client.post("/sandbox/deliver", data={**KEY, "guid": guid})
    assert failed.status_code == 400
    assert "failed" in failed.get_json()["message"]
    unknown = client.post("/sandbox/deliver", data={**KEY, "guid": "f" * 40})
    assert unknown.status_code == 404


def test_a_call_and_an_email_emit_the_vendor_event_types(hooked: tuple[LiveBridge, V2Receiver]) -> None:
    bridge, receiver = hooked
    client = bridge.app.test_client()
    logged = call(client, "missed", "+15557654321", name="Morgan")
    client.post(
        "/sandbox/email",
        data={**KEY, "sender_email": "shop@example.org", "mail_subject": "Hi", "mail_body": "Body"},
    )
    envelopes = wait_for(lambda: len(receiver.envelopes()) == 2 and receiver.envelopes(), "two events")
    by_type: dict[str, Any] = {e["type"]: e["data"] for e in envelopes}
    assert set(by_type) == {"call.missed", "email.received"}
    missed = by_type["call.missed"]
    assert {k: missed[k] for k in ("guid", "number", "name", "duration_seconds", "device_id")} == {
        "guid": logged["guid"],
        "number": "+15557654321",
        "name": "Morgan",
        "duration_seconds": 0,
        "device_id": "sandbox-phone-1",
    }
    assert json.dumps(by_type["email.received"]).count("shop@example.org") == 1
