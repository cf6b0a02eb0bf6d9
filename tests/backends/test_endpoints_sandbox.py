"""Every SMSMobileAPI endpoint on the sandbox, the reference for how the dialect behaves."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import date, timedelta

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.fronts.smsmobileapi.records import local, utc
from tests import schemas

KEY = {"apikey": "sandbox-key-1"}
ALICE, BOB = "+32470000001", "+32470000002"


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app("sandbox")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def send(client: FlaskClient, recipients: str, message: str = "Hi", **options: str) -> list[str]:
    result = client.post(
        "/sendsms/", data={**KEY, "recipients": recipients, "message": message, **options}
    ).get_json()
    assert result["result"]["sent"] == "1", result
    return result["result"].get("ids", [result["result"]["id"]])


def inbound(client: FlaskClient, number: str, message: str, **extra: str) -> dict:
    response = client.post("/sandbox/inbound", data={**KEY, "number": number, "message": message, **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["result"]


def get(client: FlaskClient, path: str, status: int = 200, **params: str) -> dict | list:
    response = client.get(path, query_string={**KEY, **params})
    assert response.status_code == status, response.get_json()
    assert response.content_type.startswith("application/json")
    return response.get_json()


# --- the sent log, failures and resends -------------------------------------------------------------------


def test_log_lists_what_was_sent_with_every_documented_field(client: FlaskClient) -> None:
    before = int(time.time())
    [guid] = send(client, ALICE, "Hello", port="2", sIdentifiant="sandbox-phone-1")
    [entry] = get(client, "/log/sent/sms/")["result"]["sms"]
    queued = entry["timestamp_server"]
    assert before <= queued <= time.time()
    assert entry == {
        "sIdentifiantPhone": "sandbox-phone-1",
        "port": 2,
        "date_add": f"{local(queued):%Y-%m-%d}",
        "hour_add": f"{local(queued):%H:%M:%S}",
        "timestamp": queued + int(local(queued).utcoffset().total_seconds()),
        "send_from_mobile": 1,
        "send_from_mobile_date": f"{local(queued):%Y-%m-%d}",
        "send_from_mobile_heure": f"{local(queued):%H:%M:%S}",
        "send_from_mobile_timestamp": entry["timestamp"],
        "recipients": ALICE,
        "sms": "Hello",
        "error_api": "",
        "send_from_mobile_erreur": "",
        "guid_message": guid,
        "timearea": entry["timearea"],
        "date_add_server": f"{utc(queued):%Y-%m-%d}",
        "hour_add_server": f"{utc(queued):%H:%M:%S}",
        "timestamp_server": queued,
        "send_from_mobile_date_server": f"{utc(queued):%Y-%m-%d}",
        "send_from_mobile_heure_server": f"{utc(queued):%H:%M:%S}",
    }
    assert re.fullmatch(r"UTC[+-]\d\d(:\d\d)?", entry["timearea"])


def test_a_scheduled_sms_waits_in_the_log(client: FlaskClient) -> None:
    send(client, ALICE, schedule_timestamp=str(int(time.time()) + 3600))
    [entry] = get(client, "/log/sent/sms/")["result"]["sms"]
    assert (entry["send_from_mobile"], entry["send_from_mobile_timestamp"]) == (0, None)


def test_log_filters(client: FlaskClient) -> None:
    first, second = send(client, f"{ALICE},{BOB}", "Your Code is 1234")
    [third] = send(client, ALICE, "see you")
    client.post("/sandbox/fail", data={**KEY, "guid": first, "error": "no signal"})
    client.post("/sandbox/fail", data={**KEY, "guid": third, "error": "rejected", "where": "api"})

    def guids(**params: str) -> list[str]:
        return [e["guid_message"] for e in get(client, "/log/sent/sms/", **params)["result"]["sms"]]

    assert guids() == [third, second, first]
    assert guids(guid_message=second) == [second]
    assert guids(guid_message="nope") == []
    assert guids(keyword="code") == [second, first]
    assert guids(keyword=BOB[-6:]) == [second]
    assert guids(error_mobile="1") == [first]
    assert guids(error_api="1") == [third]
    assert guids(before=third) == [second, first]
    assert guids(before=str(int(time.time()) + 10)) == [third, second, first]
    assert guids(before="1") == []
    failed = get(client, "/log/sent/sms/", error_mobile="1")["result"]["sms"][0]
    assert (failed["send_from_mobile"], failed["send_from_mobile_erreur"]) == (0, "no signal")
    get(client, "/log/sent/sms/", 400, error_api="maybe")


def test_resend_only_what_failed_and_count_attempts(client: FlaskClient) -> None:
    [guid] = send(client, ALICE)
    refused = get(client, "/resend/", 409, guid=guid)
    assert refused["result"]["error_code"] == "not_resendable"
    client.post("/sandbox/fail", data={**KEY, "guid": guid})
    assert get(client, "/log/sent/sms/", error_mobile="1")["result"]["sms"][0]["guid_message"] == guid
    assert get(client, "/resend/", guid=guid) == {
        "result": {"error": "0", "sms": "resent with successfully", "attempt": 1, "id": guid}
    }
    assert get(client, "/log/sent/sms/", error_mobile="1")["result"]["sms"] == []
    client.post("/sandbox/fail", data={**KEY, "guid": guid})
    assert get(client, "/resend/", guid=guid)["result"]["attempt"] == 2
    assert get(client, "/resend/", 404, guid="nope")["result"]["error_code"] == "unknown_message"
    assert get(client, "/resend/", 400)["result"]["note"] == "guid is missing"


def test_deletesms_by_guid_and_by_day(client: FlaskClient) -> None:
    first, *_ = send(client, f"{ALICE},{BOB},+32470000003")
    assert get(client, "/deletesms/", guid_message=first) == {"result": {"error": None, "count_delete": 1}}
    assert get(client, "/deletesms/", guid_message=first)["result"]["count_delete"] == 0
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    assert get(client, "/deletesms/", date_start=yesterday)["result"]["count_delete"] == 0
    today = f"{local(int(time.time())):%Y-%m-%d}"
    assert get(client, "/deletesms/", date_start=yesterday, date_end=today)["result"]["count_delete"] == 2
    assert get(client, "/log/sent/sms/")["result"]["sms"] == []
    assert get(client, "/deletesms/", 400)["result"]["error_code"] == "missing_parameter"
    assert (
        get(client, "/deletesms/", 400, date_start="23/11/2026")["result"]["error_code"]
        == "invalid_parameter"
    )


def test_log_sent_from_mobile(client: FlaskClient) -> None:
    send(client, ALICE, "one")
    send(client, BOB, "two")
    [pending] = send(client, ALICE, "later", schedule_timestamp=str(int(time.time()) + 3600))
    answer = get(
        client, "/log/sent/frommobile/", period="last_7days", limit="500", sort_by="number", sort_order="ASC"
    )
    result = answer["result"]
    assert (result["error"], result["count"], result["limit"], result["history_limit_days"]) == (
        "0",
        2,
        200,
        7,
    )
    assert (result["sort_by"], result["sort_order"]) == ("number", "ASC")
    assert [s["number"] for s in result["sms"]] == [ALICE, BOB]
    assert set(result["sms"][0]) == {
        "sIdentifiant",
        "number",
        "message",
        "mobile_date_ms",
        "mobile_date_formatted",
        "synchro_time",
    }
    assert [
        s["message"] for s in get(client, "/log/sent/frommobile/", number="0032470000002")["result"]["sms"]
    ] == ["two"]
    assert get(client, "/log/sent/frommobile/", search="TWO")["result"]["count"] == 1
    assert get(client, "/log/sent/frommobile/", period="yesterday")["result"]["count"] == 0
    assert get(client, "/log/sent/frommobile/", limit="1")["result"]["count"] == 1
    assert (
        get(client, "/log/sent/frommobile/", 400, period="last_year")["result"]["error_code"]
        == "invalid_parameter"
    )
    assert (
        get(client, "/log/sent/frommobile/", 400, sort_by="price")["result"]["error_code"]
        == "invalid_parameter"
    )
    assert pending not in str(answer)


# --- received SMS ------------------------------------------------------------------------------------------


def test_getsms_read_flags_and_aliases(client: FlaskClient) -> None:
    first = inbound(client, ALICE, "first")
    second = inbound(client, BOB, "second")
    answer = get(client, "/getsms/")
    jsonschema.validate(answer, schemas.GETSMS)
    rows = answer["result"]["sms"]
    assert [r["guid"] for r in rows] == [second["guid"], first["guid"]]
    assert rows[1]["id"] == first["id"] and rows[1]["number"] == ALICE and rows[1]["message"] == "first"
    assert rows[1]["alias"] is None and rows[1]["sIdentifiantPhone"] == "sandbox-phone-1"
    assert re.fullmatch(r"[0-9a-f]{12}", rows[1]["apikey"]) and "sandbox-key-1" not in str(answer)

    assert get(client, "/getsms/set-read/", guid_message=first["guid"]) == {
        "result": {"error": "0", "guid_message": first["guid"], "read": "1"}
    }
    assert [r["guid"] for r in get(client, "/getsms/", onlyunread="yes")["result"]["sms"]] == [second["guid"]]
    get(client, "/getsms/update/", guid=first["guid"], alias="John Doe")
    assert get(client, "/getsms/")["result"]["sms"][1]["alias"] == "John Doe"
    get(client, "/getsms/update/", guid=first["guid"], alias="")
    assert get(client, "/getsms/")["result"]["sms"][1]["alias"] is None
    assert get(client, "/getsms/update/", 400, guid=first["guid"])["result"]["note"].startswith(
        "alias is missing"
    )
    assert (
        get(client, "/getsms/set-read/", 404, guid_message="nope")["result"]["error_code"]
        == "unknown_message"
    )
    later = get(client, "/getsms/", after_timestamp_unix=str(rows[0]["timestamp_unix"] - 1))["result"]["sms"]
    assert len(later) == 2
    assert get(client, "/getsms/", after_timestamp_unix=str(int(time.time()) + 1))["result"]["sms"] == []
    assert get(client, "/getsms/", sIdentifiantPhone="other-phone")["result"]["sms"] == []


@pytest.mark.parametrize("region", ["BE", None])
def test_conversations_group_national_and_international_forms_with_a_default_region(
    region: str | None, make_app: Callable[..., Flask]
) -> None:
    client = make_app("sandbox", default_region=region).test_client()
    inbound(client, ALICE, "hello?")
    send(client, "0470 00 00 01", "hi Alice")
    send(client, "0032 470 00 00 01", "and again")
    conversations = get(client, "/conversation/sms/list/", origineConversation="received")["conversations"]
    by_national = get(client, "/conversation/sms/list/", origineConversation="sent", numero="0470000001")[
        "conversations"
    ]
    if region == "BE":
        [alice] = conversations
        assert alice["phone_number"] == ALICE
        assert [m["message"] for m in alice["messages"]] == ["hello?", "hi Alice", "and again"]
        assert [m["message"] for m in by_national[0]["messages"]] == ["hello?", "hi Alice", "and again"]
    else:
        # Without a region 0470 00 00 01 could be any country's number: it is a conversation of its own.
        [alice] = conversations
        assert [m["message"] for m in alice["messages"]] == ["hello?", "and again"]
        [national] = by_national
        assert (national["phone_number"], [m["message"] for m in national["messages"]]) == (
            "0470000001",
            ["hi Alice"],
        )


def test_conversations_follow_the_documented_rules(client: FlaskClient) -> None:
    inbound(client, ALICE, "hello?")
    get(client, "/getsms/update/", guid=get(client, "/getsms/")["result"]["sms"][0]["guid"], alias="Alice")
    send(client, "0032470000001", "hi Alice")
    send(client, BOB, "hi Bob")
    received = get(client, "/conversation/sms/list/", origineConversation="received")
    assert (received["success"], received["origineConversation"], received["resume"]) == (True, "received", 0)
    assert received["resume_line_how"] is None
    [alice] = received["conversations"]
    assert (alice["phone_number"], alice["contact_alias"]) == (ALICE, "Alice")
    assert [(m["direction"], m["status"], m["message"]) for m in alice["messages"]] == [
        ("incoming", "received", "hello?"),
        ("outgoing", "sent", "hi Alice"),
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alice["messages"][0]["timestamp_utc"])

    sent = get(client, "/conversation/sms/list/", origineConversation="sent")
    assert [c["phone_number"] for c in sent["conversations"]] == [BOB, ALICE]
    assert [
        c["phone_number"]
        for c in get(client, "/conversation/sms/list/", origineConversation="sent", sort="ASC")[
            "conversations"
        ]
    ] == [ALICE, BOB]
    assert (
        len(get(client, "/conversation/sms/list/", origineConversation="sent", limit="1")["conversations"])
        == 1
    )
    only = get(client, "/conversation/sms/list/", origineConversation="sent", numero="32470000002")
    assert [c["phone_number"] for c in only["conversations"]] == [BOB]
    resumed = get(client, "/conversation/sms/list/", origineConversation="received", resume="1")
    assert resumed["resume_line_how"] == 1
    assert [m["message"] for m in resumed["conversations"][0]["messages"]] == ["hi Alice"]
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    assert (
        get(client, "/conversation/sms/list/", origineConversation="sent", date_from=tomorrow)[
            "conversations"
        ]
        == []
    )
    assert get(client, "/conversation/sms/list/", 400, origineConversation="both") == {
        "success": False,
        "error": "origineConversation='both' is not valid: expected received or sent",
        "error_code": "invalid_parameter",
    }


# --- phones ------------------------------------------------------------------------------------------------


def test_phones_list_update_and_delete(client: FlaskClient) -> None:
    [phone] = get(client, "/gateway/mobile/list/")["result"]["mobiles"]
    assert (phone["sid"], phone["label"], phone["active"]) == ("sandbox-phone-1", "Sandbox phone", "1")
    client.post("/sandbox/devices", data={**KEY, "sid": "office", "label": "Office"})
    assert [m["sid"] for m in get(client, "/gateway/mobile/list/", search="offi")["result"]["mobiles"]] == [
        "office"
    ]
    assert [
        m["sid"] for m in get(client, "/gateway/mobile/list/", sid="sandbox-phone-1")["result"]["mobiles"]
    ] == ["sandbox-phone-1"]
    updated = get(
        client, "/gateway/mobile/update/", sid="office", label="Front desk", phone_number="+3221234567"
    )
    assert (updated["result"]["label"], updated["result"]["phone_number"]) == ("Front desk", "+3221234567")
    assert get(client, "/gateway/mobile/update/", 400, sid="office")["result"]["note"].startswith(
        "label is missing"
    )
    assert (
        get(client, "/gateway/mobile/update/", 404, sid="nope", label="")["result"]["error_code"]
        == "unknown_device"
    )
    assert get(client, "/gateway/mobile/delete/", sid="office")["result"] == {
        "error": "0",
        "sid": "office",
        "deleted": "1",
    }
    get(client, "/gateway/mobile/delete/", sid="sandbox-phone-1")
    no_phone = client.get("/sendsms/", query_string={**KEY, "recipients": ALICE, "message": "Hi"})
    assert no_phone.status_code == 200
    assert no_phone.get_json()["result"]["error_code"] == "no_device_available"


# --- WhatsApp ----------------------------------------------------------------------------------------


def test_whatsapp_endpoints(client: FlaskClient) -> None:
    [guid] = send(client, "191728660", "wa", waonly="yes")
    assert get(client, "/log/sent/sms/")["result"]["sms"] == []
    assert get(client, "/getwa/", 409)["result"]["error_code"] == "sync_required"
    sync = get(client, "/getwa/synchronisation/")
    jsonschema.validate(sync, schemas.WHATSAPP_SYNCHRONISATION)
    assert (sync["error"], sync["messages"]) == ("0", "synchronized")
    assert int(sync["expire_at_unix"]) > time.time()
    inbound(
        client,
        "19176728660",
        "Can you tell me when I will receive my order?",
        channel="whatsapp",
        contact="Bob",
    )
    inbound(client, "19176728660", "(voice)", channel="whatsapp", message_type="audio")
    answer = get(client, "/getwa/")
    jsonschema.validate(answer, schemas.GETWA)
    messages = answer["messages"]
    assert (answer["error"], answer["count"]) == ("0", 2)
    assert [m["message_type"] for m in messages] == ["audio", "text"]
    assert messages[1]["contact"] == "Bob" and messages[1]["number"] == "19176728660"
    assert [m["message"] for m in get(client, "/getwa/", message_type="text")["messages"]] == [
        "Can you tell me when I will receive my order?"
    ]
    assert get(client, "/getwa/", before="1") == {"error": "0", "count": 0, "messages": []}
    assert get(client, "/getwa/active/") == {"error": "0", "statut": "1"}
    assert get(client, "/getwa/active/", statut="x") == {"error": "0", "statut": "0"}
    refused = client.get(
        "/sendsms/", query_string={**KEY, "recipients": "191728660", "message": "x", "sendwa": "1"}
    )
    assert refused.get_json()["result"]["error_code"] == "invalid_parameter"
    assert get(client, "/getwa/active/", statut="1")["statut"] == "1"
    assert get(client, "/whatsapp/checknumber/", recipients="191728661")["whatsapp"] == "1"
    assert get(client, "/whatsapp/checknumber/", recipients="191728660")["whatsapp"] == "0"
    assert get(client, "/resendwa/", 409, guid=guid)["result"]["error_code"] == "not_resendable"
    client.post("/sandbox/fail", data={**KEY, "guid": guid})
    assert get(client, "/resendwa/", guid=guid)["result"]["attempt"] == 1


# --- every endpoint, every way of calling -------------------------------------------------------------------

ENDPOINTS = [
    ("/log/sent/sms/", {}),
    ("/log/sent/frommobile/", {}),
    ("/getsms/", {}),
    ("/conversation/sms/list/", {"origineConversation": "received"}),
    ("/gateway/mobile/list/", {}),
    ("/getwa/synchronisation/", {}),
    ("/getwa/active/", {}),
    ("/whatsapp/checknumber/", {"recipients": "191728661"}),
]


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_every_endpoint_takes_get_post_slash_and_bearer(path: str, params: dict, client: FlaskClient) -> None:
    answers = [
        client.get(path, query_string={**KEY, **params}),
        client.get(path.rstrip("/"), query_string={**KEY, **params}),
        client.post(path, data={**KEY, **params}),
        client.post(path.rstrip("/"), query_string=KEY, data=params),
        client.post(path, data=params, headers={"Authorization": f"Bearer {KEY['apikey']}"}),
    ]
    assert [a.status_code for a in answers] == [200] * 5
    bodies = [a.get_json() for a in answers]
    for body in bodies[1:]:
        if path == "/getwa/synchronisation/":
            body.update(expire_at=bodies[0]["expire_at"], expire_at_unix=bodies[0]["expire_at_unix"])
        if path == "/whatsapp/checknumber/":
            body["checked_at"] = bodies[0]["checked_at"]
    assert all(body == bodies[0] for body in bodies)
    missing = client.get(path, query_string=params)
    assert missing.status_code == 400


def test_sendsms_answers_match_the_public_schema(client: FlaskClient) -> None:
    jsonschema.validate(
        client.get("/sendsms/", query_string={**KEY, "recipients": ALICE, "message": "Hi"}).get_json(),
        schemas.SENDSMS,
    )
    error = client.get("/sendsms/", query_string={"recipients": ALICE, "message": "Hi"}).get_json()
    jsonschema.validate(error, schemas.ERROR)
    jsonschema.validate(error, schemas.SENDSMS)


def test_accounts_are_separate(client: FlaskClient) -> None:
    send(client, ALICE)
    other = client.get("/log/sent/sms/", query_string={"apikey": "someone-else"}).get_json()
    assert other == {"result": {"error": "0", "sms": []}}


def test_a_keyed_sandbox_refuses_other_keys_everywhere(make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox", sandbox_api_keys=frozenset({"sandbox-key-1"})).test_client()
    for path, params in ENDPOINTS:
        answer = client.get(path, query_string={"apikey": "wrong", **params})
        assert answer.status_code == 403, path
    assert client.get("/getsms/", query_string=KEY).status_code == 200
