"""Who may call and with what upstream credential: passthrough, and managed clients from a clients file."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from lxml import etree

from app.access.resolution import hash_key
from app.config import ConfigError
from tests.harness.clients import (
    KEY_A,
    KEY_B,
    KEY_S,
    MOBSMS_CLIENT,
    MOBSMS_KEY,
    SANDBOX_CLIENT,
    VENDOR_CLIENT,
    VENDOR_KEY,
    clients_toml,
    write_clients,
)
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.soap import envelope, fault_of

TO = "+32470000001"
SOAP_NS = "urn:smsbridge:sendsms"


# --- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def clients_path(tmp_path: Path) -> Path:
    return tmp_path / "clients.toml"


def managed_app(
    make_app: Callable[..., Flask],
    path: Path,
    clients: dict[str, dict],
    backend: str = "sandbox",
    **overrides: object,
) -> Flask:
    """Build a managed bridge whose clients file at `path` holds `clients`."""
    write_clients(path, clients)
    return make_app(backend, clients_file=str(path), **overrides)


def send(client, key: str, message: str = "Hi"):
    return client.get("/sendsms/", query_string={"apikey": key, "recipients": TO, "message": message})


def soap_send(client, key: str):
    return client.post("/sendsms/soap/", data=envelope(key=key), content_type="text/xml")


def soap_result(response) -> etree._Element:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return etree.fromstring(response.get_data())


def assert_refused(response, code: str = "key_refused", status: int = 403, number: int = 20) -> str:
    """Check a dialect error answer; return its note."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    document = response.get_json()
    result = document["result"]
    assert (result["error"], result["error_code"], result["sent"], result["id"]) == (number, code, "0", "")
    assert (document["error"], document["message"]) == (number, result["note"])
    return result["note"]


def assert_no_secret(response, *secrets: str) -> None:
    body = response.get_data(as_text=True)
    headers = str(response.headers)
    for secret in secrets:
        assert secret not in body
        assert secret not in headers


def sandbox_rows(flask_app: Flask, account_key: str) -> list:
    return flask_app.extensions["smsbridge"].backend_for("sandbox").sent(account_key)


# --- passthrough (no clients file) ----------------------------------------------------------------------


def test_passthrough_sends_the_callers_own_key_upstream(
    make_app: Callable[..., Flask], fake_mobsms: FakeMobsms
) -> None:
    flask_app = make_app("mobsms")
    assert not flask_app.extensions["smsbridge"].access.managed
    response = send(flask_app.test_client(), MOBSMS_KEY)
    assert response.status_code == 200
    [got] = fake_mobsms.received
    assert (got.method, got.path) == ("POST", "/api/sms")
    assert got.headers["authorization"] == f"Bearer {MOBSMS_KEY}"


# --- managed: a mobsms client -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["query", "form", "bearer"])
def test_a_mobsms_client_calls_with_its_own_key_and_mobsms_gets_the_upstream_key(
    how: str, make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    client = managed_app(make_app, clients_path, {"shop-a": MOBSMS_CLIENT}).test_client()
    params = {"recipients": TO, "message": "Hi"}
    if how == "query":
        response = client.get("/sendsms/", query_string={"apikey": KEY_A, **params})
    elif how == "form":
        response = client.post("/sendsms/", data={"apikey": KEY_A, **params})
    else:
        response = client.post("/sendsms/", data=params, headers={"Authorization": f"Bearer {KEY_A}"})

    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()["result"]
    assert (result["error"], result["sent"]) == (0, "1")
    assert result["id"] == fake_mobsms.queued[0]["message_id"]
    [got] = fake_mobsms.received
    assert (got.method, got.path, got.query) == ("POST", "/api/sms", [])
    assert got.headers["authorization"] == f"Bearer {MOBSMS_KEY}"
    assert got.json == {"message": "Hi", "recipient_number": TO}
    assert KEY_A.encode() not in got.body
    assert_no_secret(response, MOBSMS_KEY, KEY_A)


def test_a_mobsms_client_over_soap_gets_the_upstream_key_sent(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    client = managed_app(make_app, clients_path, {"shop-a": MOBSMS_CLIENT}).test_client()
    response = soap_send(client, KEY_A)
    root = soap_result(response)
    assert root.findtext(f".//{{{SOAP_NS}}}sent") == "1"
    assert root.findtext(f".//{{{SOAP_NS}}}id") == fake_mobsms.queued[0]["message_id"]
    [got] = fake_mobsms.received
    assert (got.method, got.path) == ("POST", "/api/sms")
    assert got.headers["authorization"] == f"Bearer {MOBSMS_KEY}"
    assert got.json == {"message": "Hi", "recipient_number": TO}
    assert_no_secret(response, MOBSMS_KEY, KEY_A)


def test_upstream_key_env_names_the_variable_holding_the_upstream_key(
    make_app: Callable[..., Flask],
    clients_path: Path,
    fake_mobsms: FakeMobsms,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_A_MOBSMS_KEY", MOBSMS_KEY)
    spec = {"key_sha256": hash_key(KEY_A), "backend": "mobsms", "upstream_key_env": "SHOP_A_MOBSMS_KEY"}
    client = managed_app(make_app, clients_path, {"shop-a": spec}).test_client()
    response = send(client, KEY_A)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert fake_mobsms.received[0].headers["authorization"] == f"Bearer {MOBSMS_KEY}"
    assert_no_secret(response, MOBSMS_KEY, KEY_A)


def test_a_refused_upstream_key_is_key_refused_without_showing_either_key(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    spec = {**MOBSMS_CLIENT, "upstream_key": "mobsms-key-revoked"}
    client = managed_app(make_app, clients_path, {"shop-a": spec}).test_client()
    response = send(client, KEY_A)
    assert_refused(response)
    assert fake_mobsms.received[0].headers["authorization"] == "Bearer mobsms-key-revoked"
    assert_no_secret(response, "mobsms-key-revoked", KEY_A)


def test_history_of_a_mobsms_client_is_read_with_the_upstream_key(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    fake_mobsms.add_inbound("+32470000009", "Yes", key=MOBSMS_KEY)
    client = managed_app(make_app, clients_path, {"shop-a": MOBSMS_CLIENT}).test_client()
    response = client.get("/getsms/", query_string={"apikey": KEY_A})
    assert response.status_code == 200, response.get_data(as_text=True)
    [sms] = response.get_json()["result"]["sms"]
    assert (sms["number"], sms["message"]) == ("+32470000009", "Yes")
    assert [(r.method, r.path, r.query, r.headers["authorization"]) for r in fake_mobsms.received] == [
        ("GET", "/api/sms", [("direction", "inbound"), ("page", "1")], f"Bearer {MOBSMS_KEY}")
    ]
    assert_no_secret(response, MOBSMS_KEY, KEY_A)


# --- managed: an smsmobileapi client ----------------------------------------------------------------------


def test_an_smsmobileapi_client_key_in_the_query_is_replaced_in_the_query(
    make_app: Callable[..., Flask], clients_path: Path, fake_vendor: FakeSmsMobileApi
) -> None:
    client = managed_app(make_app, clients_path, {"shop-b": VENDOR_CLIENT}).test_client()
    response = client.get(
        "/sendsms/", query_string=[("apikey", KEY_B), ("recipients", TO), ("message", "Hi"), ("from", "odoo")]
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"]["vendor_field_added_tomorrow"] == {"kept": True}
    [got] = fake_vendor.received
    assert (got.method, got.path, got.body) == ("GET", "/sendsms/", b"")
    assert got.query == [("apikey", VENDOR_KEY), ("recipients", TO), ("message", "Hi"), ("from", "odoo")]
    assert "authorization" not in got.headers
    assert_no_secret(response, VENDOR_KEY, KEY_B)


def test_an_smsmobileapi_client_on_another_endpoint_is_passed_through_with_the_upstream_key(
    make_app: Callable[..., Flask], clients_path: Path, fake_vendor: FakeSmsMobileApi
) -> None:
    client = managed_app(make_app, clients_path, {"shop-b": VENDOR_CLIENT}).test_client()
    client.get("/getsms/", query_string=[("apikey", KEY_B), ("onlyunread", "yes")])
    client.get("/call/missed/list/", query_string=[("apikey", KEY_B)])
    assert [(r.method, r.path, r.query, r.body) for r in fake_vendor.received] == [
        ("GET", "/getsms/", [("apikey", VENDOR_KEY), ("onlyunread", "yes")], b""),
        ("GET", "/call/missed/list/", [("apikey", VENDOR_KEY)], b""),
    ]
    assert all("authorization" not in r.headers for r in fake_vendor.received)


def test_an_smsmobileapi_client_with_a_bearer_key_sends_the_upstream_key_as_apikey(
    make_app: Callable[..., Flask], clients_path: Path, fake_vendor: FakeSmsMobileApi
) -> None:
    """A Bearer header upstream would be a vendor OAuth token; the upstream credential is an API key."""
    client = managed_app(make_app, clients_path, {"shop-b": VENDOR_CLIENT}).test_client()
    response = client.post(
        "/sendsms", data={"recipients": TO, "message": "Hi"}, headers={"Authorization": f"Bearer {KEY_B}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    client.get("/getsms/", headers={"Authorization": f"Bearer {KEY_B}"})
    sent, read = fake_vendor.received
    assert (sent.method, sent.path, sent.query) == ("POST", "/sendsms", [("apikey", VENDOR_KEY)])
    assert sent.form == [("recipients", TO), ("message", "Hi")]
    assert (read.method, read.path, read.query) == ("GET", "/getsms/", [("apikey", VENDOR_KEY)])
    assert "authorization" not in sent.headers
    assert "authorization" not in read.headers
    assert_no_secret(response, VENDOR_KEY, KEY_B)


def test_an_smsmobileapi_client_key_in_a_form_is_replaced_in_the_form(
    make_app: Callable[..., Flask], clients_path: Path, fake_vendor: FakeSmsMobileApi
) -> None:
    client = managed_app(make_app, clients_path, {"shop-b": VENDOR_CLIENT}).test_client()
    response = client.post(
        "/sendsms/",
        query_string={"from": "odoo"},
        data={"recipients": TO, "apikey": KEY_B, "message": "Hi"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    [got] = fake_vendor.received
    assert (got.method, got.path, got.query) == ("POST", "/sendsms/", [("from", "odoo")])
    assert got.form == [("apikey", VENDOR_KEY), ("recipients", TO), ("message", "Hi")]
    assert "authorization" not in got.headers
    assert_no_secret(response, VENDOR_KEY, KEY_B)


def test_an_smsmobileapi_client_key_in_a_json_body_never_reaches_the_vendor(
    make_app: Callable[..., Flask], clients_path: Path, fake_vendor: FakeSmsMobileApi
) -> None:
    """The vendor's axios example posts JSON; a managed client's key in it must become the upstream key."""
    client = managed_app(make_app, clients_path, {"shop-b": VENDOR_CLIENT}).test_client()
    response = client.post("/sendsms/", json={"apikey": KEY_B, "recipients": TO, "message": "Hi"})
    [got] = fake_vendor.received
    assert KEY_B.encode() not in got.body
    assert KEY_B not in str(got.query)
    assert got.json["apikey"] == VENDOR_KEY or dict(got.query).get("apikey") == VENDOR_KEY
    assert response.status_code == 200, response.get_data(as_text=True)


def test_an_smsmobileapi_client_over_soap_sends_the_upstream_key_in_the_form(
    make_app: Callable[..., Flask], clients_path: Path, fake_vendor: FakeSmsMobileApi
) -> None:
    client = managed_app(make_app, clients_path, {"shop-b": VENDOR_CLIENT}).test_client()
    response = soap_send(client, KEY_B)
    assert soap_result(response).findtext(f".//{{{SOAP_NS}}}sent") == "1"
    [got] = fake_vendor.received
    assert (got.method, got.path, got.query) == ("POST", "/sendsms/", [])
    assert got.form == [("apikey", VENDOR_KEY), ("recipients", TO), ("message", "Hi")]
    assert_no_secret(response, VENDOR_KEY, KEY_B)


# --- managed: several clients, unknown keys ---------------------------------------------------------------


def test_clients_with_different_backends_each_reach_their_own(
    make_app: Callable[..., Flask],
    clients_path: Path,
    fake_mobsms: FakeMobsms,
    fake_vendor: FakeSmsMobileApi,
) -> None:
    # The bridge's own default backend (mobsms here) does not matter to managed clients.
    flask_app = managed_app(
        make_app,
        clients_path,
        {"shop-s": SANDBOX_CLIENT, "shop-a": MOBSMS_CLIENT, "shop-b": VENDOR_CLIENT},
        backend="mobsms",
    )
    client = flask_app.test_client()

    to_sandbox = send(client, KEY_S, "to the sandbox")
    assert to_sandbox.status_code == 200, to_sandbox.get_data(as_text=True)
    assert fake_mobsms.received == []
    assert fake_vendor.received == []
    # A sandbox client without an upstream key has a sandbox account of its own.
    [row] = sandbox_rows(flask_app, "client:shop-s")
    assert (row["guid"], row["recipient"], row["message"]) == (
        to_sandbox.get_json()["result"]["id"],
        TO,
        "to the sandbox",
    )
    assert "sandbox" in to_sandbox.get_json()["result"]["note"]

    to_mobsms = send(client, KEY_A, "to mobsms")
    assert to_mobsms.status_code == 200, to_mobsms.get_data(as_text=True)
    [got] = fake_mobsms.received
    assert got.headers["authorization"] == f"Bearer {MOBSMS_KEY}"
    assert got.json == {"message": "to mobsms", "recipient_number": TO}
    assert fake_vendor.received == []

    to_vendor = send(client, KEY_B, "to the vendor")
    assert to_vendor.status_code == 200, to_vendor.get_data(as_text=True)
    [got] = fake_vendor.received
    assert got.query == [("apikey", VENDOR_KEY), ("recipients", TO), ("message", "to the vendor")]
    assert len(fake_mobsms.received) == 1
    assert len(sandbox_rows(flask_app, "client:shop-s")) == 1


def test_sandbox_clients_have_separate_accounts(make_app: Callable[..., Flask], clients_path: Path) -> None:
    other = {"key_sha256": [hash_key("client-key-T")], "backend": "sandbox"}
    flask_app = managed_app(make_app, clients_path, {"shop-s": SANDBOX_CLIENT, "shop-t": other})
    client = flask_app.test_client()
    assert send(client, KEY_S, "from s").status_code == 200
    assert [row["message"] for row in sandbox_rows(flask_app, "client:shop-s")] == ["from s"]
    assert sandbox_rows(flask_app, "client:shop-t") == []
    # Nothing is filed under the client's own key.
    assert sandbox_rows(flask_app, KEY_S) == []


UNKNOWN_KEY_CALLS = {
    "GET /sendsms/": lambda c: send(c, "not-a-client-key"),
    "POST form": lambda c: c.post(
        "/sendsms/", data={"apikey": "not-a-client-key", "recipients": TO, "message": "Hi"}
    ),
    "Bearer": lambda c: c.post(
        "/sendsms/",
        data={"recipients": TO, "message": "Hi"},
        headers={"Authorization": "Bearer not-a-client-key"},
    ),
    "the upstream key itself": lambda c: send(c, MOBSMS_KEY),
    "another client's hash": lambda c: send(c, hash_key(KEY_A)),
    "GET /getsms/": lambda c: c.get("/getsms/", query_string={"apikey": "not-a-client-key"}),
    "GET /log/sent/sms/": lambda c: c.get("/log/sent/sms/", query_string={"apikey": VENDOR_KEY}),
    "a vendor-only path": lambda c: c.get("/call/list/", query_string={"apikey": "not-a-client-key"}),
}


@pytest.mark.parametrize("call", UNKNOWN_KEY_CALLS)
def test_an_unknown_key_is_refused_and_nothing_goes_upstream(
    call: str,
    make_app: Callable[..., Flask],
    clients_path: Path,
    fake_mobsms: FakeMobsms,
    fake_vendor: FakeSmsMobileApi,
) -> None:
    client = managed_app(
        make_app, clients_path, {"shop-a": MOBSMS_CLIENT, "shop-b": VENDOR_CLIENT}, backend="smsmobileapi"
    ).test_client()
    response = UNKNOWN_KEY_CALLS[call](client)
    note = assert_refused(response)
    assert note == "the API key is not one of this bridge's client keys"
    assert fake_mobsms.received == []
    assert fake_vendor.received == []


def test_an_unknown_key_over_soap_is_a_key_refused_fault_and_nothing_goes_upstream(
    make_app: Callable[..., Flask],
    clients_path: Path,
    fake_mobsms: FakeMobsms,
    fake_vendor: FakeSmsMobileApi,
) -> None:
    client = managed_app(
        make_app, clients_path, {"shop-a": MOBSMS_CLIENT, "shop-b": VENDOR_CLIENT}, backend="mobsms"
    ).test_client()
    for key in ("not-a-client-key", MOBSMS_KEY):
        code, string = fault_of(soap_send(client, key))
        assert code == "soap11env:Client.KeyRefused"
        assert string == "the API key is not one of this bridge's client keys"
    assert fake_mobsms.received == []
    assert fake_vendor.received == []


def test_a_call_without_a_key_is_missing_parameter_and_nothing_goes_upstream(
    make_app: Callable[..., Flask], clients_path: Path, fake_vendor: FakeSmsMobileApi
) -> None:
    client = managed_app(make_app, clients_path, {"shop-b": VENDOR_CLIENT}).test_client()
    for response in (
        client.get("/sendsms/", query_string={"recipients": TO, "message": "Hi"}),
        client.get("/getsms/"),
        client.get("/call/list/"),
    ):
        assert_refused(response, "missing_parameter", 400, 10)
    assert fake_vendor.received == []


# --- the sandbox console ---------------------------------------------------------------------------------


def test_the_sandbox_console_refuses_a_client_whose_backend_is_not_the_sandbox(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    flask_app = managed_app(make_app, clients_path, {"shop-a": MOBSMS_CLIENT, "shop-s": SANDBOX_CLIENT})
    client = flask_app.test_client()
    inbound = {"number": "+32470000009", "message": "Yes"}

    refused = client.post("/sandbox/inbound", data={"apikey": KEY_A, **inbound})
    note = assert_refused(refused, "not_allowed", 403, 21)
    assert note == "the sandbox console is for sandbox clients; this key's backend is mobsms"
    assert_no_secret(refused, MOBSMS_KEY, KEY_A)
    assert fake_mobsms.received == []

    allowed = client.post("/sandbox/inbound", data={"apikey": KEY_S, **inbound})
    assert allowed.status_code == 200, allowed.get_data(as_text=True)
    [sms] = client.get("/getsms/", query_string={"apikey": KEY_S}).get_json()["result"]["sms"]
    assert (sms["number"], sms["message"]) == ("+32470000009", "Yes")

    unknown = client.post("/sandbox/inbound", data={"apikey": "not-a-client-key", **inbound})
    assert_refused(unknown)


# --- reloading the clients file --------------------------------------------------------------------------


@pytest.mark.usefixtures("reload_at_once")
def test_a_key_added_to_the_file_works_without_a_restart(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    client = managed_app(make_app, clients_path, {"shop-s": SANDBOX_CLIENT}).test_client()
    assert_refused(send(client, KEY_A))

    write_clients(clients_path, {"shop-s": SANDBOX_CLIENT, "shop-a": MOBSMS_CLIENT})

    assert send(client, KEY_A).status_code == 200
    assert fake_mobsms.received[0].headers["authorization"] == f"Bearer {MOBSMS_KEY}"
    assert send(client, KEY_S).status_code == 200


@pytest.mark.usefixtures("reload_at_once")
def test_a_key_is_rotated_without_a_restart(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    new_key = "client-key-A2"
    client = managed_app(make_app, clients_path, {"shop-a": MOBSMS_CLIENT}).test_client()
    assert send(client, KEY_A).status_code == 200
    assert_refused(send(client, new_key))

    # During the rotation both keys work, for the same client and upstream key.
    rotating = {**MOBSMS_CLIENT, "key_sha256": [hash_key(KEY_A), hash_key(new_key)]}
    write_clients(clients_path, {"shop-a": rotating})
    assert send(client, KEY_A).status_code == 200
    assert send(client, new_key).status_code == 200
    # Then only the new one.
    write_clients(clients_path, {"shop-a": {**MOBSMS_CLIENT, "key_sha256": [hash_key(new_key)]}})
    assert_refused(send(client, KEY_A))
    assert send(client, new_key).status_code == 200
    assert [r.headers["authorization"] for r in fake_mobsms.received] == [f"Bearer {MOBSMS_KEY}"] * 4


@pytest.mark.usefixtures("reload_at_once")
def test_a_client_removed_from_the_file_is_revoked_without_a_restart(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    client = managed_app(
        make_app, clients_path, {"shop-a": MOBSMS_CLIENT, "shop-s": SANDBOX_CLIENT}
    ).test_client()
    assert send(client, KEY_A).status_code == 200
    assert soap_send(client, KEY_A).status_code == 200
    fake_mobsms.reset()

    write_clients(clients_path, {"shop-s": SANDBOX_CLIENT})

    assert_refused(send(client, KEY_A))
    code, _ = fault_of(soap_send(client, KEY_A))
    assert code == "soap11env:Client.KeyRefused"
    assert fake_mobsms.received == []
    assert send(client, KEY_S).status_code == 200


@pytest.mark.usefixtures("reload_at_once")
def test_a_changed_upstream_key_is_used_without_a_restart(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    client = managed_app(
        make_app, clients_path, {"shop-a": {**MOBSMS_CLIENT, "upstream_key": "mobsms-key-old"}}
    ).test_client()
    assert_refused(send(client, KEY_A))
    write_clients(clients_path, {"shop-a": MOBSMS_CLIENT})
    assert send(client, KEY_A).status_code == 200
    assert [r.headers["authorization"] for r in fake_mobsms.received] == [
        "Bearer mobsms-key-old",
        f"Bearer {MOBSMS_KEY}",
    ]


def test_the_file_is_looked_at_no_more_than_once_a_second(
    make_app: Callable[..., Flask], clients_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flask_app = managed_app(make_app, clients_path, {"shop-s": SANDBOX_CLIENT})
    client = flask_app.test_client()
    assert send(client, KEY_S).status_code == 200  # the first call looks at the file
    now = [time.monotonic()]
    access = flask_app.extensions["smsbridge"].access
    monkeypatch.setattr(access, "clock", lambda: now[0])
    access._checked = now[0]

    write_clients(clients_path, {})
    now[0] += 0.5
    assert send(client, KEY_S).status_code == 200
    now[0] += 0.6
    assert_refused(send(client, KEY_S))


@pytest.mark.usefixtures("reload_at_once")
def test_an_invalid_file_on_reload_keeps_the_previous_clients_and_logs_why(
    make_app: Callable[..., Flask],
    clients_path: Path,
    fake_mobsms: FakeMobsms,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = managed_app(make_app, clients_path, {"shop-a": MOBSMS_CLIENT}).test_client()
    assert send(client, KEY_A).status_code == 200

    caplog.set_level(logging.INFO, logger="app.access.resolution")
    write_clients(clients_path, '[clients.shop-a]\nkey_sha256 = "not closed\n')
    assert send(client, KEY_A).status_code == 200
    assert send(client, "client-key-new").status_code == 403

    errors = [r for r in caplog.records if r.name == "app.access.resolution" and r.levelno == logging.ERROR]
    assert errors
    message = errors[0].getMessage()
    assert message.startswith(f"clients file {clients_path} is invalid (")
    assert "is not valid TOML" in message
    assert message.endswith("; keeping the clients loaded before")

    # A valid file afterwards is taken.
    new = {"key_sha256": [hash_key("client-key-new")], "backend": "sandbox"}
    write_clients(clients_path, {"shop-a": MOBSMS_CLIENT, "shop-new": new})
    assert send(client, "client-key-new").status_code == 200
    assert [r.headers["authorization"] for r in fake_mobsms.received] == [f"Bearer {MOBSMS_KEY}"] * 2
    assert f"clients file {clients_path} reloaded: 2 clients" in caplog.messages


@pytest.mark.usefixtures("reload_at_once")
def test_a_semantically_invalid_file_on_reload_keeps_the_previous_clients(
    make_app: Callable[..., Flask], clients_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = managed_app(make_app, clients_path, {"shop-s": SANDBOX_CLIENT}).test_client()
    caplog.set_level(logging.INFO, logger="app.access.resolution")
    # Valid TOML, but the new client has no upstream key: neither change is taken.
    new = {"key_sha256": [hash_key(KEY_A)], "backend": "mobsms"}
    write_clients(clients_path, {"shop-a": new})
    assert send(client, KEY_S).status_code == 200
    assert_refused(send(client, KEY_A))
    errors = {r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    assert errors == {
        f"clients file {clients_path} is invalid ({clients_path}: [clients.shop-a] needs upstream_key "
        "or upstream_key_env: the mobsms credential); keeping the clients loaded before"
    }


@pytest.mark.usefixtures("reload_at_once")
def test_a_clients_file_that_disappears_keeps_the_previous_clients(
    make_app: Callable[..., Flask], clients_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = managed_app(make_app, clients_path, {"shop-s": SANDBOX_CLIENT}).test_client()
    caplog.set_level(logging.INFO, logger="app.access.resolution")
    clients_path.unlink()
    assert send(client, KEY_S).status_code == 200
    errors = {r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    assert errors == {
        f"clients file {clients_path} cannot be read ([Errno 2] No such file or directory: "
        f"{str(clients_path)!r}); keeping the clients loaded before"
    }


# --- invalid files at start-up ---------------------------------------------------------------------------


def start_with(make_app: Callable[..., Flask], path: Path, text: str) -> str:
    """Start a bridge on a clients file holding `text`; return the ConfigError's message."""
    write_clients(path, text)
    with pytest.raises(ConfigError) as caught:
        make_app("sandbox", clients_file=str(path))
    return str(caught.value)


def test_a_missing_clients_file_stops_the_start(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        make_app("sandbox", clients_file=str(path))
    assert str(caught.value) == f"SMSBRIDGE_CLIENTS_FILE={str(path)!r}: no such file"


def test_a_file_that_is_not_toml_stops_the_start(make_app: Callable[..., Flask], clients_path: Path) -> None:
    message = start_with(make_app, clients_path, "[clients.shop\n")
    assert message.startswith(f"SMSBRIDGE_CLIENTS_FILE: {clients_path} is not valid TOML: ")


GOOD = {"key_sha256": [hash_key(KEY_A)], "backend": "mobsms", "upstream_key": MOBSMS_KEY}
INVALID_SPECS = {
    "a hash too short": (
        {"shop": {**GOOD, "key_sha256": ["abc123"]}},
        "[clients.shop] key_sha256 must be one or more SHA-256 hex digests",
    ),
    "a hash that is not hex": (
        {"shop": {**GOOD, "key_sha256": ["z" * 64]}},
        "[clients.shop] key_sha256 must be one or more SHA-256 hex digests",
    ),
    "the key itself instead of its hash": (
        {"shop": {**GOOD, "key_sha256": KEY_A}},
        "[clients.shop] key_sha256 must be one or more SHA-256 hex digests",
    ),
    "no hash": (
        {"shop": {k: v for k, v in GOOD.items() if k != "key_sha256"}},
        "[clients.shop] key_sha256 must be one or more SHA-256 hex digests",
    ),
    "an empty list of hashes": (
        {"shop": {**GOOD, "key_sha256": []}},
        "[clients.shop] key_sha256 must be one or more SHA-256 hex digests",
    ),
    "an unknown backend": (
        {"shop": {**GOOD, "backend": "twilio"}},
        "[clients.shop] backend must be one of sandbox, smsmobileapi, mobsms",
    ),
    "no backend": (
        {"shop": {k: v for k, v in GOOD.items() if k != "backend"}},
        "[clients.shop] backend must be one of sandbox, smsmobileapi, mobsms",
    ),
    "no upstream key for mobsms": (
        {"shop": {k: v for k, v in GOOD.items() if k != "upstream_key"}},
        "[clients.shop] needs upstream_key or upstream_key_env: the mobsms credential",
    ),
    "no upstream key for smsmobileapi": (
        {"shop": {**GOOD, "backend": "smsmobileapi", "upstream_key": ""}},
        "[clients.shop] needs upstream_key or upstream_key_env: the smsmobileapi credential",
    ),
    "an upstream_key_env that is not set": (
        {"shop": {**GOOD, "upstream_key_env": "SMSBRIDGE_TEST_UNSET_VARIABLE"}},
        "[clients.shop] upstream_key_env names SMSBRIDGE_TEST_UNSET_VARIABLE, which is not set",
    ),
    "a bad rate limit": (
        {"shop": {**GOOD, "rate_limit": "lots"}},
        "[clients.shop] rate_limit='lots': expected a rate limit such as '10/minute;500/day'",
    ),
    "a hash shared by two clients": (
        {"shop": GOOD, "other-shop": {**GOOD, "key_sha256": [hash_key("x"), hash_key(KEY_A).upper()]}},
        "[clients.other-shop] shares a key_sha256 with another client",
    ),
}


@pytest.mark.parametrize("case", INVALID_SPECS)
def test_each_invalid_client_spec_stops_the_start_with_a_clear_message(
    case: str, make_app: Callable[..., Flask], clients_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMSBRIDGE_TEST_UNSET_VARIABLE", raising=False)
    clients, said = INVALID_SPECS[case]
    message = start_with(make_app, clients_path, clients_toml(clients))
    assert message == f"SMSBRIDGE_CLIENTS_FILE: {clients_path}: {said}"


def test_a_bad_default_rate_limit_stops_the_start(make_app: Callable[..., Flask], clients_path: Path) -> None:
    message = start_with(make_app, clients_path, clients_toml({"shop": GOOD}, {"rate_limit": "often"}))
    assert message == (
        f"SMSBRIDGE_CLIENTS_FILE: {clients_path}: [defaults] rate_limit='often': "
        "expected a rate limit such as '10/minute;500/day'"
    )


def test_a_client_that_is_not_a_table_stops_the_start(
    make_app: Callable[..., Flask], clients_path: Path
) -> None:
    message = start_with(make_app, clients_path, '[clients]\nshop = "key"\n')
    assert message == f"SMSBRIDGE_CLIENTS_FILE: {clients_path}: [clients.shop] must be a table"


def test_hashes_are_read_whatever_their_case(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    spec = {**MOBSMS_CLIENT, "key_sha256": hash_key(KEY_A).upper()}
    client = managed_app(make_app, clients_path, {"shop-a": spec}).test_client()
    assert send(client, KEY_A).status_code == 200


WRONGLY_TYPED = {
    "key_sha256 as a number": ('key_sha256 = 5\nbackend = "mobsms"\nupstream_key = "k"\n', "key_sha256"),
    "backend as a list": (
        f'key_sha256 = "{hash_key(KEY_A)}"\nbackend = ["mobsms"]\nupstream_key = "k"\n',
        "backend",
    ),
    "upstream_key as a number": (
        f'key_sha256 = "{hash_key(KEY_A)}"\nbackend = "mobsms"\nupstream_key = 12345\n',
        "upstream_key",
    ),
    "upstream_key_env as a number": (
        f'key_sha256 = "{hash_key(KEY_A)}"\nbackend = "mobsms"\nupstream_key_env = 5\n',
        "upstream_key_env",
    ),
}


@pytest.mark.parametrize("case", WRONGLY_TYPED)
def test_a_wrongly_typed_value_stops_the_start_with_a_clear_message(
    case: str, make_app: Callable[..., Flask], clients_path: Path
) -> None:
    body, field = WRONGLY_TYPED[case]
    message = start_with(make_app, clients_path, "[clients.shop]\n" + body)
    assert message.startswith(f"SMSBRIDGE_CLIENTS_FILE: {clients_path}: [clients.shop] {field}")


@pytest.mark.parametrize("text", ['clients = "shop"\n', 'defaults = "often"\n'])
def test_wrongly_typed_sections_stop_the_start_with_a_clear_message(
    text: str, make_app: Callable[..., Flask], clients_path: Path
) -> None:
    message = start_with(make_app, clients_path, text)
    assert message.startswith(f"SMSBRIDGE_CLIENTS_FILE: {clients_path}: ")


@pytest.mark.usefixtures("reload_at_once")
def test_a_wrongly_typed_file_on_reload_keeps_the_previous_clients(
    make_app: Callable[..., Flask], clients_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = managed_app(make_app, clients_path, {"shop-s": SANDBOX_CLIENT}).test_client()
    caplog.set_level(logging.INFO, logger="app.access.resolution")
    write_clients(clients_path, '[clients.shop-s]\nkey_sha256 = 5\nbackend = "sandbox"\n')
    response = send(client, KEY_S)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert any(r.levelno == logging.ERROR and r.name == "app.access.resolution" for r in caplog.records)
