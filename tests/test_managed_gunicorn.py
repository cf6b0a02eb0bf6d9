"""Managed mode and OAuth2 through the real runtime: gunicorn, a clients file, two workers sharing tokens."""

from __future__ import annotations

from pathlib import Path

import requests
import zeep

from app.access import hash_key
from tests.fakes.mobsms import FakeMobsms
from tests.test_gunicorn import Gunicorn

CLIENT_KEY = "acme-client-key-7f3a"


def test_a_managed_client_sends_with_its_own_key_and_with_a_token(
    fake_mobsms: FakeMobsms, tmp_path: Path
) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f"""
[clients.acme-shop]
key_sha256 = ["{hash_key(CLIENT_KEY)}"]
backend = "mobsms"
upstream_key_env = "ACME_MOBSMS_KEY"
"""
    )
    bridge = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "sandbox",
            "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
            "SMSBRIDGE_DATA_DIR": str(tmp_path / "data"),
            "SMSBRIDGE_CLIENTS_FILE": str(clients),
            "ACME_MOBSMS_KEY": "mobsms-key-1",
        },
        tmp_path / "gunicorn.log",
    )
    try:
        by_key = requests.post(
            bridge.url + "/sendsms/",
            data={"apikey": CLIENT_KEY, "recipients": "+32470000001", "message": "by key"},
            timeout=10,
        )
        assert by_key.json()["result"]["sent"] == "1"

        token = requests.post(
            bridge.url + "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("acme-shop", CLIENT_KEY),
            timeout=10,
        )
        assert token.status_code == 200
        assert token.headers["Cache-Control"] == "no-store"
        access_token = token.json()["access_token"]
        # Several requests, each on a new connection, so that whichever worker answers accepts the token.
        for n in range(4):
            by_token = requests.get(
                bridge.url + "/sendsms",
                params={"recipients": "+32470000002", "message": f"by token {n}"},
                headers={"Authorization": f"Bearer {access_token}", "Connection": "close"},
                timeout=10,
            )
            assert by_token.json()["result"]["sent"] == "1", by_token.text

        soap = zeep.Client(bridge.url + "/sendsms/wsdl/sendsms.wsdl").service.sendSms(
            recipients="+32470000003", message="by SOAP", apikey=CLIENT_KEY
        )
        assert soap["sent"] == "1"

        refused = requests.get(
            bridge.url + "/sendsms/",
            params={"apikey": "mobsms-key-1", "recipients": "1", "message": "x"},
            timeout=10,
        )
        assert refused.status_code == 403
        assert refused.json()["result"]["error_code"] == "key_refused"
    finally:
        output = bridge.stop()

    assert [r.headers["authorization"] for r in fake_mobsms.received] == ["Bearer mobsms-key-1"] * 6
    assert [r.json["message"] for r in fake_mobsms.received] == [
        "by key",
        "by token 0",
        "by token 1",
        "by token 2",
        "by token 3",
        "by SOAP",
    ]
    for secret in (CLIENT_KEY, "mobsms-key-1", access_token):
        assert secret not in output
    assert '"client":"acme-shop"' in output
