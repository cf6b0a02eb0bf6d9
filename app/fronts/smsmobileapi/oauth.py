"""`POST /oauth2/token`: OAuth2 client credentials (RFC 6749 section 4.4), as SMSMobileAPI documents it.

A managed client's id is its name in the clients file and its secret is its key; the token works as
`Authorization: Bearer` on every REST endpoint until it expires. In passthrough mode with the
smsmobileapi backend the call goes to the vendor, whose tokens then pass through like any Bearer.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from flask import Blueprint, Response, jsonify, request

from app.fronts.smsmobileapi.rest import http_call, verbatim
from app.service import runtime

bp = Blueprint("oauth", __name__)


@bp.post("/oauth2/token")
def token() -> Response:
    """Issue an access token for the client credentials grant."""
    state = runtime()
    if not state.access.managed and state.backend.passes_through:
        return verbatim(state.backend.forward(http_call(), None))
    form = request.form
    basic = _basic_credentials()
    if basic and ("client_id" in form or "client_secret" in form):
        return _error(400, "invalid_request", "use one way to authenticate: HTTP Basic or the form, not both")
    grant = form.get("grant_type", "")
    if not grant:
        return _error(400, "invalid_request", "grant_type is missing")
    if grant != "client_credentials":
        return _error(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
    client_id, client_secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
    if not client_id or not client_secret:
        return _error(401, "invalid_client", "client_id and client_secret are missing")
    if not state.access.managed:
        return _error(
            401,
            "invalid_client",
            "this bridge issues tokens only to the clients in its clients file (SMSBRIDGE_CLIENTS_FILE)",
        )
    issued = state.access.issue_token(client_id, client_secret)
    if issued is None:
        return _error(401, "invalid_client", "unknown client or wrong secret")
    answer = {"access_token": issued, "token_type": "Bearer", "expires_in": state.tokens.ttl}
    return _no_store(jsonify(answer), 200)


def _basic_credentials() -> tuple[str, str] | None:
    """Return (client_id, client_secret) from an HTTP Basic header (form-urlencoded, RFC 6749 2.3.1)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, client_secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(client_secret)


def _error(status: int, code: str, description: str) -> Response:
    response = _no_store(jsonify(error=code, error_description=description), status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="smsbridge"'
    return response


def _no_store(response: Response, status: int) -> Response:
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
