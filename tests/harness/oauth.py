"""OAuth2 client credentials as a client uses them: the managed clients, a token for one, a send with it."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.harness.clients import KEY_A, MOBSMS_CLIENT, SANDBOX_CLIENT, VENDOR_CLIENT

TO = "+32470000001"
#: what a refused token is told
TOKEN_REFUSED = "the access token is invalid or expired: get a new one from /oauth2/token"
#: a mobsms client (shop-a, key KEY_A), an smsmobileapi one (shop-b, KEY_B), a sandbox one (shop-s, KEY_S)
CLIENTS = {"shop-a": MOBSMS_CLIENT, "shop-b": VENDOR_CLIENT, "shop-s": SANDBOX_CLIENT}


def token_call(client: FlaskClient, form: dict[str, str] | None = None, headers: dict | None = None):
    return client.post("/oauth2/token", data=form or {}, headers=headers or {})


def token_for(client: FlaskClient, client_id: str = "shop-a", secret: str = KEY_A) -> str:
    response = token_call(
        client, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def send_with(client: FlaskClient, token: str, message: str = "Hi"):
    return client.post("/sendsms/", data={"recipients": TO, "message": message}, headers=bearer(token))


def assert_token_refused(response) -> None:
    assert response.status_code == 403, response.get_data(as_text=True)
    document = response.get_json()
    result = document["result"]
    assert (result["error"], result["error_code"], result["sent"]) == (20, "key_refused", "0")
    assert result["note"] == TOKEN_REFUSED
    assert (document["error"], document["message"]) == (20, TOKEN_REFUSED)
