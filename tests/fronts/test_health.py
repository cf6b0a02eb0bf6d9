"""/healthz and /readyz."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask


def test_healthz_says_the_process_is_alive(make_app: Callable[..., Flask]) -> None:
    assert make_app("sandbox").test_client().get("/healthz").get_json() == {"status": "ok"}


def test_readyz_is_ready_with_the_default_runtime(make_app: Callable[..., Flask]) -> None:
    answer = make_app("sandbox").test_client().get("/readyz")
    assert answer.status_code == 200
    assert answer.get_json() == {
        "status": "ready",
        "checks": {"config": "ok", "state_store": "ok", "rate_limit_storage": "ok"},
    }


def test_readyz_says_when_redis_is_unreachable_quickly(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox", workers=2, ratelimit_storage="redis://127.0.0.1:9/0")
    started = time.monotonic()
    answer = app.test_client().get("/readyz")
    assert time.monotonic() - started < 2
    assert answer.status_code == 503
    assert answer.get_json()["checks"]["rate_limit_storage"] == "unreachable (limits are counted in memory)"
    # Sends still go through, counted in memory.
    sent = app.test_client().get(
        "/sendsms/", query_string={"apikey": "k", "recipients": "+32470000001", "message": "x"}
    )
    assert sent.get_json()["result"]["sent"] == "1"
