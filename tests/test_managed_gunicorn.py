"""Managed mode and OAuth2 through the real runtime: gunicorn, a clients file, two workers sharing tokens."""
# Two workers need Redis for their limits; the tokens must work whichever worker answers.

from __future__ import annotations

from pathlib import Path

import requests
import zeep

from app.access.resolution import hash_key
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.gunicorn import ready_workers, served_by, start_bridge
from tests.harness.redis import RedisServer

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
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis")
    bridge = start_bridge(
        tmp_path,
        {
            "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
            "SMSBRIDGE_CLIENTS_FILE": str(clients),
            "SMSBRIDGE_WORKERS": "2",
            "SMSBRIDGE_RATELIMIT_STORAGE": redis_server.url,
            "ACME_MOBSMS_KEY": "mobsms-key-1",
        },
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
        # Both workers up first (on a loaded machine the second may still be booting), then requests on
        # new connections until both have accepted the token.
        ready_workers(bridge, 2)
        probes: list[str] = []
        workers: set[int] = set()
        while len(workers) < 2:
            assert len(probes) < 200, "one worker answered every request"
            probes.append(f"token-{len(probes)}")
            by_token = requests.get(
                bridge.url + "/sendsms",
                params={"recipients": "+32470000002", "message": f"by token {len(probes) - 1}"},
                headers={
                    "Authorization": f"Bearer {access_token}",
                    "Connection": "close",
                    "X-Probe": probes[-1],
                },
                timeout=10,
            )
            assert by_token.json()["result"]["sent"] == "1", by_token.text
            workers.add(served_by(bridge, [probes[-1]])[probes[-1]][0])

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
        redis_server.stop()

    sends = len(probes) + 2
    assert [r.headers["authorization"] for r in fake_mobsms.received] == ["Bearer mobsms-key-1"] * sends
    assert [r.json["message"] for r in fake_mobsms.received] == [
        "by key",
        *(f"by token {n}" for n in range(len(probes))),
        "by SOAP",
    ]
    for secret in (CLIENT_KEY, "mobsms-key-1", access_token):
        assert secret not in output
    assert '"client":"acme-shop"' in output
