"""/metrics: Prometheus text, summed over gunicorn's workers, shown only to allowed scrapers."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import requests
from flask import Flask

from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.gunicorn import ready_workers, start_bridge
from tests.harness.redis import RedisServer


def sample(text: str, name: str, **labels: str) -> float:
    """Return the sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? ([0-9.e+-]+)", line)
        if match and all(f'{k}="{v}"' in (match[1] or "") for k, v in labels.items()):
            total += float(match[2])
    return total


def test_metrics_add_up_every_worker(fake_mobsms: FakeMobsms, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis")
    bridge = start_bridge(
        tmp_path,
        {
            "SMSBRIDGE_BACKEND": "mobsms",
            "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
            "SMSBRIDGE_WORKERS": "2",
            "SMSBRIDGE_RATELIMIT_STORAGE": redis_server.url,
            "SMSBRIDGE_RATE_LIMIT": "12/minute",
        },
    )
    try:
        assert len(ready_workers(bridge)) == 2
        statuses = [
            requests.get(
                bridge.url + "/sendsms/",
                params={"apikey": "mobsms-key-1", "recipients": "+32470000001", "message": f"m{n}"},
                headers={"Connection": "close"},
                timeout=10,
            ).status_code
            for n in range(14)
        ]
        scraped = requests.get(bridge.url + "/metrics", timeout=10)
    finally:
        bridge.stop()
        redis_server.stop()
    assert statuses == [200] * 12 + [429] * 2
    text = scraped.text
    assert scraped.headers["Content-Type"].startswith("text/plain")
    assert sample(text, "smsbridge_requests_total", operation="sendsms", backend="mobsms", outcome="ok") == 12
    assert sample(text, "smsbridge_requests_total", outcome="rate_limited") == 2
    assert sample(text, "smsbridge_rate_limited_total") == 2
    assert sample(text, "smsbridge_upstream_seconds_count", backend="mobsms") == 12
    # The bridge's own latency, for its percentiles: every answered send, in both workers' files.
    answered = {"dialect": "rest", "operation": "sendsms", "outcome": "ok"}
    assert sample(text, "smsbridge_request_seconds_count", **answered) == 12
    assert sample(text, "smsbridge_request_seconds_bucket", le="+Inf", **answered) == 12
    assert 0 < sample(text, "smsbridge_request_seconds_sum", **answered) < 12 * 10
    assert sample(text, "smsbridge_request_seconds_count", outcome="rate_limited") == 2
    assert "smsbridge_webhook_events" in text


def test_metrics_need_the_token_when_one_is_set(make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox", metrics_token="scrape-secret").test_client()
    assert client.get("/metrics").status_code == 401
    answer = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert answer.status_code == 200
    assert "smsbridge_requests_total" in answer.get_data(as_text=True)


def test_without_a_token_only_loopback_may_scrape(make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox").test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 403
