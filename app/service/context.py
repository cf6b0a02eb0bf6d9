"""One request's state, made in one place: the first request hook makes it, everything else reads it.

What a request carries between the modules that serve it (its id and clock, the credential and
parameters read once, the caller resolved once, the rate-limit and idempotency keys, whether anything was
sent, the upstream calls made and the failover taken, what its log line says) is one RequestContext,
kept as one attribute of Flask's `g`; nothing else is kept on `g`. A module reads it with `current()`,
once per function: each read through Flask's `g` proxy is a context-variable lookup.

Code that also runs outside a request (the upstream observer, the webhook deliverer, the command line)
asks `current_or_none()`.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import g, has_request_context, request

if TYPE_CHECKING:
    from app.access.resolution import Principal
    from app.vocabulary import Credential

#: the one attribute of `g` the bridge uses
_ATTRIBUTE = "smsbridge"
#: an X-Request-ID a caller may give (anything else is replaced by an id of the bridge's)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(slots=True)
class RequestContext:
    """What one request carries from hook to view to log line."""

    #: the caller's X-Request-ID when well formed, else the bridge's own
    request_id: str
    #: time.perf_counter() when the request began
    started: float
    #: the credential the request carries (REST: read once, from wherever the dialect allows it)
    credential: Credential | None = None
    credential_read: bool = False
    #: the request's parameters (query and form, dialect rules applied), read once
    params: dict[str, str] | None = None
    #: the form body's pairs, in order, read once (pass-through forwards them as they came)
    body_pairs: list[tuple[str, str]] | None = None
    #: the caller, resolved once (a managed client, or a passthrough key)
    principal: Principal | None = None
    #: the SOAP apikey `principal` was resolved for (sendSms reuses it for the same key)
    principal_key: str | None = None
    #: the key the request's rate limit is counted under
    limit_key: str | None = None
    #: a webhook source's (source, client) pair, checked once: None not checked yet, () checked and unsigned
    signed_source: tuple[str, str] | tuple[()] | None = None
    #: the request's Idempotency-Key, when it has one
    idempotency_key: str | None = None
    #: True when the request provably sent nothing (an idempotency claim is then given up)
    nothing_sent: bool | None = None
    #: how an endpoint renders its errors ("success": in the vendor's success-shaped envelope)
    error_style: str | None = None
    #: answer with Connection: close (a body that could not be read)
    close_connection: bool = False
    #: the SOAP operation called, its parsed envelope, and the Retry-After of its fault
    soap_operation: str | None = None
    soap_envelope: Any = None
    soap_retry_after: int | None = None
    #: upstream calls made for the request, the last one's status, their seconds in all
    upstream_calls: int = 0
    upstream_status: int | None = None
    upstream_seconds: float | None = None
    #: {"from": backend, "why": ...} when the send went to the failover backend
    failover: dict[str, str] | None = None
    #: for the log line: the backend named before a caller was resolved, the masked recipients, the outcome
    backend_name: str | None = None
    recipients: list[str] | None = field(default=None)
    outcome: str | None = None


def begin() -> None:
    """Make the request's context: the first request hook (create_app registers it first)."""
    given = request.headers.get("X-Request-ID", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else new_request_id()
    setattr(g, _ATTRIBUTE, RequestContext(request_id=request_id, started=time.perf_counter()))


def current() -> RequestContext:
    """Return the request's context (made now if no hook ran: an error raised before the first one)."""
    found: RequestContext | None = g.get(_ATTRIBUTE)
    if found is None:
        begin()
        found = g.get(_ATTRIBUTE)
        assert found is not None
    return found


def current_or_none() -> RequestContext | None:
    """Return the request's context, or None outside a request (the deliverer, the command line)."""
    return current() if has_request_context() else None


def new_request_id() -> str:
    """Return an id no other request has: 32 hex digits, a random one per process then a count.

    Not uuid4: that reads 16 random bytes from the kernel on every request, and an id only has to be
    unique, not secret.
    """
    pid = os.getpid()
    if _ids[0] != pid:
        _ids[:] = [pid, uuid.uuid4().hex[:16], itertools.count()]
    return f"{_ids[1]}{next(_ids[2]):016x}"


#: the process the ids below were made for, its random half, and its count
_ids: list = [None, "", None]
