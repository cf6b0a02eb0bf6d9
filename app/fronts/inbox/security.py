"""The UI's sessions, password, CSRF tokens and response headers.

A session is a signed cookie (itsdangerous, under a key derived from the bridge's token secret and
SMSBRIDGE_UI_PASSWORD): a random session id and whether the password was given. Every page starts one;
every button is a POST carrying a CSRF token, the session id signed under another salt, so a token is
good only with the cookie it was made for. The cookie is HttpOnly and SameSite=Lax.
Only requests naming an IP address, localhost or the public URL's host are served (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, request
from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer

from app.service import Inbox, runtime

COOKIE = "smsbridge_ui"
#: how long a session (and so a signed-in browser) lasts
SESSION_SECONDS = 12 * 3600
_ENVIRON = "smsbridge.ui_session"
_NEW = "smsbridge.ui_session_new"

#: the pages' Content-Security-Policy: nothing but this origin, no inline script or style, no framing
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def inbox() -> Inbox:
    """Return the app's Inbox (made once)."""
    found: Inbox | None = current_app.extensions.get("smsbridge.inbox")
    if found is None:
        found = current_app.extensions["smsbridge.inbox"] = Inbox(runtime())
    return found


def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(inbox().signing_key(), salt=salt)


def session() -> dict[str, Any]:
    """Return this request's session: the cookie's, else a new one (set on the answer)."""
    found: dict[str, Any] | None = request.environ.get(_ENVIRON)
    if found is not None:
        return found
    raw = request.cookies.get(COOKIE, "")
    try:
        loaded = _serializer("session").loads(raw, max_age=SESSION_SECONDS) if raw else None
    except BadData:
        loaded = None
    if isinstance(loaded, dict) and isinstance(loaded.get("sid"), str):
        found = {"sid": loaded["sid"], "in": bool(loaded.get("in"))}
    else:
        found = {"sid": secrets.token_urlsafe(24), "in": False}
        request.environ[_NEW] = True
    request.environ[_ENVIRON] = found
    return found


def sign_in() -> None:
    """Start a new, signed-in session (a new id: a token made before signing in is no longer good)."""
    request.environ[_ENVIRON] = {"sid": secrets.token_urlsafe(24), "in": True}
    request.environ[_NEW] = True


def sign_out() -> None:
    request.environ[_ENVIRON] = {"sid": secrets.token_urlsafe(24), "in": False}
    request.environ[_NEW] = True


def password_required() -> bool:
    return bool(runtime().settings.ui_password)


def signed_in() -> bool:
    """Say whether the session may see the UI: always without a password, else once it was given."""
    return not password_required() or session()["in"]


def password_matches(given: str) -> bool:
    expected = runtime().settings.ui_password or ""
    return bool(expected) and hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def _csrf() -> URLSafeSerializer:
    # Not timed: the same token for the session's whole life (the session expires), so that a page's
    # live part, re-rendered every poll, changes only when what it shows changes.
    return URLSafeSerializer(inbox().signing_key(), salt="csrf")


def csrf_token() -> str:
    """Return the CSRF token of this session (put in every form)."""
    return str(_csrf().dumps(session()["sid"]))


def csrf_ok() -> bool:
    """Say whether the POST carries a CSRF token made for this session's cookie."""
    current_sid = session()["sid"]
    token = request.form.get("csrf", "")
    if not token or request.environ.get(_NEW):
        return False
    try:
        sid = _csrf().loads(token)
    except BadData:
        return False
    return isinstance(sid, str) and hmac.compare_digest(sid, current_sid)


def safe_next(target: str | None) -> str:
    """Return `target` if it is a path of this site, else "/" (no open redirect).

    Browsers drop tabs and newlines from a URL and read a backslash as a slash: to them "/\t/evil.example"
    is "//evil.example". A target holding a backslash or any control character is refused whole.
    """
    if not target or not target.startswith("/") or "\\" in target or not target.isprintable():
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return "/"
    return target


def host_served() -> bool:
    """Say whether the request names this bridge: an IP literal, localhost, or the public URL's host.

    Any other name is one re-pointed at the bridge's address (DNS rebinding): a page served under it
    would be same-origin with the inbox, and could read it and press its buttons.
    """
    host = (urlsplit("//" + request.host).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    if host == (urlsplit(runtime().settings.public_url).hostname or "").rstrip("."):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def headers(response: Response) -> Response:
    """Send the UI's security headers and its session cookie (an after-request hook; UI pages only)."""
    if request.blueprint != "inbox":
        return response
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    if request.environ.get(_NEW):
        response.set_cookie(
            COOKIE,
            str(_serializer("session").dumps(request.environ[_ENVIRON])),
            max_age=SESSION_SECONDS,
            httponly=True,
            # Lax, not Strict: a link from another site must not arrive cookie-less and replace the
            # session with a signed-out one. Every change is a POST with a CSRF token either way.
            samesite="Lax",
            secure=request.is_secure,
            path="/",
        )
    return response
