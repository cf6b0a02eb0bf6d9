"""OAuth2 client credentials at POST /oauth2/token (RFC 6749 2.3.1, 4.4, 5.1, 5.2) and its tokens."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeSerializer
from itsdangerous.encoding import base64_decode, base64_encode, bytes_to_int, int_to_bytes
from werkzeug.datastructures import MultiDict

from app.access.resolution import hash_key
from app.access.tokens import TokenSigner
from app.config import ConfigError
from tests.harness.clients import (
    KEY_A,
    KEY_B,
    MOBSMS_CLIENT,
    MOBSMS_KEY,
    SANDBOX_CLIENT,
    VENDOR_KEY,
    write_clients,
)
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.server import Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.oauth import (
    CLIENTS,
    assert_token_refused,
    bearer,
    send_with,
    token_call,
    token_for,
)

TO = "+32470000001"
SECRET_32 = "0123456789abcdef0123456789abcdef"


# --- helpers ------------------------------------------------------------------------------------------


def basic(client_id: str, client_secret: str) -> dict[str, str]:
    """The Authorization header of RFC 6749 2.3.1: each part form-urlencoded, then HTTP Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def assert_oauth_error(response, status: int, error: str, description: str) -> None:
    """Check an RFC 6749 5.2 error answer, exactly."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    assert response.get_json() == {"error": error, "error_description": description}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="smsbridge"'
    else:
        assert "WWW-Authenticate" not in response.headers


@pytest.fixture
def clients_path(tmp_path: Path) -> Path:
    return write_clients(tmp_path / "clients.toml", CLIENTS)


@pytest.fixture
def bridge(make_app: Callable[..., Flask], clients_path: Path) -> Flask:
    """A managed bridge with a mobsms, an smsmobileapi and a sandbox client."""
    return make_app("sandbox", clients_file=str(clients_path))


@pytest.fixture
def client(bridge: Flask) -> FlaskClient:
    return bridge.test_client()


# --- issuing tokens --------------------------------------------------------------------------------------


def assert_token_answer(response, ttl: int = 3600) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    document = response.get_json()
    token = document["access_token"]
    assert document == {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
    assert isinstance(token, str)
    assert token.startswith("sbt2.")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    return token


def test_a_token_for_form_credentials(client: FlaskClient) -> None:
    response = token_call(
        client, {"grant_type": "client_credentials", "client_id": "shop-a", "client_secret": KEY_A}
    )
    token = assert_token_answer(response)
    assert KEY_A not in token
    assert MOBSMS_KEY not in token


def test_a_token_for_http_basic_credentials(client: FlaskClient) -> None:
    response = token_call(client, {"grant_type": "client_credentials"}, basic("shop-a", KEY_A))
    assert_token_answer(response)


def test_http_basic_credentials_are_form_urlencoded_before_base64(
    make_app: Callable[..., Flask], tmp_path: Path, fake_mobsms: FakeMobsms
) -> None:
    """RFC 6749 2.3.1: an id or secret with ':', '+', '%', spaces or non-ASCII survives the encoding."""
    name, secret = "acme shop:1/é", "s3cr:t +/=&%41é"
    path = write_clients(tmp_path / "clients.toml", {name: {**MOBSMS_CLIENT, "key_sha256": hash_key(secret)}})
    client = make_app("sandbox", clients_file=str(path)).test_client()
    token = assert_token_answer(token_call(client, {"grant_type": "client_credentials"}, basic(name, secret)))
    assert send_with(client, token).status_code == 200
    # The same id and secret in the form work too.
    token_for(client, name, secret)
    # Basic is decoded as RFC 6749 says: sent without the form-encoding, '+' would read as a space.
    raw = base64.b64encode(f"{name}:{secret}".encode()).decode()
    assert_oauth_error(
        token_call(client, {"grant_type": "client_credentials"}, {"Authorization": f"Basic {raw}"}),
        401,
        "invalid_client",
        "unknown client or wrong secret",
    )


def test_the_token_lifetime_is_the_configured_one(make_app: Callable[..., Flask], clients_path: Path) -> None:
    client = make_app("sandbox", clients_file=str(clients_path), token_ttl=120).test_client()
    response = token_call(client, {"grant_type": "client_credentials"}, basic("shop-a", KEY_A))
    assert_token_answer(response, ttl=120)


def test_each_client_gets_its_own_token(client: FlaskClient) -> None:
    assert token_for(client, "shop-a", KEY_A) != token_for(client, "shop-b", KEY_B)


# --- errors (RFC 6749 5.2) --------------------------------------------------------------------------------

ERRORS = {
    "no grant_type": (
        {"client_id": "shop-a", "client_secret": KEY_A},
        None,
        (400, "invalid_request", "grant_type is missing"),
    ),
    "an empty grant_type": (
        {"grant_type": "", "client_id": "shop-a", "client_secret": KEY_A},
        None,
        (400, "invalid_request", "grant_type is missing"),
    ),
    "no grant_type, Basic": (
        {},
        ("shop-a", KEY_A),
        (400, "invalid_request", "grant_type is missing"),
    ),
    "grant_type=password": (
        {"grant_type": "password", "username": "shop-a", "password": KEY_A},
        ("shop-a", KEY_A),
        (400, "unsupported_grant_type", "only grant_type=client_credentials is supported"),
    ),
    "grant_type=authorization_code": (
        {"grant_type": "authorization_code", "code": "x", "client_id": "shop-a", "client_secret": KEY_A},
        None,
        (400, "unsupported_grant_type", "only grant_type=client_credentials is supported"),
    ),
    "a wrong secret": (
        {"grant_type": "client_credentials", "client_id": "shop-a", "client_secret": "wrong-secret"},
        None,
        (401, "invalid_client", "unknown client or wrong secret"),
    ),
    "a wrong secret, Basic": (
        {"grant_type": "client_credentials"},
        ("shop-a", "wrong-secret"),
        (401, "invalid_client", "unknown client or wrong secret"),
    ),
    "an unknown client id": (
        {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": KEY_A},
        None,
        (401, "invalid_client", "unknown client or wrong secret"),
    ),
    "another client's secret": (
        {"grant_type": "client_credentials", "client_id": "shop-a", "client_secret": KEY_B},
        None,
        (401, "invalid_client", "unknown client or wrong secret"),
    ),
    "the upstream key as the secret": (
        {"grant_type": "client_credentials", "client_id": "shop-a", "client_secret": MOBSMS_KEY},
        None,
        (401, "invalid_client", "unknown client or wrong secret"),
    ),
    "no credentials": (
        {"grant_type": "client_credentials"},
        None,
        (401, "invalid_client", "client_id and client_secret are missing"),
    ),
    "no secret": (
        {"grant_type": "client_credentials", "client_id": "shop-a"},
        None,
        (401, "invalid_client", "client_id and client_secret are missing"),
    ),
    "no client id": (
        {"grant_type": "client_credentials", "client_secret": KEY_A},
        None,
        (401, "invalid_client", "client_id and client_secret are missing"),
    ),
    "Basic and form credentials": (
        {"grant_type": "client_credentials", "client_id": "shop-a", "client_secret": KEY_A},
        ("shop-a", KEY_A),
        (400, "invalid_request", "use one way to authenticate: HTTP Basic or the form, not both"),
    ),
    "Basic and a form client_id": (
        {"grant_type": "client_credentials", "client_id": "shop-a"},
        ("shop-a", KEY_A),
        (400, "invalid_request", "use one way to authenticate: HTTP Basic or the form, not both"),
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_rfc_6749_errors(
    case: str, client: FlaskClient, fake_mobsms: FakeMobsms, fake_vendor: FakeSmsMobileApi
) -> None:
    form, credentials, (status, error, description) = ERRORS[case]
    response = token_call(client, form, basic(*credentials) if credentials else None)
    assert_oauth_error(response, status, error, description)
    assert fake_mobsms.received == []
    assert fake_vendor.received == []


def test_a_malformed_basic_header_is_invalid_client(client: FlaskClient) -> None:
    response = token_call(
        client, {"grant_type": "client_credentials"}, {"Authorization": "Basic not base64!"}
    )
    assert_oauth_error(response, 401, "invalid_client", "client_id and client_secret are missing")


# --- using tokens -----------------------------------------------------------------------------------------


def test_a_token_sends_with_the_clients_upstream_key(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    token = token_for(client)
    response = send_with(client, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()["result"]
    assert (result["error"], result["sent"], result["id"]) == (0, "1", fake_mobsms.queued[0]["message_id"])
    [got] = fake_mobsms.received
    assert (got.method, got.path) == ("POST", "/api/sms")
    assert got.headers["authorization"] == f"Bearer {MOBSMS_KEY}"
    assert got.json == {"message": "Hi", "recipient_number": TO}
    body = response.get_data(as_text=True)
    for secret in (token, KEY_A, MOBSMS_KEY):
        assert secret not in body
    # GET, without the trailing slash, works the same.
    response = client.get("/sendsms", query_string={"recipients": TO, "message": "Hi"}, headers=bearer(token))
    assert response.status_code == 200
    assert fake_mobsms.received[-1].headers["authorization"] == f"Bearer {MOBSMS_KEY}"


def test_a_token_reads_received_sms(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    fake_mobsms.add_inbound("+32470000009", "Yes", key=MOBSMS_KEY)
    token = token_for(client)
    response = client.get("/getsms/", headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    [sms] = response.get_json()["result"]["sms"]
    assert (sms["number"], sms["message"]) == ("+32470000009", "Yes")
    assert [(r.method, r.path, r.query, r.headers["authorization"]) for r in fake_mobsms.received] == [
        ("GET", "/api/sms", [("direction", "inbound"), ("page", "1")], f"Bearer {MOBSMS_KEY}")
    ]


def test_a_token_reads_the_sent_log(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    sent = fake_mobsms.add_outbound(TO, "Earlier", key=MOBSMS_KEY)
    token = token_for(client)
    response = client.post("/log/sent/sms/", headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    [sms] = response.get_json()["result"]["sms"]
    assert (sms["guid_message"], sms["recipients"], sms["sms"]) == (sent["message_id"], TO, "Earlier")
    assert [(r.method, r.path, r.query, r.headers["authorization"]) for r in fake_mobsms.received] == [
        ("GET", "/api/sms", [("direction", "outbound"), ("page", "1")], f"Bearer {MOBSMS_KEY}")
    ]


def test_a_token_of_an_smsmobileapi_client_sends_the_upstream_key_as_apikey(
    client: FlaskClient, fake_vendor: FakeSmsMobileApi
) -> None:
    token = token_for(client, "shop-b", KEY_B)
    response = send_with(client, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    client.get("/getsms/", headers=bearer(token))
    sent, read = fake_vendor.received
    assert (sent.method, sent.path, sent.query) == ("POST", "/sendsms/", [("apikey", VENDOR_KEY)])
    assert sent.form == [("recipients", TO), ("message", "Hi")]
    assert (read.method, read.path, read.query) == ("GET", "/getsms/", [("apikey", VENDOR_KEY)])
    assert "authorization" not in sent.headers
    assert "authorization" not in read.headers


def test_a_token_of_a_sandbox_client_uses_its_sandbox_account(bridge: Flask, client: FlaskClient) -> None:
    token = token_for(client, "shop-s", "client-key-S")
    response = send_with(client, token, "from a token")
    assert response.status_code == 200, response.get_data(as_text=True)
    [row] = bridge.extensions["smsbridge"].backend_for("sandbox").sent("client:shop-s")
    assert (row["guid"], row["message"]) == (response.get_json()["result"]["id"], "from a token")


def test_a_token_is_not_a_key(client: FlaskClient, fake_mobsms: FakeMobsms) -> None:
    """A token goes in a Bearer header; as apikey it is no client's key."""
    token = token_for(client)
    response = client.get("/sendsms/", query_string={"apikey": token, "recipients": TO, "message": "Hi"})
    assert response.status_code == 403
    assert response.get_json()["result"]["error_code"] == "key_refused"
    assert fake_mobsms.received == []


def tampered(token: str) -> dict[str, str]:
    """Ways to change a valid token: another client, a later issue time, a broken signature."""
    payload, stamp, signature = token.removeprefix("sbt2.").rsplit(".", 2)
    # The payload's own encoding (base64 JSON, compressed when shorter): no key is involved.
    encoding = URLSafeSerializer(b"unused")
    claims = encoding.load_payload(payload.encode())

    def encode(document: dict) -> str:
        return encoding.dump_payload(document).decode()

    later = base64_encode(int_to_bytes(bytes_to_int(base64_decode(stamp)) + 86400)).decode()
    flipped = "A" if signature[0] != "A" else "B"
    return {
        "another client": f"sbt2.{encode({**claims, 'sub': 'shop-b'})}.{stamp}.{signature}",
        "a later issue time": f"sbt2.{payload}.{later}.{signature}",
        "a changed signature": f"sbt2.{payload}.{stamp}.{flipped}{signature[1:]}",
        "no signature": f"sbt2.{payload}.{stamp}.",
        "only the prefix": "sbt2.",
        "garbage": "sbt2.garbage.garbage.garbage",
    }


@pytest.mark.parametrize(
    "how",
    [
        "another client",
        "a later issue time",
        "a changed signature",
        "no signature",
        "only the prefix",
        "garbage",
    ],
)
def test_a_tampered_token_is_refused(
    how: str, client: FlaskClient, fake_mobsms: FakeMobsms, fake_vendor: FakeSmsMobileApi
) -> None:
    token = token_for(client)
    assert_token_refused(send_with(client, tampered(token)[how]))
    assert_token_refused(client.get("/getsms/", headers=bearer(tampered(token)[how])))
    assert fake_mobsms.received == []
    assert fake_vendor.received == []


def test_an_expired_token_is_refused(
    make_app: Callable[..., Flask], clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    client = make_app("sandbox", clients_file=str(clients_path), token_secret=SECRET_32).test_client()
    key_hash = hash_key(KEY_A)
    expired = TokenSigner(SECRET_32.encode(), 3600, clock=lambda: time.time() - 3601).issue(
        "shop-a", key_hash
    )
    fresh = TokenSigner(SECRET_32.encode(), 3600).issue("shop-a", key_hash)
    assert_token_refused(send_with(client, expired))
    assert_token_refused(client.get("/log/sent/sms/", headers=bearer(expired)))
    assert fake_mobsms.received == []
    assert send_with(client, fresh).status_code == 200


def test_a_token_is_refused_once_its_lifetime_has_passed(
    client: FlaskClient, fake_mobsms: FakeMobsms, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = token_for(client)
    assert send_with(client, token).status_code == 200
    # The token's own timestamp (whole seconds, as itsdangerous signs it), not the clock's after it:
    # a second boundary between issuing and reading the clock would shift the test by a second.
    issued_at = bytes_to_int(base64_decode(token.rsplit(".", 2)[1]))
    signer = client.application.extensions["smsbridge"].tokens
    monkeypatch.setattr(signer, "clock", lambda: issued_at + 3599.9)
    assert send_with(client, token).status_code == 200
    monkeypatch.setattr(signer, "clock", lambda: issued_at + 3600)
    assert_token_refused(send_with(client, token))
    assert len(fake_mobsms.received) == 2


def test_the_signer_accepts_a_token_until_its_expiry() -> None:
    now = [1_000_000.0]
    signer = TokenSigner(b"s" * 32, ttl=60, clock=lambda: now[0])
    token = signer.issue("shop-a", hash_key(KEY_A))
    client, proof = signer.check(token) or ("", "")
    assert client == "shop-a"
    assert signer.proves_key(proof, hash_key(KEY_A))
    assert not signer.proves_key(proof, hash_key(KEY_B))
    now[0] = 1_000_059.9
    assert signer.check(token) == (client, proof)
    now[0] = 1_000_060
    assert signer.check(token) is None
    # Issued a little ahead of this host's clock (another host's), it is accepted; far ahead, not.
    now[0] = 1_000_000 - 5
    assert signer.check(token) == (client, proof)
    now[0] = 1_000_000 - 6
    assert signer.check(token) is None
    now[0] = 1_000_000
    assert TokenSigner(b"t" * 32, ttl=60, clock=lambda: now[0]).check(token) is None


@pytest.mark.usefixtures("reload_at_once")
def test_a_token_dies_with_its_key_and_lives_through_an_added_key(
    client: FlaskClient, clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    old_token = token_for(client)
    # Adding a key (a rotation begins) leaves the token be.
    rotating = {**MOBSMS_CLIENT, "key_sha256": [hash_key(KEY_A), hash_key("client-key-A2")]}
    write_clients(clients_path, {**CLIENTS, "shop-a": rotating})
    assert send_with(client, old_token).status_code == 200
    new_token = token_for(client, "shop-a", "client-key-A2")
    # Removing the old key revokes the tokens issued for it, not the others.
    write_clients(
        clients_path, {**CLIENTS, "shop-a": {**MOBSMS_CLIENT, "key_sha256": [hash_key("client-key-A2")]}}
    )
    assert_token_refused(send_with(client, old_token))
    assert send_with(client, new_token).status_code == 200
    assert_oauth_error(
        token_call(
            client, {"grant_type": "client_credentials", "client_id": "shop-a", "client_secret": KEY_A}
        ),
        401,
        "invalid_client",
        "unknown client or wrong secret",
    )
    assert len(fake_mobsms.received) == 2


@pytest.mark.usefixtures("reload_at_once")
def test_a_token_dies_with_its_client(
    client: FlaskClient, clients_path: Path, fake_mobsms: FakeMobsms
) -> None:
    token = token_for(client)
    assert send_with(client, token).status_code == 200
    write_clients(clients_path, {name: spec for name, spec in CLIENTS.items() if name != "shop-a"})
    assert_token_refused(send_with(client, token))
    assert_token_refused(client.get("/getsms/", headers=bearer(token)))
    assert len(fake_mobsms.received) == 1
    # A client of the same name with another key does not bring the token back.
    write_clients(clients_path, {**CLIENTS, "shop-a": {**MOBSMS_CLIENT, "key_sha256": [hash_key("other")]}})
    assert_token_refused(send_with(client, token))


# --- tokens across restarts and hosts ----------------------------------------------------------------------


def test_tokens_survive_a_restart_on_the_same_data_dir(
    make_app: Callable[..., Flask], clients_path: Path, tmp_path: Path, fake_mobsms: FakeMobsms
) -> None:
    data = tmp_path / "data"
    first = make_app("sandbox", clients_file=str(clients_path), data_dir=data)
    token = token_for(first.test_client())
    secret_file = data / "token-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert len(secret_file.read_bytes()) == 32
    kept = secret_file.read_bytes()

    second = make_app("sandbox", clients_file=str(clients_path), data_dir=data)
    response = send_with(second.test_client(), token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert fake_mobsms.received[0].headers["authorization"] == f"Bearer {MOBSMS_KEY}"
    assert secret_file.read_bytes() == kept

    elsewhere = make_app("sandbox", clients_file=str(clients_path), data_dir=tmp_path / "other-data")
    assert_token_refused(send_with(elsewhere.test_client(), token))


def test_hosts_sharing_the_token_secret_accept_each_others_tokens(
    make_app: Callable[..., Flask], clients_path: Path, tmp_path: Path, fake_mobsms: FakeMobsms
) -> None:
    host_1 = make_app(
        "sandbox", clients_file=str(clients_path), data_dir=tmp_path / "1", token_secret=SECRET_32
    )
    host_2 = make_app(
        "sandbox", clients_file=str(clients_path), data_dir=tmp_path / "2", token_secret=SECRET_32
    )
    other = make_app(
        "sandbox", clients_file=str(clients_path), data_dir=tmp_path / "3", token_secret=SECRET_32[::-1]
    )
    token_1, token_2 = token_for(host_1.test_client()), token_for(host_2.test_client())

    assert send_with(host_2.test_client(), token_1).status_code == 200
    assert send_with(host_1.test_client(), token_2).status_code == 200
    assert_token_refused(send_with(other.test_client(), token_1))
    assert_token_refused(send_with(other.test_client(), token_2))
    assert len(fake_mobsms.received) == 2
    # A configured secret is not written to the data directory.
    assert not (tmp_path / "1" / "token-secret").exists()


def test_a_short_token_secret_stops_the_start(make_app: Callable[..., Flask], clients_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app("sandbox", clients_file=str(clients_path), token_secret="x" * 31)
    assert str(caught.value) == (
        "SMSBRIDGE_TOKEN_SECRET: secret 1 of 1 is 31 bytes: each must be at least 32 "
        "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )


# --- passthrough mode (no clients file) ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sandbox", "mobsms"])
@pytest.mark.parametrize("how", ["form", "basic"])
def test_without_a_clients_file_a_translating_backend_issues_no_tokens(
    backend: str,
    how: str,
    make_app: Callable[..., Flask],
    fake_mobsms: FakeMobsms,
    fake_vendor: FakeSmsMobileApi,
) -> None:
    client = make_app(backend).test_client()
    form = {"grant_type": "client_credentials"}
    if how == "form":
        response = token_call(client, {**form, "client_id": "shop", "client_secret": MOBSMS_KEY})
    else:
        response = token_call(client, form, basic("shop", MOBSMS_KEY))
    assert_oauth_error(
        response,
        401,
        "invalid_client",
        "this bridge issues tokens only to the clients in its clients file (SMSBRIDGE_CLIENTS_FILE)",
    )
    assert fake_mobsms.received == []
    assert fake_vendor.received == []


VENDOR_TOKEN_ANSWER = b'{"access_token":"vendor-token-1","token_type":"Bearer","expires_in":3600}'


def test_without_a_clients_file_the_vendor_backend_forwards_the_token_call(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi").test_client()
    fake_vendor.next_reply = Reply(200, VENDOR_TOKEN_ANSWER, "application/json; charset=utf-8")
    form = [
        ("grant_type", "client_credentials"),
        ("client_id", "vendor-id"),
        ("client_secret", "vendor-s3cret"),
    ]
    response = client.post("/oauth2/token", data=MultiDict(form))
    [got] = fake_vendor.received
    assert (got.method, got.path, got.query) == ("POST", "/oauth2/token", [])
    assert got.form == form
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in got.headers
    assert response.status_code == 200
    assert response.content_type == "application/json; charset=utf-8"
    assert response.get_data() == VENDOR_TOKEN_ANSWER
    # The vendor's token then passes through like any Bearer.
    client.post("/sendsms/", data={"recipients": TO, "message": "Hi"}, headers=bearer("vendor-token-1"))
    assert fake_vendor.received[-1].headers["authorization"] == "Bearer vendor-token-1"


def test_without_a_clients_file_the_vendors_token_errors_come_back_unchanged(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    client = make_app("smsmobileapi").test_client()
    body = b'{"error":"invalid_client","error_description":"Client authentication failed"}'
    fake_vendor.next_reply = Reply(401, body, "application/json")
    response = client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
    )
    assert (response.status_code, response.content_type, response.get_data()) == (
        401,
        "application/json",
        body,
    )


def test_without_a_clients_file_the_vendors_token_answer_keeps_its_no_store(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    """RFC 6749 5.1: a token answer is never cached; the vendor's Cache-Control must reach the caller."""
    client = make_app("smsmobileapi").test_client()
    fake_vendor.next_reply = Reply(
        200,
        VENDOR_TOKEN_ANSWER,
        "application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
    response = client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
    )
    assert response.get_data() == VENDOR_TOKEN_ANSWER
    assert response.headers.get("Cache-Control") == "no-store"
    assert response.headers.get("Pragma") == "no-cache"


def test_without_a_clients_file_http_basic_credentials_reach_the_vendor(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi
) -> None:
    """The call goes to the vendor as made: credentials in a Basic header (RFC 6749 2.3.1) included."""
    client = make_app("smsmobileapi").test_client()
    fake_vendor.next_reply = Reply(200, VENDOR_TOKEN_ANSWER, "application/json")
    headers = basic("vendor-id", "vendor-s3cret")
    response = client.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=headers)
    [got] = fake_vendor.received
    assert got.form == [("grant_type", "client_credentials")]
    assert got.headers.get("authorization") == headers["Authorization"]
    assert response.get_data() == VENDOR_TOKEN_ANSWER


# --- secrets never logged --------------------------------------------------------------------------------


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG, also on loggers that do not propagate to the root (the request log).

    Its handler goes on every logger, since one may stop propagating when the app is built; a record
    seen twice is still checked the same.
    """
    caplog.set_level(logging.DEBUG)
    loggers = [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


@pytest.mark.usefixtures("reload_at_once")
def test_no_secret_or_token_is_logged(
    every_log: pytest.LogCaptureFixture,
    make_app: Callable[..., Flask],
    clients_path: Path,
    fake_mobsms: FakeMobsms,
    fake_vendor: FakeSmsMobileApi,
) -> None:
    # Built under DEBUG, so that start-up is logged too.
    client = make_app("sandbox", clients_file=str(clients_path), log_level="DEBUG").test_client()
    grant = {"grant_type": "client_credentials"}
    token = token_for(client)
    basic_header = basic("shop-b", KEY_B)
    vendor_client_token = assert_token_answer(token_call(client, grant, basic_header))
    token_call(client, {**grant, "client_id": "shop-a", "client_secret": "wrong-secret-1"})
    token_call(client, grant, basic("shop-a", "wrong-secret-2"))
    token_call(client, {**grant, "client_id": "shop-a", "client_secret": KEY_A}, basic_header)
    assert send_with(client, token).status_code == 200
    assert send_with(client, vendor_client_token).status_code == 200
    client.get("/getsms/", headers=bearer(token))
    assert_token_refused(send_with(client, tampered(token)["a changed signature"]))
    client.get("/sendsms/", query_string={"apikey": KEY_A, "recipients": TO, "message": "Hi"})
    write_clients(clients_path, {"shop-s": SANDBOX_CLIENT})
    assert_token_refused(send_with(client, token))
    # The vendor's own token endpoint, through a passthrough bridge.
    passthrough = make_app("smsmobileapi", log_level="DEBUG").test_client()
    fake_vendor.next_reply = Reply(200, VENDOR_TOKEN_ANSWER, "application/json")
    passthrough.post(
        "/oauth2/token", data={**grant, "client_id": "vendor-id", "client_secret": "vendor-s3cret"}
    )
    passthrough.post("/sendsms/", data={"recipients": TO, "message": "Hi"}, headers=bearer("vendor-token-1"))

    logged = every_log.text + "\n".join(
        f"{record.getMessage()} {record.args!r} {record.__dict__!r}" for record in every_log.records
    )
    # The requests were logged, the upstream calls too: what is checked below is really the log.
    assert "/oauth2/token" in logged
    assert "/api/sms" in logged
    assert any(record.name == "smsbridge.request" for record in every_log.records)
    secrets = [
        KEY_A,
        KEY_B,
        "wrong-secret-1",
        "wrong-secret-2",
        "vendor-s3cret",
        token,
        vendor_client_token,
        "vendor-token-1",
        basic_header["Authorization"].removeprefix("Basic "),
    ]
    for secret in secrets:
        assert secret not in logged
    # Nor is a token's signature, alone.
    assert token.rpartition(".")[2] not in logged
