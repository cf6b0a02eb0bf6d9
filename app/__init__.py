"""smsbridge: SMSMobileAPI's REST and SOAP dialects in front of the SMS backend the operator chose."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from app import startup
from app.config import Settings
from app.fronts import health, inbox, metrics, rate_limits, request_log, sandbox_console, webhook_sources
from app.fronts.inbox import security as inbox_security
from app.fronts.smsmobileapi import endpoints as rest_endpoints
from app.fronts.smsmobileapi import oauth, rest, soap
from app.service.bridge import init_app as init_runtime
from app.service.context import begin


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the bridge: settings from SMSBRIDGE_* (then `overrides`), backend, fronts, errors."""
    settings = Settings.from_env(overrides=overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    startup.prepare(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own, as Flask() makes it
    app.json.sort_keys = False
    state = init_runtime(app, settings)
    rest.register_error_handlers(app)
    app.register_blueprint(rest.bp)
    soap.init_app(app, settings.public_url)
    app.register_blueprint(health.bp)
    app.register_blueprint(oauth.bp)
    webhook_sources.init_app(app)
    app.register_blueprint(rest_endpoints.bp)
    in_use = state.backends_in_use()
    if any(b.simulates for b in in_use) or settings.ui_password:
        inbox.init_app(app)  # before the passthrough: `/` is the inbox (docs/inbox.md)
    # Any other path goes to the vendor as made for callers whose backend passes it through.
    app.register_blueprint(rest.passthrough_bp)
    if any(b.simulates for b in in_use):
        sandbox_console.init_app(app)
    request_log.init_app(app, settings.trusted_proxies)
    # Imported here: urllib3 must not be imported in gunicorn's master (which imports this package).
    from app import upstream

    upstream.on_call(request_log.note_upstream)  # upstream calls are told to whoever listens
    metrics.init_app(app)
    _register_hooks(app)
    rate_limits.init_app(app, settings, per_client=state.access.managed)
    return app


#: Every request hook, in the order it runs; no other module registers one. Before the view: the request's
#: context (its id and clock), the body read whole (a broken one refused before anything reads it), a SOAP
#: envelope checked before the limiter counts it, then flask-limiter's check, which rate_limits.init_app
#: registers after these. After the view: the X-RateLimit-* headers, the log line, Connection: close, and
#: on the web inbox's and console's pages their security headers and session cookie.
BEFORE_REQUEST = (begin, rest.read_body_first, soap.refuse_bad_envelope)
AFTER_REQUEST = (
    rate_limits.limit_headers,
    request_log.finish,
    rest.close_after_malformed_body,
    inbox_security.headers,
)


def _register_hooks(app: Flask) -> None:
    for hook in BEFORE_REQUEST:
        app.before_request(hook)
    # Flask runs after-request hooks in the reverse order of their registration.
    for after in reversed(AFTER_REQUEST):
        app.after_request(after)
