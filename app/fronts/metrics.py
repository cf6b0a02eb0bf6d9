"""`/metrics` in Prometheus text format, summed over every gunicorn worker.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory before any
worker starts, so each worker writes its counts there and a scrape, whichever worker answers it, adds
them all up (prometheus_client's multiprocess mode). Elsewhere (tests, a single process) the default
registry is used. The webhook queue is read from its store at scrape time.

Protection: with SMSBRIDGE_METRICS_TOKEN set, a scrape needs `Authorization: Bearer <token>`;
without it, only peers on the loopback address may scrape (bind a sidecar or the host's Prometheus
there, or set the token).
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from flask import Blueprint, Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from app.fronts import request_log
from app.service import runtime

bp = Blueprint("metrics", __name__)

REQUESTS = Counter(
    "smsbridge_requests_total",
    "Requests answered, by dialect, operation, backend and outcome",
    ["dialect", "operation", "backend", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "smsbridge_upstream_seconds",
    "Time of each upstream call, by backend",
    ["backend"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
REQUEST_SECONDS = Histogram(
    "smsbridge_request_seconds",
    "Time the bridge took to answer a request (upstream included), by dialect, operation and outcome",
    ["dialect", "operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RATE_LIMITED = Counter("smsbridge_rate_limited_total", "Requests refused by the bridge's rate limits")
WEBHOOK_FAILURES = Counter(
    "smsbridge_webhook_delivery_failures_total", "Webhook delivery attempts that failed", ["type"]
)


class WebhookQueue:
    """A collector reading the webhook queue's depth from its store at scrape time."""

    def collect(self):
        depth = GaugeMetricFamily(
            "smsbridge_webhook_events",
            "Webhook events waiting, by state (pending, dead); delivered ones are not counted",
            labels=["state"],
        )
        # Pending and dead only, read on an index: a scrape costs what waits, not every event delivered.
        counts = runtime().events.counts()
        for state in ("pending", "dead"):
            depth.add_metric([state], counts.get(state, 0))
        yield depth


@bp.get("/metrics")
def metrics() -> Response:
    """Serve the metrics, to an allowed scraper only."""
    token = runtime().settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return Response("metrics need the bearer token\n", status=401, content_type="text/plain")
    elif not request.remote_addr or not ipaddress.ip_address(request.remote_addr).is_loopback:
        return Response(
            "metrics are served to the loopback address only\n", status=403, content_type="text/plain"
        )
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    output = generate_latest(registry)
    output += generate_latest(_queue_registry())
    return Response(output, content_type=CONTENT_TYPE_LATEST)


def _queue_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(WebhookQueue())
    return registry


def _count_request(line: dict) -> None:
    operation = line["operation"] or ""
    REQUESTS.labels(line["dialect"], operation, line["backend"] or "", line["outcome"]).inc()
    REQUEST_SECONDS.labels(line["dialect"], operation, line["outcome"]).observe(line["ms"] / 1000)


def _observe_upstream(backend: str, seconds: float) -> None:
    UPSTREAM_SECONDS.labels(backend).observe(seconds)


def init_app(app: Flask) -> None:
    """Serve /metrics, and count what the request log, the upstream calls and the deliverer see."""
    app.register_blueprint(bp)
    request_log.on_request(_count_request)
    request_log.on_upstream(_observe_upstream)
    app.extensions["smsbridge"].deliverer.on_failure = lambda event_type: WEBHOOK_FAILURES.labels(
        event_type
    ).inc()
