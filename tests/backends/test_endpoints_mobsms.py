"""The SMSMobileAPI endpoints beyond `/sendsms/`, translated to mobsms: the upstream calls and the answers.

Each test drives the bridge through Flask's test client against the stateful fake mobsms, and checks both
what the bridge asked mobsms (method, path, query, Bearer key) and what it answered, field by field.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.fronts.smsmobileapi.dialect import RESULT_FIELDS
from app.fronts.smsmobileapi.records import local, timearea, utc
from tests import schemas
from tests.harness.fakes.mobsms import FakeMobsms

KEY = "mobsms-key-1"
AUTH = f"Bearer {KEY}"
TO = "+32470000001"

Call = tuple[str, str, list[tuple[str, str]], str]


# --- helpers ------------------------------------------------------------------------------------------


def at(days_ago: int, clock: str = "12:00:00") -> int:
    """Return UNIX seconds for a wall-clock time (in the bridge's time zone) `days_ago` days before today."""
    today = local(int(time.time())).date()
    hour, minute, second = (int(part) for part in clock.split(":"))
    wall = datetime.combine(today - timedelta(days=days_ago), clock_time(hour, minute, second))
    return int(wall.astimezone().timestamp())


def day(ts: int) -> str:
    """Return the local date of `ts`, as the dialect's date parameters are written."""
    return f"{local(ts):%Y-%m-%d}"


def local_unix(ts: int) -> int:
    """Return the local wall-clock time at `ts` read as UTC (the vendor's `timestamp` fields)."""
    offset = local(ts).utcoffset()
    return ts + (int(offset.total_seconds()) if offset else 0)


def page(direction: str, number: int, auth: str = AUTH) -> Call:
    """The call that reads one page of mobsms's message history."""
    return ("GET", "/api/sms", [("direction", direction), ("page", str(number))], auth)


def show(ident: str, auth: str = AUTH) -> Call:
    """The call that reads one message."""
    return ("GET", f"/api/sms/{ident}", [], auth)


def delete(ident: str) -> Call:
    """The call that deletes one message."""
    return ("DELETE", f"/api/sms/{ident}", [], AUTH)


def calls(fake: FakeMobsms) -> list[Call]:
    """Return what the bridge asked mobsms: method, path, query and Authorization, in order."""
    return [(r.method, r.path, r.query, r.headers.get("authorization", "")) for r in fake.received]


def get(client: FlaskClient, path: str, **params: str):
    """GET `path` with the key as apikey in the query string."""
    return client.get(path, query_string={"apikey": KEY, **params})


def result_of(response, status: int = 200) -> dict:
    """Return `result` from a JSON answer with this status."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.content_type == "application/json"
    return response.get_json()["result"]


def assert_error(response, status: int, error: int, code: str, note: str | None = None) -> str:
    """Check a dialect error answer field by field (`note` exactly, when given); return its note."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    document = response.get_json()
    result = document["result"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["datetime"])
    stamp = datetime.fromisoformat(result["datetime"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(result["datetimeLocal"]) == stamp
    core = {"error", "error_code", "sent", "id", "note", "datetime", "datetimeLocal"}
    assert {name: result[name] for name in core} == {
        "error": error,
        "error_code": code,
        "sent": "0",
        "id": "",
        "note": result["note"] if note is None else note,
        "datetime": result["datetime"],
        "datetimeLocal": result["datetimeLocal"],
    }
    # Beyond those, only fields of a send result, which legacy clients read on failures too.
    assert set(result) - core <= set(RESULT_FIELDS)
    assert document == {"result": result, "error": error, "message": result["note"]}
    jsonschema.validate(document, schemas.ERROR)
    jsonschema.validate(document, schemas.SENDSMS)
    assert KEY not in response.get_data(as_text=True)
    return result["note"]


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    """A bridge on the mobsms backend."""
    return make_app("mobsms").test_client()


# --- /log/sent/sms/ -----------------------------------------------------------------------------------


def sent_row(
    stored: dict, queued: int, *, sent: bool, error_api: str = "", erreur: str = "", device: str = "5"
) -> dict:
    """The log entry of an outbound message created at `queued` (sent a second later when `sent`)."""
    sent_at = queued + 1 if sent else None
    return {
        "sIdentifiantPhone": device,
        "port": 0,
        "date_add": f"{local(queued):%Y-%m-%d}",
        "hour_add": f"{local(queued):%H:%M:%S}",
        "timestamp": local_unix(queued),
        "send_from_mobile": 1 if sent else 0,
        "send_from_mobile_date": f"{local(sent_at):%Y-%m-%d}" if sent_at else "",
        "send_from_mobile_heure": f"{local(sent_at):%H:%M:%S}" if sent_at else "",
        "send_from_mobile_timestamp": local_unix(sent_at) if sent_at else None,
        "recipients": stored["recipient_number"],
        "sms": stored["message"],
        "error_api": error_api,
        "send_from_mobile_erreur": erreur,
        "guid_message": stored["message_id"],
        "timearea": timearea(queued),
        "date_add_server": f"{utc(queued):%Y-%m-%d}",
        "hour_add_server": f"{utc(queued):%H:%M:%S}",
        "timestamp_server": queued,
        "send_from_mobile_date_server": f"{utc(sent_at):%Y-%m-%d}" if sent_at else "",
        "send_from_mobile_heure_server": f"{utc(sent_at):%H:%M:%S}" if sent_at else "",
    }


@pytest.fixture
def sent_log(fake_mobsms: FakeMobsms) -> tuple[int, dict[str, dict]]:
    """Six outbound messages, one a minute from t0, in every state, and an inbound one among them."""
    t0 = at(2, "09:30:15")
    add = fake_mobsms.add_outbound
    messages = {
        "delivered": add("+32470000001", "Delivered text", "delivered", created_at=t0),
        "sent": add("+32470000002", "Sent text", "sent", created_at=t0 + 60),
        "pending": add("+32470000003", "Pending text", "pending", created_at=t0 + 120, device_id=None),
        "failed": add(
            "+32470000004",
            "Failed text",
            "failed",
            created_at=t0 + 180,
            error_message="RESULT_ERROR_NO_SERVICE",
        ),
        "cancelled": add("+32470000005", "Cancelled text", "cancelled", created_at=t0 + 240),
        "failed_silently": add("+32470000006", "Another failed text", "failed", created_at=t0 + 300),
        "inbound": fake_mobsms.add_inbound("+32470000007", "Incoming text", created_at=t0 + 30),
    }
    return t0, messages


def test_log_sent_sms_maps_every_field_of_outbound_messages_newest_first(
    client: FlaskClient, fake_mobsms: FakeMobsms, sent_log: tuple[int, dict[str, dict]]
) -> None:
    t0, m = sent_log
    response = get(client, "/log/sent/sms/")

    assert calls(fake_mobsms) == [page("outbound", 1)]
    assert response.get_json() == {
        "result": {
            "error": "0",
            "sms": [
                sent_row(m["failed_silently"], t0 + 300, sent=False, erreur="failed"),
                sent_row(m["cancelled"], t0 + 240, sent=False, error_api="cancelled"),
                sent_row(m["failed"], t0 + 180, sent=False, erreur="RESULT_ERROR_NO_SERVICE"),
                sent_row(m["pending"], t0 + 120, sent=False, device=""),
                sent_row(m["sent"], t0 + 60, sent=True),
                sent_row(m["delivered"], t0, sent=True),
            ],
        }
    }
    assert response.status_code == 200


def test_log_sent_sms_follows_every_page(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    fake_mobsms.per_page = 2
    t0 = at(1)
    outbound = [fake_mobsms.add_outbound(f"+3247000000{i}", f"m{i}", created_at=t0 + i) for i in range(5)]
    fake_mobsms.add_inbound(TO, "never listed", created_at=t0 + 10)

    result = result_of(get(client, "/log/sent/sms/"))

    assert calls(fake_mobsms) == [page("outbound", 1), page("outbound", 2), page("outbound", 3)]
    assert [s["guid_message"] for s in result["sms"]] == [m["message_id"] for m in reversed(outbound)]
    assert [s["sms"] for s in result["sms"]] == ["m4", "m3", "m2", "m1", "m0"]


def test_log_sent_sms_stops_at_the_page_cap(make_app: Callable[..., Flask], fake_mobsms: FakeMobsms) -> None:
    fake_mobsms.per_page = 2
    t0 = at(1)
    outbound = [fake_mobsms.add_outbound(f"+3247000000{i}", f"m{i}", created_at=t0 + i) for i in range(5)]

    result = result_of(get(make_app("mobsms", mobsms_max_pages=2).test_client(), "/log/sent/sms/"))

    assert calls(fake_mobsms) == [page("outbound", 1), page("outbound", 2)]
    assert [s["guid_message"] for s in result["sms"]] == [m["message_id"] for m in outbound[:0:-1]]


def test_log_sent_sms_by_guid_reads_that_one_message(
    client: FlaskClient, fake_mobsms: FakeMobsms, sent_log: tuple[int, dict[str, dict]]
) -> None:
    t0, m = sent_log
    guid = m["failed"]["message_id"]
    response = get(client, "/log/sent/sms/", guid_message=guid)
    assert calls(fake_mobsms) == [show(guid)]
    assert response.get_json() == {
        "result": {
            "error": "0",
            "sms": [sent_row(m["failed"], t0 + 180, sent=False, erreur="RESULT_ERROR_NO_SERVICE")],
        }
    }

    for unknown in ("no-such-guid", m["inbound"]["message_id"]):
        fake_mobsms.reset()
        assert get(client, "/log/sent/sms/", guid_message=unknown).get_json() == {
            "result": {"error": "0", "sms": []}
        }
        assert calls(fake_mobsms) == [show(unknown)]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"keyword": "+32470000003"}, ["pending"]),
        ({"keyword": "0000004"}, ["failed"]),
        ({"keyword": "SENT TEXT"}, ["sent"]),
        ({"keyword": "failed TEXT"}, ["failed_silently", "failed"]),
        ({"keyword": "nothing like it"}, []),
        ({"error_api": "1"}, ["cancelled"]),
        ({"error_mobile": "1"}, ["failed_silently", "failed"]),
        (
            {"error_api": "0", "error_mobile": "0"},
            ["failed_silently", "cancelled", "failed", "pending", "sent", "delivered"],
        ),
        ({"before": "+120"}, ["sent", "delivered"]),
        ({"before": "+121"}, ["pending", "sent", "delivered"]),
        ({"before": "guid:pending"}, ["sent", "delivered"]),
        ({"before": "guid:delivered"}, []),
        ({"before": "no-such-guid"}, []),
        ({"error_mobile": "1", "keyword": "another"}, ["failed_silently"]),
    ],
)
def test_log_sent_sms_filters(
    filters: dict[str, str],
    expected: list[str],
    client: FlaskClient,
    fake_mobsms: FakeMobsms,
    sent_log: tuple[int, dict[str, dict]],
) -> None:
    t0, m = sent_log
    params = dict(filters)
    if params.get("before", "").startswith("+"):
        params["before"] = str(t0 + int(params["before"]))
    elif params.get("before", "").startswith("guid:"):
        params["before"] = m[params["before"].removeprefix("guid:")]["message_id"]

    result = result_of(get(client, "/log/sent/sms/", **params))

    assert [s["guid_message"] for s in result["sms"]] == [m[name]["message_id"] for name in expected]
    assert calls(fake_mobsms) == [page("outbound", 1)]


# --- /getsms/ and its read flags and aliases ----------------------------------------------------------


def received_row(stored: dict, ts: int, apikey: str, alias: str | None = None) -> dict:
    """The getsms entry of an inbound message created at `ts`."""
    return {
        "id": stored["id"],
        "sIdentifiantPhone": "5",
        "date": f"{utc(ts):%Y-%m-%d}",
        "hour": f"{utc(ts):%H:%M:%S}",
        "timestamp_unix": ts,
        "time_received": f"{local(ts):%Y%m%d%H%M%S}000",
        "indice": str(stored["id"]),
        "message": stored["message"],
        "number": stored["sender_number"],
        "guid": stored["message_id"],
        "alias": alias,
        "apikey": apikey,
    }


def test_getsms_lists_inbound_messages_newest_first_field_by_field(
    client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    t1, t2 = at(3, "08:05:09"), at(1, "23:59:58")
    first = fake_mobsms.add_inbound("+32470000001", "First, with é and 😀", created_at=t1)
    fake_mobsms.add_outbound("+32470000002", "never listed", created_at=t1 + 5)
    second = fake_mobsms.add_inbound("10001", "Second", created_at=t2)

    response = get(client, "/getsms/")

    assert calls(fake_mobsms) == [page("inbound", 1)]
    document = response.get_json()
    apikey = document["result"]["sms"][0]["apikey"]
    assert re.fullmatch(r"[0-9a-f]{12}", apikey)
    assert KEY not in response.get_data(as_text=True)
    assert document == {
        "result": {"error": "", "sms": [received_row(second, t2, apikey), received_row(first, t1, apikey)]}
    }
    jsonschema.validate(document, schemas.GETSMS)


def test_getsms_after_timestamp_unix(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    t0 = at(1)
    old = fake_mobsms.add_inbound(TO, "old", created_at=t0)
    new = fake_mobsms.add_inbound(TO, "new", created_at=t0 + 1)

    def guids(after: int) -> list[str]:
        return [s["guid"] for s in result_of(get(client, "/getsms/", after_timestamp_unix=str(after)))["sms"]]

    assert guids(t0 - 1) == [new["message_id"], old["message_id"]]
    assert guids(t0) == [new["message_id"]]
    assert guids(t0 + 1) == []


def test_getsms_by_phone(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    on_5 = fake_mobsms.add_inbound(TO, "on the Pixel", created_at=at(1))
    on_6 = fake_mobsms.add_inbound(TO, "on another phone", created_at=at(1, "13:00:00"), device_id=6)

    def guids(phone: str) -> list[str]:
        return [s["guid"] for s in result_of(get(client, "/getsms/", sIdentifiantPhone=phone))["sms"]]

    assert guids("5") == [on_5["message_id"]]
    assert guids("6") == [on_6["message_id"]]
    assert guids("7") == []
    assert guids("") == [on_6["message_id"], on_5["message_id"]]


def test_set_read_then_onlyunread(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    t0 = at(1)
    old = fake_mobsms.add_inbound(TO, "old", created_at=t0)
    new = fake_mobsms.add_inbound(TO, "new", created_at=t0 + 1)
    guid = new["message_id"]

    response = get(client, "/getsms/set-read/", guid_message=guid)
    assert calls(fake_mobsms) == [show(guid)]
    assert result_of(response) == {"error": "0", "guid_message": guid, "read": "1"}

    unread = result_of(get(client, "/getsms/", onlyunread="yes"))["sms"]
    assert [s["guid"] for s in unread] == [old["message_id"]]
    everything = result_of(get(client, "/getsms/"))["sms"]
    assert [s["guid"] for s in everything] == [guid, old["message_id"]]


def test_set_read_of_an_unknown_or_outbound_message_is_a_404(
    client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    outbound = fake_mobsms.add_outbound(TO, "sent, not received", created_at=at(1))
    for guid in ("no-such-guid", outbound["message_id"]):
        fake_mobsms.reset()
        response = get(client, "/getsms/set-read/", guid_message=guid)
        assert_error(response, 404, 16, "unknown_message", f"no received SMS has the guid {guid!r}")
        assert calls(fake_mobsms) == [show(guid)]
    fake_mobsms.reset()
    assert_error(get(client, "/getsms/set-read/"), 400, 10, "missing_parameter", "guid_message is missing")
    assert calls(fake_mobsms) == []


def test_alias_set_shown_in_getsms_and_conversations_then_cleared(
    client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    message = fake_mobsms.add_inbound(TO, "Hello", created_at=at(1))
    guid = message["message_id"]

    response = get(client, "/getsms/update/", guid=guid, alias="John")
    assert calls(fake_mobsms) == [show(guid)]
    assert result_of(response) == {"error": "0", "guid": guid, "alias": "John"}
    [entry] = result_of(get(client, "/getsms/"))["sms"]
    assert entry["alias"] == "John"
    listed = get(client, "/conversation/sms/list/", origineConversation="received").get_json()
    assert [c["contact_alias"] for c in listed["conversations"]] == ["John"]

    fake_mobsms.reset()
    cleared = get(client, "/getsms/update/", guid=guid, alias="")
    assert calls(fake_mobsms) == [show(guid)]
    assert result_of(cleared) == {"error": "0", "guid": guid, "alias": None}
    [entry] = result_of(get(client, "/getsms/"))["sms"]
    assert entry["alias"] is None
    listed = get(client, "/conversation/sms/list/", origineConversation="received").get_json()
    assert [c["contact_alias"] for c in listed["conversations"]] == [None]


def test_alias_refusals(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    outbound = fake_mobsms.add_outbound(TO, "sent", created_at=at(1))
    inbound = fake_mobsms.add_inbound(TO, "received", created_at=at(1))
    for guid in ("no-such-guid", outbound["message_id"]):
        response = get(client, "/getsms/update/", guid=guid, alias="John")
        assert_error(response, 404, 16, "unknown_message", f"no received SMS has the guid {guid!r}")
    fake_mobsms.reset()
    no_alias = get(client, "/getsms/update/", guid=inbound["message_id"])
    assert_error(no_alias, 400, 10, "missing_parameter", "alias is missing: give alias= (empty clears it)")
    assert_error(
        get(client, "/getsms/update/", alias="John"), 400, 10, "missing_parameter", "guid is missing"
    )
    assert calls(fake_mobsms) == []


def test_read_flags_and_aliases_persist_across_app_instances(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    t0 = at(1)
    old = fake_mobsms.add_inbound(TO, "old", created_at=t0)
    new = fake_mobsms.add_inbound("+32470000002", "new", created_at=t0 + 1)
    first = make_app("mobsms", data_dir=tmp_path).test_client()
    result_of(get(first, "/getsms/set-read/", guid_message=new["message_id"]))
    result_of(get(first, "/getsms/update/", guid=old["message_id"], alias="Jane"))

    second = make_app("mobsms", data_dir=tmp_path).test_client()
    unread = result_of(get(second, "/getsms/", onlyunread="yes"))["sms"]
    assert [(s["guid"], s["alias"]) for s in unread] == [(old["message_id"], "Jane")]
    listed = get(second, "/conversation/sms/list/", origineConversation="received").get_json()
    assert [(c["phone_number"], c["contact_alias"]) for c in listed["conversations"]] == [
        ("+32470000002", None),
        (TO, "Jane"),
    ]


@pytest.mark.parametrize("field", ["id", "guid"])
def test_a_200_from_set_read_and_update_takes_effect(
    field: str, client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    # getsms shows both a numeric `id` and a `guid`; mobsms finds a message by either, so the bridge
    # must not answer success while filing the flag under a name getsms never looks up.
    fake_mobsms.add_inbound(TO, "Hello", created_at=at(1))
    [entry] = result_of(get(client, "/getsms/"))["sms"]
    ident = str(entry[field])

    read = get(client, "/getsms/set-read/", guid_message=ident)
    alias = get(client, "/getsms/update/", guid=ident, alias="John")

    if read.status_code == 200:
        assert result_of(get(client, "/getsms/", onlyunread="yes"))["sms"] == []
    else:
        assert_error(read, 404, 16, "unknown_message")
    if alias.status_code == 200:
        assert [s["alias"] for s in result_of(get(client, "/getsms/"))["sms"]] == ["John"]
    else:
        assert_error(alias, 404, 16, "unknown_message")


# --- /resend/ -----------------------------------------------------------------------------------------


def test_resend_a_failed_message_counts_attempts_and_refuses_until_the_copy_fails(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    client = make_app("mobsms", data_dir=tmp_path).test_client()
    failed = fake_mobsms.add_outbound(
        "+32470000004", "Ticket 42 is ready", "failed", created_at=at(1), error_message="NO_SERVICE"
    )
    guid = failed["message_id"]

    first = get(client, "/resend/", guid=guid)
    [copy] = fake_mobsms.queued
    assert calls(fake_mobsms) == [show(guid), ("POST", "/api/sms", [], AUTH)]
    assert fake_mobsms.received[-1].json == {
        "message": "Ticket 42 is ready",
        "recipient_number": "+32470000004",
    }
    assert first.status_code == 200
    assert first.get_json() == {
        "result": {"error": "0", "sms": "resent with successfully", "attempt": 1, "id": copy["message_id"]}
    }

    # The copy is still pending: nothing is posted.
    fake_mobsms.reset()
    again = get(client, "/resend/", guid=guid)
    assert_error(
        again,
        409,
        18,
        "not_resendable",
        f"the message {guid} is not in an error state (pending); it is not resent",
    )
    assert calls(fake_mobsms) == [show(guid), show(copy["message_id"])]

    # Once the copy fails too, a second attempt goes out, counted even by a new app on the same data.
    fake_mobsms.set_status(copy["message_id"], "failed")
    fake_mobsms.reset()
    client = make_app("mobsms", data_dir=tmp_path).test_client()
    second = get(client, "/resend/", guid=guid)
    [_, second_copy] = fake_mobsms.queued
    assert calls(fake_mobsms) == [show(guid), show(copy["message_id"]), ("POST", "/api/sms", [], AUTH)]
    assert fake_mobsms.received[-1].json == {
        "message": "Ticket 42 is ready",
        "recipient_number": "+32470000004",
    }
    assert result_of(second) == {
        "error": "0",
        "sms": "resent with successfully",
        "attempt": 2,
        "id": second_copy["message_id"],
    }


@pytest.mark.parametrize("status", ["delivered", "sent", "pending"])
def test_resend_refuses_a_message_not_in_error(
    status: str, client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    message = fake_mobsms.add_outbound(TO, "fine", status, created_at=at(1))
    guid = message["message_id"]
    response = get(client, "/resend/", guid=guid)
    assert_error(
        response,
        409,
        18,
        "not_resendable",
        f"the message {guid} is not in an error state ({status}); it is not resent",
    )
    assert calls(fake_mobsms) == [show(guid)]
    assert fake_mobsms.queued == []


def test_resend_of_an_unknown_or_received_message_is_a_404(
    client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    inbound = fake_mobsms.add_inbound(TO, "received", created_at=at(1))
    for guid in ("no-such-guid", inbound["message_id"]):
        fake_mobsms.reset()
        response = get(client, "/resend/", guid=guid)
        assert_error(response, 404, 16, "unknown_message", f"no sent message has the guid {guid!r}")
        assert calls(fake_mobsms) == [show(guid)]
    assert fake_mobsms.queued == []


def test_resend_without_a_guid_is_a_400(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    assert_error(get(client, "/resend/"), 400, 10, "missing_parameter", "guid is missing")
    assert_error(get(client, "/resend/", guid=""), 400, 10, "missing_parameter", "guid is missing")
    assert calls(fake_mobsms) == []


# --- /deletesms/ --------------------------------------------------------------------------------------


def test_deletesms_by_guid(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    keep = fake_mobsms.add_outbound(TO, "keep", created_at=at(1))
    gone = fake_mobsms.add_outbound(TO, "gone", created_at=at(1, "13:00:00"))
    guid = gone["message_id"]

    response = get(client, "/deletesms/", guid_message=guid)

    assert calls(fake_mobsms) == [show(guid), delete(guid)]
    assert response.status_code == 200
    assert response.get_json() == {"result": {"error": None, "count_delete": 1}}
    assert [m["message_id"] for m in fake_mobsms.messages] == [keep["message_id"]]


def test_deletesms_of_an_unknown_or_received_guid_deletes_nothing(
    client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    inbound = fake_mobsms.add_inbound(TO, "received", created_at=at(1))
    for guid in ("no-such-guid", inbound["message_id"]):
        fake_mobsms.reset()
        response = get(client, "/deletesms/", guid_message=guid)
        assert calls(fake_mobsms) == [show(guid)]
        assert response.get_json() == {"result": {"error": None, "count_delete": 0}}
    assert len(fake_mobsms.messages) == 1


@pytest.fixture
def days(fake_mobsms: FakeMobsms) -> dict[str, dict]:
    """Outbound messages at the edges of the days 4, 3 and 2 days ago (local time)."""
    add = fake_mobsms.add_outbound
    return {
        "day5": add(TO, "day 5", created_at=at(5)),
        "day4_last_second": add(TO, "day 4", created_at=at(4, "23:59:59")),
        "day3_first_second": add(TO, "day 3 a", "failed", created_at=at(3, "00:00:00")),
        "day3_noon": add(TO, "day 3 b", "pending", created_at=at(3)),
        "day3_last_second": add(TO, "day 3 c", created_at=at(3, "23:59:59")),
        "day2_first_second": add(TO, "day 2", created_at=at(2, "00:00:00")),
    }


@pytest.mark.parametrize(
    ("params", "deleted"),
    [
        ({"date_start": 3}, ["day3_last_second", "day3_noon", "day3_first_second"]),
        (
            {"date_start": 4, "date_end": 3},
            ["day3_last_second", "day3_noon", "day3_first_second", "day4_last_second"],
        ),
        ({"date_start": 2, "date_end": 2}, ["day2_first_second"]),
        ({"date_start": 9, "date_end": 6}, []),
    ],
)
def test_deletesms_by_day_and_by_range(
    params: dict[str, int],
    deleted: list[str],
    client: FlaskClient,
    fake_mobsms: FakeMobsms,
    days: dict[str, dict],
) -> None:
    inbound = fake_mobsms.add_inbound(TO, "received, not in the sent log", created_at=at(3))
    query = {name: day(at(days_ago)) for name, days_ago in params.items()}

    response = get(client, "/deletesms/", **query)

    ids = [days[name]["message_id"] for name in deleted]
    assert calls(fake_mobsms) == [page("outbound", 1), *(delete(i) for i in ids)]
    assert response.get_json() == {"result": {"error": None, "count_delete": len(ids)}}
    remaining = {m["message_id"] for m in fake_mobsms.messages}
    assert remaining == {m["message_id"] for m in days.values()} - set(ids) | {inbound["message_id"]}


def test_deletesms_without_a_guid_or_a_date_is_a_400_that_asks_nothing_upstream(
    client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    fake_mobsms.add_outbound(TO, "kept", created_at=at(1))
    response = get(client, "/deletesms/")
    assert_error(
        response,
        400,
        10,
        "missing_parameter",
        "guid_message or date_start is missing: say which messages to delete",
    )
    assert len(fake_mobsms.messages) == 1
    # A call refused for a missing parameter should not read the whole log first (up to 20 pages).
    assert calls(fake_mobsms) == []


# --- /conversation/sms/list/ --------------------------------------------------------------------------


def incoming(stored: dict, ts: int) -> dict:
    return {
        "direction": "incoming",
        "message_id": stored["message_id"],
        "date": f"{local(ts):%Y-%m-%d %H:%M:%S}",
        "timestamp_utc": f"{utc(ts):%Y-%m-%dT%H:%M:%SZ}",
        "message": stored["message"],
        "status": "received",
        "mobile_sid": "5",
    }


def outgoing(stored: dict, ts: int) -> dict:
    return {
        "direction": "outgoing",
        "message_id": stored["message_id"],
        "date": f"{local(ts):%Y-%m-%d %H:%M:%S}",
        "timestamp_utc": f"{utc(ts):%Y-%m-%dT%H:%M:%SZ}",
        "message": stored["message"],
        "status": "sent",
        "mobile_sid": "5",
    }


@pytest.fixture
def chats(fake_mobsms: FakeMobsms) -> dict[str, dict]:
    """Three numbers: A written three ways (received, answered, received), B only sent to, C only received."""
    t = {
        "a_in_1": at(5, "09:00:00"),
        "a_out": at(4, "10:00:00"),
        "a_in_2": at(3, "11:00:00"),
        "b_out": at(2, "12:00:00"),
        "c_in": at(1, "13:00:00"),
    }
    stored = {
        "a_in_1": fake_mobsms.add_inbound("+32470000001", "Hello?", created_at=t["a_in_1"]),
        "a_out": fake_mobsms.add_outbound(
            "0032470000001", "How can I help?", "failed", created_at=t["a_out"]
        ),
        "a_in_2": fake_mobsms.add_inbound("32470000001", "Price list please", created_at=t["a_in_2"]),
        "b_out": fake_mobsms.add_outbound("+32470000002", "Your code is 1234", created_at=t["b_out"]),
        "c_in": fake_mobsms.add_inbound("+32470000003", "STOP", created_at=t["c_in"]),
    }
    line = {name: (incoming if "_in" in name else outgoing)(stored[name], t[name]) for name in t}
    # A is shown as its first message (in the range asked for) writes it; its lines are in time order.
    a_lines = [line["a_in_1"], line["a_out"], line["a_in_2"]]
    return {
        "stored": stored,
        "time": t,
        "line": line,
        "A": {"phone_number": "+32470000001", "contact_alias": None, "messages": a_lines},
        "B": {"phone_number": "+32470000002", "contact_alias": None, "messages": [line["b_out"]]},
        "C": {"phone_number": "+32470000003", "contact_alias": None, "messages": [line["c_in"]]},
    }


def conversation_answer(
    origin: str, conversations: list[dict], resume: int = 0, lines: int | None = None
) -> dict:
    return {
        "success": True,
        "origineConversation": origin,
        "resume": resume,
        "resume_line_how": lines,
        "conversations": conversations,
    }


def test_conversations_from_received_and_from_sent(
    client: FlaskClient, fake_mobsms: FakeMobsms, chats: dict
) -> None:
    received = get(client, "/conversation/sms/list/", origineConversation="received")
    assert calls(fake_mobsms) == [page("outbound", 1), page("inbound", 1)]
    assert received.status_code == 200
    assert received.get_json() == conversation_answer("received", [chats["C"], chats["A"]])

    sent = get(client, "/conversation/sms/list/", origineConversation="sent")
    assert sent.get_json() == conversation_answer("sent", [chats["B"], chats["A"]])


def test_conversation_shows_the_alias_of_the_number(
    client: FlaskClient, fake_mobsms: FakeMobsms, chats: dict
) -> None:
    result_of(get(client, "/getsms/update/", guid=chats["stored"]["a_in_1"]["message_id"], alias="John Doe"))
    answer = get(client, "/conversation/sms/list/", origineConversation="sent").get_json()
    assert answer == conversation_answer("sent", [chats["B"], {**chats["A"], "contact_alias": "John Doe"}])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"origineConversation": "received", "numero": "+32470000001"}, ["A"]),
        ({"origineConversation": "received", "numero": "0032 470 00 00 01"}, ["A"]),
        ({"origineConversation": "sent", "numero": "32470000001"}, ["A"]),
        ({"origineConversation": "received", "numero": "+32470000002"}, []),
        ({"origineConversation": "sent", "numero": "+32470000002"}, ["B"]),
        ({"origineConversation": "received", "limit": "1"}, ["C"]),
        ({"origineConversation": "received", "sort": "ASC"}, ["A", "C"]),
        ({"origineConversation": "sent", "sort": "asc", "limit": "1"}, ["A"]),
        ({"origineConversation": "received", "sort": "DESC", "limit": "20"}, ["C", "A"]),
    ],
)
def test_conversation_numero_limit_and_sort(
    params: dict[str, str], expected: list[str], client: FlaskClient, fake_mobsms: FakeMobsms, chats: dict
) -> None:
    answer = get(client, "/conversation/sms/list/", **params).get_json()
    assert answer == conversation_answer(params["origineConversation"], [chats[name] for name in expected])


def test_conversation_resume_keeps_the_latest_lines(
    client: FlaskClient, fake_mobsms: FakeMobsms, chats: dict
) -> None:
    answer = get(
        client, "/conversation/sms/list/", origineConversation="received", resume="1", resume_line_how="2"
    )
    a = {**chats["A"], "messages": chats["A"]["messages"][-2:]}
    assert answer.get_json() == conversation_answer("received", [chats["C"], a], resume=1, lines=2)

    one = get(client, "/conversation/sms/list/", origineConversation="received", resume="1").get_json()
    a = {**chats["A"], "messages": chats["A"]["messages"][-1:]}
    assert one == conversation_answer("received", [chats["C"], a], resume=1, lines=1)


def test_conversation_date_from_and_date_to(
    client: FlaskClient, fake_mobsms: FakeMobsms, chats: dict
) -> None:
    line = chats["line"]
    answer = get(
        client,
        "/conversation/sms/list/",
        origineConversation="received",
        date_from=day(at(4)),
        date_to=day(at(2)),
    ).get_json()
    a = {"phone_number": "32470000001", "contact_alias": None, "messages": [line["a_out"], line["a_in_2"]]}
    assert answer == conversation_answer("received", [a])

    # Full date-times cut inside a day; only A's outbound reply falls between them.
    answer = get(
        client,
        "/conversation/sms/list/",
        origineConversation="sent",
        date_from=f"{local(chats['time']['a_out'] - 1):%Y-%m-%dT%H:%M:%S}",
        date_to=f"{local(chats['time']['a_out'] + 1):%Y-%m-%dT%H:%M:%S}",
    ).get_json()
    a = {"phone_number": "0032470000001", "contact_alias": None, "messages": [line["a_out"]]}
    assert answer == conversation_answer("sent", [a])


def test_conversation_parameter_errors_ask_nothing_upstream(
    client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    missing = get(client, "/conversation/sms/list/")
    assert missing.status_code == 400
    assert missing.get_json() == {
        "success": False,
        "error": "origineConversation is missing: give received or sent",
        "error_code": "missing_parameter",
    }
    invalid = get(client, "/conversation/sms/list/", origineConversation="both")
    assert invalid.status_code == 400
    assert invalid.get_json() == {
        "success": False,
        "error": "origineConversation='both' is not valid: expected received or sent",
        "error_code": "invalid_parameter",
    }
    assert calls(fake_mobsms) == []


# --- /gateway/mobile/list/ ----------------------------------------------------------------------------

# A phone's sid is mobsms's numeric device id, the one its messages name (not the hardware device_id).
PIXEL = {"sid": "5", "label": "Pixel 7", "phone_number": "+998901234567"}
GALAXY = {"sid": "6", "label": "Galaxy S21", "phone_number": "+32470999999"}


def mobile(device: dict, active: str) -> dict:
    return {**device, "date": "", "battery": "", "version": "", "active": active}


@pytest.fixture
def two_devices(fake_mobsms: FakeMobsms) -> None:
    fake_mobsms.devices = [
        *fake_mobsms.devices,
        {
            "id": 6,
            "device_id": "def456",
            "device_name": "Galaxy S21",
            "phone_number": "+32470999999",
            "is_active": False,
            "is_default": False,
            "sms_rate": 100,
            "send_delay_seconds": 0,
            "default_sim_slot": 1,
        },
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [mobile(PIXEL, "1"), mobile(GALAXY, "0")]),
        ({"sid": "6"}, [mobile(GALAXY, "0")]),
        ({"sid": "def456"}, []),
        ({"search": "PIXEL"}, [mobile(PIXEL, "1")]),
        ({"search": "+3247"}, [mobile(GALAXY, "0")]),
        ({"search": "s21"}, [mobile(GALAXY, "0")]),
        ({"search": "nowhere"}, []),
        ({"sid": "5", "search": "galaxy"}, []),
    ],
)
def test_gateway_mobile_list(
    params: dict[str, str],
    expected: list[dict],
    client: FlaskClient,
    fake_mobsms: FakeMobsms,
    two_devices: None,
) -> None:
    response = get(client, "/gateway/mobile/list/", **params)
    assert calls(fake_mobsms) == [("GET", "/api/devices", [], AUTH)]
    assert response.status_code == 200
    assert response.get_json() == {"result": {"error": "0", "mobiles": expected}}


def test_gateway_mobile_search_looks_only_in_what_the_answer_shows(
    client: FlaskClient, fake_mobsms: FakeMobsms, two_devices: None
) -> None:
    # No field of either phone contains "one" (their last-seen date is unknown, shown as "").
    response = get(client, "/gateway/mobile/list/", search="one")
    assert response.get_json() == {"result": {"error": "0", "mobiles": []}}


# --- what mobsms cannot do ----------------------------------------------------------------------------

UNSUPPORTED = {
    "/log/sent/frommobile/": ({"period": "last_7days"}, "the log of SMS sent from the phone itself"),
    "/gateway/mobile/update/": ({"sid": "abc123", "label": "Office"}, "renaming a phone"),
    "/gateway/mobile/delete/": ({"sid": "abc123"}, "removing a phone"),
    "/resendwa/": ({"guid": "c319d3b35e8f8712cde20dae39ac3c19f86eda25"}, "WhatsApp"),
    "/getwa/synchronisation/": ({}, "WhatsApp"),
    "/getwa/": ({"before": "1774041814"}, "WhatsApp"),
    "/getwa/active/": ({"statut": "1"}, "WhatsApp"),
    "/whatsapp/checknumber/": ({"recipients": TO}, "WhatsApp"),
}


@pytest.mark.parametrize("path", UNSUPPORTED)
def test_what_mobsms_cannot_do_is_refused_without_asking_it(
    path: str, client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    params, feature = UNSUPPORTED[path]
    note = assert_error(get(client, path, **params), 400, 14, "unsupported_by_backend")
    assert note.startswith("the mobsms backend does not support ")
    assert feature in note
    assert calls(fake_mobsms) == []


# --- every endpoint, every way of calling -------------------------------------------------------------


def _inbound_guid(fake: FakeMobsms) -> str:
    return fake.add_inbound(TO, "received", created_at=at(1))["message_id"]


def _outbound_guid(fake: FakeMobsms, status: str = "delivered") -> str:
    return fake.add_outbound(TO, "sent", status, created_at=at(1))["message_id"]


#: path -> what a good call needs, from the fake's state
TRANSLATED: dict[str, Callable[[FakeMobsms], dict[str, str]]] = {
    "/log/sent/sms/": lambda fake: {},
    "/getsms/": lambda fake: {},
    "/getsms/set-read/": lambda fake: {"guid_message": _inbound_guid(fake)},
    "/getsms/update/": lambda fake: {"guid": _inbound_guid(fake), "alias": "Bob"},
    "/resend/": lambda fake: {"guid": _outbound_guid(fake, "failed")},
    "/deletesms/": lambda fake: {"guid_message": _outbound_guid(fake)},
    "/conversation/sms/list/": lambda fake: {"origineConversation": "received"},
    "/gateway/mobile/list/": lambda fake: {},
}
ENDPOINTS: dict[str, Callable[[FakeMobsms], dict[str, str]]] = {
    **TRANSLATED,
    **{path: (lambda fake, params=params: dict(params)) for path, (params, _) in UNSUPPORTED.items()},
}
STYLES = [
    (method, slash, how)
    for method in ("GET", "POST")
    for slash in (True, False)
    for how in ("apikey", "bearer")
]


def call(client: FlaskClient, method: str, path: str, params: dict[str, str], how: str, key: str = KEY):
    """Call `path` by GET (query) or POST (form), with the key as apikey, as a Bearer token, or without."""
    params, headers = dict(params), {}
    if how == "apikey":
        params["apikey"] = key
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    if method == "GET":
        return client.get(path, query_string=params, headers=headers)
    return client.post(path, data=params, headers=headers)


@pytest.mark.parametrize("style", STYLES, ids=lambda s: f"{s[0]}-{'slash' if s[1] else 'noslash'}-{s[2]}")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_endpoint_answers_every_way_of_calling(
    path: str, style: tuple[str, bool, str], client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    method, slash, how = style
    params = ENDPOINTS[path](fake_mobsms)
    fake_mobsms.reset()

    response = call(client, method, path if slash else path.rstrip("/"), params, how)

    if path in UNSUPPORTED:
        assert_error(response, 400, 14, "unsupported_by_backend")
        assert calls(fake_mobsms) == []
        return
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    document = response.get_json()
    if path == "/conversation/sms/list/":
        assert document["success"] is True
    else:
        assert document["result"]["error"] in ("0", "", None)
        assert "error_code" not in document["result"]
    assert calls(fake_mobsms)
    assert {r.headers["authorization"] for r in fake_mobsms.received} == {AUTH}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_endpoint_without_a_key_is_a_400_and_asks_nothing_upstream(
    path: str, method: str, client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    params = ENDPOINTS[path](fake_mobsms)
    fake_mobsms.reset()

    response = call(client, method, path, params, "none")

    note = "apikey is missing: pass apikey=YOUR_API_KEY or the header Authorization: Bearer TOKEN"
    if path == "/conversation/sms/list/":
        assert response.status_code == 400
        assert response.get_json() == {"success": False, "error": note, "error_code": "missing_parameter"}
    else:
        assert_error(response, 400, 10, "missing_parameter", note)
    assert calls(fake_mobsms) == []


@pytest.mark.parametrize("path", TRANSLATED)
def test_every_translated_endpoint_with_a_wrong_key_is_a_403(
    path: str, client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    params = TRANSLATED[path](fake_mobsms)
    fake_mobsms.reset()

    response = call(client, "GET", path, params, "apikey", key="wrong-key")

    note = "mobsms refused the API key: Unauthenticated."
    if path == "/conversation/sms/list/":
        assert response.status_code == 403
        assert response.get_json() == {"success": False, "error": note, "error_code": "key_refused"}
    else:
        assert_error(response, 403, 20, "key_refused", note)
    assert "wrong-key" not in response.get_data(as_text=True)
    [asked] = calls(fake_mobsms)
    assert asked[3] == "Bearer wrong-key"
    assert fake_mobsms.queued == []


@pytest.mark.parametrize("path", UNSUPPORTED)
def test_unsupported_endpoints_with_a_wrong_key_still_ask_nothing_upstream(
    path: str, client: FlaskClient, fake_mobsms: FakeMobsms
) -> None:
    # The bridge cannot check a key without calling mobsms, and these calls never reach it.
    response = call(client, "GET", path, UNSUPPORTED[path][0], "apikey", key="wrong-key")
    assert_error(response, 400, 14, "unsupported_by_backend")
    assert "wrong-key" not in response.get_data(as_text=True)
    assert calls(fake_mobsms) == []
