"""The SMSMobileAPI REST dialect: `/sendsms/` by GET or POST, answered with `{"result": {...}}`."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_to_bytes

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.errors import (
    BodyTooLarge,
    BridgeError,
    CallerError,
    InvalidParameter,
    MalformedBody,
    MissingParameter,
    StorageUnavailable,
    UriTooLong,
)
from app.fronts.request_log import note_outcome, note_recipients
from app.fronts.smsmobileapi import soap
from app.fronts.smsmobileapi.dialect import (
    check_key,
    error_result,
    header_value,
    parse_json,
    require,
    send_result,
    split_recipients,
)
from app.service import (
    IDEMPOTENCY_PARAMETER,
    Principal,
    current,
    deliver,
    fingerprint,
    requested_key,
    runtime,
)
from app.service import storage_unavailable as unavailable
from app.vocabulary import (
    MASKED_SECRET,
    Credential,
    CredentialSource,
    HttpCall,
    SendOptions,
    SendRequest,
    UpstreamReply,
)

if TYPE_CHECKING:
    from app.service import Backend

log = logging.getLogger(__name__)

bp = Blueprint("rest", __name__)

#: the longest query string taken (gunicorn.conf.py lets request lines of up to 8190 bytes through)
MAX_QUERY_BYTES = 8000
#: the most recipients one send may name
MAX_RECIPIENTS = 500


@bp.route("/sendsms/", methods=["GET", "POST"], strict_slashes=False)
def sendsms() -> Response:
    """Send an SMS (or WhatsApp) to one or more comma-separated recipients."""
    params = parameters()
    caller = principal()
    key = requested_key(params)
    if key is None:
        return _send(params, caller)
    digest = fingerprint(params)
    return runtime().idempotency.run(caller.client, key, digest, lambda: _answer(_send, params, caller))


def _send(params: dict[str, str], caller: Principal) -> Response:
    for name in ("port", "schedule_timestamp"):
        value = params.get(name, "")
        if value and not (value.isascii() and value.isdigit()):
            raise InvalidParameter(f"{name}={value[:40]!r} is not valid: expected a whole number")
    recipients = split_recipients(params.get("recipients", ""))
    if len(recipients) > MAX_RECIPIENTS:
        raise InvalidParameter(f"{len(recipients)} recipients: one send takes at most {MAX_RECIPIENTS}")
    send = SendRequest(
        credential=caller.upstream,
        recipients=recipients,
        message=require("message", params.get("message")),
        options=SendOptions(**{name: params.get(name, "") for name in SendOptions.names()}),
        http=http_call() if _may_pass_through(caller) else None,
        reference=send_reference(),
        idempotency_key=current().idempotency_key or "",
    )
    note_recipients(send.recipients)
    receipt = deliver(caller, send, runtime().breaker)
    if receipt.verbatim is not None:
        return verbatim(receipt.verbatim)
    return jsonify(result=send_result(receipt))


def _may_pass_through(caller: Principal) -> bool:
    """Tell whether the send may go to a backend that forwards the call as it came (or fails over to one)."""
    return caller.backend.passes_through or (
        caller.failover is not None and caller.failover[0].passes_through
    )


def _answer(view: Callable[..., Response], *args: object) -> Response:
    """Return the view's answer, or its error's answer, noting whether anything can have been sent."""
    try:
        return view(*args)
    except BridgeError as error:
        current().nothing_sent = error.nothing_sent
        return error_response(error)
    except sqlite3.OperationalError as error:
        # The bridge's own data (the sandbox's store, say) failed: that store was the send.
        return error_response(storage_unavailable(error))
    except Exception:
        # Whether anything was sent is unknown: the answer is kept, and a repeat gets it too.
        return internal_error_response()


def parameters() -> dict[str, str]:
    """Return the call's parameters: the query string, then the form or JSON body over it.

    Refuse, naming it, a query string over MAX_QUERY_BYTES and a value that is not UTF-8 (which
    werkzeug would otherwise turn into U+FFFD and send).
    """
    ctx = current()
    if ctx.params is not None:
        return ctx.params
    if len(request.query_string) > MAX_QUERY_BYTES:
        raise UriTooLong(f"the query string is over {MAX_QUERY_BYTES} bytes: POST the parameters instead")
    _check_utf8(request.query_string, "the query string")
    if request.mimetype == "application/x-www-form-urlencoded":
        _check_utf8(request.get_data(), "the form body")
    params = request.args.to_dict()
    params.update(_body().items())
    for name, value in params.items():
        if isinstance(value, str) and "\x00" in value:
            # PostgreSQL's text cannot hold it: refused alike on every engine, never a retryable 503.
            raise InvalidParameter(f"{name[:40]} holds a NUL character (U+0000), which no parameter may")
    ctx.params = params
    return params


def _check_utf8(encoded: bytes, where: str) -> None:
    for pair in encoded.split(b"&"):
        name, _, value = pair.partition(b"=")
        try:
            unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            shown = unquote_to_bytes(name).decode("utf-8", "replace")[:40]
            raise InvalidParameter(f"{shown} in {where} is not valid UTF-8") from None


def credential() -> Credential:
    """Return the caller's credential: `apikey` from the body or query, else a Bearer token."""
    found = optional_credential()
    if found is None:
        raise MissingParameter(
            "apikey is missing: pass apikey=YOUR_API_KEY or the header Authorization: Bearer TOKEN"
        )
    return found


def send_reference() -> str:
    """Return the reference of this send: the caller's idempotency key, else the request id."""
    ctx = current()
    return ctx.idempotency_key or ctx.request_id


def principal() -> Principal:
    """Return the caller, resolved once per request; raise if it has no credential or a refused one."""
    ctx = current()
    if ctx.principal is None:
        ctx.principal = runtime().access.resolve(credential())
    return ctx.principal


def passthrough_target() -> tuple[Backend, Credential | None] | None:
    """Return the backend and credential when this call goes to the vendor as made, else None."""
    access = runtime().access
    if not access.managed:
        backend = runtime().backend
        current().backend_name = backend.name
        return (backend, optional_credential()) if backend.passes_through else None
    caller = principal()
    return (caller.backend, caller.upstream) if caller.backend.passes_through else None


def optional_credential() -> Credential | None:
    """Return the caller's credential, or None when the call carries none (read once per request).

    The limiter names the client by it before the view asks for it again.
    """
    ctx = current()
    if not ctx.credential_read:
        ctx.credential = _read_credential()
        ctx.credential_read = True
    return ctx.credential


def _read_credential() -> Credential | None:
    body_key = _body().get("apikey")
    if body_key:
        return Credential(check_key(body_key), CredentialSource.FORM)
    query_key = request.args.get("apikey")
    if query_key:
        return Credential(check_key(query_key), CredentialSource.QUERY)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Credential(check_key(token.strip()), CredentialSource.BEARER)
    return None


def http_call() -> HttpCall:
    """Return the call as the caller made it, without its credential, for a passthrough."""
    raw = None if request.form else request.get_data() or None
    if raw is not None and request.is_json:
        _body_pairs()  # a body said to be JSON goes on only if it parses (refused by name otherwise)
    try:
        request.environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        # werkzeug would turn the bytes into U+FFFD, and that other path would be sent (as for the query)
        raise InvalidParameter("the path is not valid UTF-8") from None
    header = request.headers.get("Authorization", "")
    scheme = header.partition(" ")[0]
    return HttpCall(
        method=request.method,
        path=request.path,
        query=tuple((k, v) for k, v in request.args.items(multi=True) if k not in _NOT_FORWARDED),
        form=tuple((k, v) for k, v in request.form.items(multi=True) if k not in _NOT_FORWARDED),
        body=raw,
        content_type=header_value("Content-Type", request.content_type or "") if raw else "",
        authorization="" if scheme.lower() == "bearer" else header_value("Authorization", header),
    )


passthrough_bp = Blueprint("passthrough", __name__)


@passthrough_bp.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def passthrough(path: str) -> Response:
    """Forward any other call to a backend that passes the vendor's API through, and return its answer."""
    target = passthrough_target()
    if target is None:
        if _served_by_another_method():
            raise _MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        raise _NoSuchEndpoint(f"no such endpoint: {request.path}")
    backend, upstream = target
    return verbatim(backend.forward(http_call(), upstream))


def _served_by_another_method() -> bool:
    adapter = current_app.url_map.bind("localhost")
    for method in ("GET", "POST"):
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint != "passthrough.passthrough":
            return True
    return False


#: parameters the bridge consumes itself: the credential (put back by the backend) and the idempotency key
_NOT_FORWARDED = frozenset({"apikey", IDEMPOTENCY_PARAMETER})


def verbatim(reply: UpstreamReply) -> Response:
    """Return an upstream's answer unchanged: status, body, its type and the headers the backend kept."""
    response = Response(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers:
        if name.lower() == "location":
            value = _location_for_caller(value)
        # Added, not set: a header the upstream repeats (Link, Vary, WWW-Authenticate) stays repeated.
        response.headers.add(name, value)
    return response


def _location_for_caller(location: str) -> str:
    """Give a managed caller's redirect through the bridge its own key where the operator's is masked.

    A vendor redirect keeps the query it was sent, with the operator's key the bridge put there (masked
    by the backend): followed as it is, it would call the bridge again with `apikey=***`. A caller that
    sent its key in the query gets it back there; one that sent it otherwise (a Bearer header, which a
    client repeats on a redirect to the same host) gets the pair removed. A redirect to another host
    never gets the caller's key.
    """
    own = current().credential
    state = runtime()
    if own is None or not state.access.managed:
        return location
    if not location.startswith(state.settings.public_url.rstrip("/") + "/"):
        return location
    before, mark, query = location.partition("?")
    query, hash_mark, fragment = query.partition("#")
    masked = f"apikey={MASKED_SECRET}"
    given = [f"apikey={quote(own.secret, safe='')}"] if own.source is CredentialSource.QUERY else []
    pairs = [kept for pair in query.split("&") for kept in (given if pair == masked else [pair])]
    return before + (mark if pairs else "") + "&".join(pairs) + hash_mark + fragment


def _body() -> dict[str, str]:
    """Return the body's parameters (the first value of each)."""
    body: dict[str, str] = {}
    for name, value in _body_pairs():
        body.setdefault(name, value)
    return body


def _body_pairs() -> list[tuple[str, str]]:
    """Return the form body's pairs in order, or a JSON object body's fields (as axios posts).

    Read once per request: the limiter, the access check and the view all ask for it.
    """
    ctx = current()
    if ctx.body_pairs is None:
        ctx.body_pairs = _read_body_pairs()
    return ctx.body_pairs


def _read_body_pairs() -> list[tuple[str, str]]:
    if request.form:
        return list(request.form.items(multi=True))
    if request.is_json:
        data = request.get_data()
        if not data.strip():
            return []
        try:
            document = parse_json(data)
        except ValueError:
            raise InvalidParameter(
                "the body is said to be JSON (Content-Type: application/json) but does not parse as JSON, "
                "or is nested too deep"
            ) from None
        if isinstance(document, dict):
            return [
                (str(k), "" if v is None else str(v))
                for k, v in document.items()
                if isinstance(v, (str, int, float)) or v is None
            ]
    return []


def error_response(error: BridgeError) -> Response:
    """Answer `error` in the caller's dialect: a SOAP fault, or the `result` plus the OpenAPI error."""
    note_outcome(error.name)
    if getattr(error, "outcome_unknown", False) and not error.reference:
        error.reference = send_reference()
    if error.verbatim is not None:
        return verbatim(error.verbatim)
    if request.blueprint == soap.bp.name and request.method == "POST":
        fault = soap.fault_response(error.fault_code, error.note)
        if error.retry_after is not None:
            fault.headers["Retry-After"] = str(error.retry_after)
        return fault
    if current().error_style == "success":
        # conversation/sms/list answers {"success": false, "error": "..."}, as its docs show.
        response = jsonify(success=False, error=error.note, error_code=error.name)
    else:
        response = jsonify(result=error_result(error), error=error.code, message=error.note)
    response.status_code = error.http_status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


class _NoSuchEndpoint(CallerError):
    code, name, http_status = 40, "not_found", 404


class _MethodNotAllowed(CallerError):
    code, name, http_status = 41, "method_not_allowed", 405


def read_body_first() -> None:
    """Read the whole body before anything else, and keep it, so that a broken one is refused by name.

    The form parser, the limiter and the views all read the kept bytes (an urlencoded body's are also
    checked for UTF-8). A body gunicorn cannot frame (a bad chunk size, chunk-extension garbage, a
    missing chunk terminator, a body cut short) fails here, as the caller's error. Where the next
    request would start is then unknown: gunicorn closes the connection after the answer (it never
    drains a body it failed to read), and another server is told to with `Connection: close`. A body
    over MAX_CONTENT_LENGTH is refused as it always is.
    """
    try:
        request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise
    except Exception as exc:
        # Nothing of the body is logged: the exception's name is enough to tell the framing fault.
        log.info("unreadable request body on %s %s: %s", request.method, request.path, type(exc).__name__)
        current().close_connection = True
        raise MalformedBody(
            "the request body could not be read: its chunked framing is broken, or it was cut short"
        ) from None


def close_after_malformed_body(response: Response) -> Response:
    """Answer with Connection: close after a body that could not be read (an after-request hook)."""
    if current().close_connection:
        response.headers["Connection"] = "close"
    return response


def register_error_handlers(app: Flask) -> None:
    """Make every error, expected or not, an answer in the SMSMobileAPI dialect."""

    @app.errorhandler(BridgeError)
    def bridge_error(error: BridgeError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if isinstance(error, RequestEntityTooLarge):
            limit = app.config["MAX_CONTENT_LENGTH"]
            return error_response(BodyTooLarge(f"the request body is over {limit} bytes"))
        if error.code == 404:
            return error_response(_NoSuchEndpoint(f"no such endpoint: {request.path}"))
        if error.code == 405:
            return error_response(_MethodNotAllowed(f"{request.method} is not allowed on {request.path}"))
        bad = CallerError(error.description or error.name)
        bad.http_status = error.code or 400
        return error_response(bad)

    @app.errorhandler(sqlite3.OperationalError)
    def storage_error(error: sqlite3.OperationalError) -> Response:
        return error_response(storage_unavailable(error))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        return internal_error_response()


def storage_unavailable(error: sqlite3.OperationalError) -> StorageUnavailable:
    """Return the dialect's retryable 503 for a database that is locked, or a data disk that is full."""
    log.error("the bridge's data failed on %s %s: %s", request.method, request.path, error)
    current().nothing_sent = True
    return unavailable(error)


def internal_error_response() -> Response:
    """Log the exception being handled and answer it in the caller's dialect, without a traceback."""
    log.exception("unexpected error on %s %s", request.method, request.path)
    note_outcome("internal_error")
    if request.blueprint == soap.bp.name and request.method == "POST":
        return soap.fault_response("Server.InternalError", "smsbridge failed unexpectedly")
    response = jsonify(
        result={
            "error": 99,
            "error_code": "internal_error",
            "sent": "0",
            "id": "",
            "note": "smsbridge failed unexpectedly; the operator's log has the details",
        },
        error=99,
        message="internal error",
    )
    response.status_code = 500
    return response
