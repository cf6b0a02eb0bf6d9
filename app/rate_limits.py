"""Rate limits per client with flask-limiter, applied in `before_request` to REST and SOAP alike.

A client is a managed client's name, else a fingerprint of the key it sends (for SOAP, read from the
envelope), else its IP address. Each has the default limit (SMSBRIDGE_RATE_LIMIT) or its own from the
clients file. Counts live in SMSBRIDGE_RATELIMIT_STORAGE: memory:// is exact for the default runtime
(one worker process); several workers or hosts share redis://. When Redis cannot be reached, limits go
on in each worker's memory (so a client gets at most its limit per worker) until Redis answers again:
a dead Redis costs one short timeout, not seconds on every request, and never switches limits off.
"""

from __future__ import annotations

import re

from flask import Flask, g, request
from flask_limiter import ApplicationLimit, Limiter

from app.access import hash_key
from app.config import Settings
from app.errors import BridgeError
from app.fronts import soap
from app.fronts.rest import optional_credential
from app.runtime import runtime
from app.tokens import is_token

#: how long a request may wait for Redis before its limit is counted in memory instead
REDIS_TIMEOUT_SECONDS = 0.1
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_SOAP_APIKEY = re.compile(rb"<(?:[\w.-]+:)?apikey(?:\s[^>]*)?>([^<]{1,512})</", re.IGNORECASE)


def client_key() -> str:
    """Return the name this request is counted under (computed once per request)."""
    if "limit_key" not in g:
        g.limit_key = _identify()
    return g.limit_key


def client_limit() -> str:
    """Return the limit of the client this request is counted under."""
    key = client_key()
    return runtime().access.limit_for_client(
        key.removeprefix("client:") if key.startswith("client:") else None
    )


def _identify() -> str:
    access = runtime().access
    secret = _soap_apikey() if request.blueprint == "soap" else _rest_secret()
    if not secret:
        return f"ip:{request.remote_addr}"
    if not access.managed:
        return f"key:{hash_key(secret)[:12]}"
    entry = access.client_for_token(secret) if is_token(secret) else access.client_for_key(secret)
    # A key the bridge does not know is counted by address, so guessing keys is limited too.
    return f"client:{entry.name}" if entry else f"ip:{request.remote_addr}"


def _rest_secret() -> str | None:
    # Never raise here: flask-limiter takes any error in its check for a dead storage.
    try:
        found = optional_credential()
    except BridgeError:
        return None
    return found.secret if found else None


def _soap_apikey() -> str | None:
    if request.method != "POST":
        return None
    match = _SOAP_APIKEY.search(request.get_data())
    return match.group(1).decode("utf-8", "replace").strip() if match else None


def _exempt() -> bool:
    # Webhook sources are the upstreams, authenticated by their URL's key: a busy one must not get 429.
    if request.path in EXEMPT_PATHS or request.path.startswith("/webhooks/"):
        return True
    return request.method == "GET" and request.path in (soap.WSDL_PATH, soap.ENDPOINT_PATH)


def init_app(app: Flask, settings: Settings, *, per_client: bool) -> Limiter:
    """Limit every request but health checks, metrics and the WSDL.

    `per_client`: clients may have limits of their own (managed mode); otherwise every client has
    the default, given to flask-limiter as a string so that it is parsed once, not on each request.
    """
    limit = client_limit if per_client else settings.rate_limit
    options = {}
    if settings.ratelimit_storage.startswith("redis"):
        options = {
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "retry_on_timeout": False,
        }
    limiter = Limiter(
        key_func=client_key,
        app=app,
        # Application-wide: one count per client across REST, SOAP and every endpoint.
        application_limits=[limit],
        in_memory_fallback=[ApplicationLimit(limit_provider=limit, key_function=client_key)],
        in_memory_fallback_enabled=True,
        storage_uri=settings.ratelimit_storage,
        storage_options=options,
        strategy="fixed-window",
        key_prefix="smsbridge",
    )
    limiter.request_filter(_exempt)
    app.extensions["smsbridge.limiter"] = limiter
    return limiter
