"""Health: `/healthz` says the process is alive; `/readyz` that it can serve sends now.

Ready means: the configuration was valid (or the process would not run), the state stores answer,
the data directory takes writes (free space and a small write probe, cached for a few seconds), and
the rate-limit storage answers (with Redis down, limits go on in memory, but the bridge reports
itself not ready so that an operator or an orchestrator sees it). Neither says anything secret.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app.service import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Say whether the state stores and the limiter's storage answer; 503 when one does not."""
    state = runtime()
    checks = {"config": "ok"}
    checks["state_store"] = state.state_check()
    limiter = current_app.extensions.get("smsbridge.limiter")
    reachable = limiter is not None and limiter.storage_answers()
    checks["rate_limit_storage"] = "ok" if reachable else "unreachable (limits are counted in memory)"
    ready = all(value == "ok" for value in checks.values())
    response = jsonify(status="ready" if ready else "not ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
