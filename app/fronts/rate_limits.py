"""Rate limits per client on flask-limiter, checked in `before_request` for REST and SOAP alike.

A client is a managed client's name, else a fingerprint of the key it sends (for SOAP, read from the
parsed envelope), else its IP address. Each has the default limit (SMSBRIDGE_RATE_LIMIT) or its own from
the clients file: one application-wide limit, so one count per client across every endpoint, in fixed
windows, under SMSBRIDGE_RATELIMIT_KEY_PREFIX (bridges sharing a Redis share counts only when they share
the prefix). Counts live in SMSBRIDGE_RATELIMIT_STORAGE (the storages: app/state/limits.py):

- sqlite:// (the default): a file in SMSBRIDGE_DATA_DIR, one exact count for every worker of the host;
- memory://: the worker's own memory, exact only with one worker (Settings refuses more);
- redis://: one count for several hosts.

When SQLite or Redis fails, limits go on in each worker's memory (a client gets at most its limit per
worker) and the storage is tried again once a second: a dead Redis costs one short timeout (100 ms),
not seconds on every request, and never switches limits off. flask-limiter's own in-memory fallback
waits up to 32 s between tries, so the fallback is a storage of ours and flask-limiter's stays off.

Past its limit a client gets the dialect's answer: REST 429 with the SMSMobileAPI error, SOAP a
`Client.RateLimited` fault, both with `Retry-After`. Every limited answer carries `X-RateLimit-Limit`,
`-Remaining` and `-Reset`.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded

from app.config import Settings
from app.errors import BridgeError, RateLimited
from app.fronts import webhook_sources
from app.fronts.metrics import RATE_LIMITED
from app.fronts.smsmobileapi import soap
from app.fronts.smsmobileapi.rest import error_response, optional_credential
from app.service import current, hash_key, is_token, limiter_storage, runtime

#: how long a request may wait for Redis before its limit is counted in memory instead
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RateLimits:
    """The bridge's limiter, and whether its storage answers (for /readyz)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    def storage_answers(self) -> bool:
        """Tell whether the storage answers (memory always does; the fallback asks what it stands for)."""
        try:
            return bool(self.limiter.storage.check())
        except Exception:
            return False


def limit_headers(response: Response) -> Response:
    """Write the X-RateLimit-* headers of the limit this request was counted under (an after-request hook)."""
    limits: RateLimits | None = current_app.extensions.get("smsbridge.limiter")
    counted = limits.limiter.current_limit if limits is not None else None
    if counted is not None:
        reset, remaining = counted.window
        response.headers["X-RateLimit-Limit"] = str(counted.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(int(reset) + 1)
    return response


def client_key() -> str:
    """Return the name this request is counted under (computed once per request)."""
    ctx = current()
    key = ctx.limit_key
    if key is None:
        key = ctx.limit_key = _identify()
    return key


def _identify() -> str:
    access = runtime().access
    if request.blueprint == "inbox":
        # The web inbox's pages and sign-in count by address: an apikey field must not buy a fresh count.
        return f"ip:{request.remote_addr}"
    if request.blueprint == webhook_sources.bp.name:
        # A source URL the bridge gave out counts as its source and client; any other post, by address.
        signed = webhook_sources.signed_source()
        return f"webhook:{signed[0]}:{signed[1]}" if signed else f"ip:{request.remote_addr}"
    secret = _soap_apikey() if request.blueprint == soap.bp.name else _rest_secret()
    if not secret:
        return f"ip:{request.remote_addr}"
    if not access.managed:
        return f"key:{hash_key(secret)[:12]}"
    entry = access.client_for_token(secret) if is_token(secret) else access.client_for_key(secret)
    # A key the bridge does not know is counted by address, so guessing keys is limited too.
    return f"client:{entry.name}" if entry else f"ip:{request.remote_addr}"


def _rest_secret() -> str | None:
    # A malformed credential is the view's to refuse, in the dialect: count the call by address.
    try:
        found = optional_credential()
    except BridgeError:
        return None
    return found.secret if found else None


def _soap_apikey() -> str | None:
    if request.method != "POST":
        return None
    try:
        return soap.request_envelope().apikey
    except soap.EnvelopeRefused:  # answered with a fault before the limiter runs; counted by address
        return None


def _limit_of_client() -> str:
    """Return the limit of the request's client: its own from the clients file, else the default."""
    client = client_key()
    if client.startswith("webhook:"):  # a client's sources have the client's limit, counted apart
        return runtime().access.limit_for_client(client.split(":", 2)[2] or None)
    name = client.removeprefix("client:")
    return runtime().access.limit_for_client(name if name != client else None)


def _exempt() -> bool:
    # Webhook sources are limited too, each source URL under its own count: past it, the upstream gets
    # the dialect's 429 with Retry-After and posts the event again later.
    path = request.path
    if path in EXEMPT_PATHS:
        return True
    if request.method != "GET":
        return False
    # The WSDL, and the web inbox's pages, polls and static files: a tab polls 30 times a minute, and would
    # use up its address's count. Its sign-in and its buttons (POSTs) are counted, by address.
    return path in (soap.WSDL_PATH, soap.ENDPOINT_PATH) or request.blueprint == "inbox"


def init_app(app: Flask, settings: Settings, *, per_client: bool) -> RateLimits:
    """Limit every request but health checks, metrics and the WSDL.

    `per_client`: clients may have limits of their own (managed mode); otherwise every client has
    the default.
    """
    uri, options = limiter_storage(settings)
    limiter = Limiter(
        key_func=client_key,
        # Application limits, not default ones: those are counted per endpoint, these once per client.
        application_limits=[_limit_of_client if per_client else settings.rate_limit],
        storage_uri=uri,
        storage_options=options,
        strategy="fixed-window",
        key_prefix=settings.ratelimit_key_prefix,
        # flask-limiter's headers put Retry-After on every answer, rounded down (0 s on a 429 whose
        # window ends within the second): the X-RateLimit-* headers are written below instead.
        headers_enabled=False,
        swallow_errors=False,
    )
    limiter.request_filter(_exempt)
    limiter.init_app(app)
    # It logs each refusal at INFO; the request log already has one line per request, with its outcome.
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)

    @app.errorhandler(RateLimitExceeded)
    def refuse(exceeded: RateLimitExceeded) -> Response:
        RATE_LIMITED.inc()
        breached = limiter.current_limit
        reset = breached.window.reset_time if breached else time.time()
        wait = max(1, int(reset - time.time()) + 1)
        return error_response(
            RateLimited(
                f"too many requests: this client may make {exceeded.limit.limit}; try again in {wait} s",
                retry_after=wait,
            )
        )

    limits = RateLimits(limiter)
    app.extensions["smsbridge.limiter"] = limits
    return limits
