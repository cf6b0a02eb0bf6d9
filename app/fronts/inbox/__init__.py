"""The web inbox at `/` (the sandbox's messages, a message's page, a phone per number) and the operator
console at `/console`: server-rendered pages that work without JavaScript, kept live by a small script.

Live updates poll: every 2 s the script asks the page's own URL for its live part (header `X-UI-Live`)
and swaps it in when it changed. Polling a plain GET works through every proxy and load balancer (no
buffering or idle-timeout trouble as a held server-sent-events stream has), holds no gevent worker
between polls, and keeps the page a page: what the script swaps in is the same escaped HTML the server
renders for a reload.

Who sees what (docs/inbox.md): the inbox is served when a backend in use simulates (the sandbox), open on
the bind address unless SMSBRIDGE_UI_PASSWORD is set; the console likewise when every backend in use is
the sandbox, and with any other backend only once SMSBRIDGE_UI_PASSWORD is set. The console never shows
message text, numbers beyond their masked form, or keys. Every button is a POST with a CSRF token.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, url_for

from app.errors import BridgeError
from app.fronts import request_log
from app.fronts.inbox import recent, security
from app.fronts.smsmobileapi.conversations import conversations
from app.service import runtime

bp = Blueprint(
    "inbox", __name__, template_folder="templates", static_folder="static", static_url_path="/ui/static"
)

#: the statuses and channels the inbox filters on
STATUSES = ("pending", "sent", "delivered", "failed")
CHANNELS = ("sms", "whatsapp")
#: how often the pages ask for their live part, in milliseconds
POLL_MS = 2000


def inbox_on() -> bool:
    """The inbox is served when a backend in use simulates (the sandbox)."""
    return any(b.simulates for b in runtime().backends_in_use())


def console_on() -> bool:
    """The console: with the sandbox alone, as the inbox; with any other backend, only behind the password."""
    backends = runtime().backends_in_use()
    return bool(runtime().settings.ui_password) or (bool(backends) and all(b.simulates for b in backends))


def _guarded(
    on: Callable[[], bool], *, post: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not on():
                abort(404)  # answered as any unknown path is: the dialect's JSON 404
            if not security.host_served():
                return _misdirected()
            if not security.signed_in():
                if post:
                    return _error(403, "Sign in first.")
                return redirect(url_for("inbox.login", next=request.full_path.rstrip("?")), 303)
            if post and not security.csrf_ok():
                return _error(
                    403, "This form expired or did not come from this site: reload the page and try again."
                )
            if _holds_nul():
                return _error(400, "A NUL character (U+0000) is not text the inbox takes: remove it.")
            return view(*args, **kwargs)

        return guarded

    return wrap


def _holds_nul() -> bool:
    """Say whether the request's path segments, query or form hold a NUL character.

    No store keeps one (PostgreSQL's text refuses it: a retryable 503 for input that can never be
    stored), so it is refused here, on every engine, before any view reads its input.
    """
    fields = [*request.args.items(multi=True)]
    if request.method == "POST":
        fields += request.form.items(multi=True)
    values = [*(request.view_args or {}).values(), *(part for field in fields for part in field)]
    return any("\x00" in str(value) for value in values)


def _render(template: str, **values: Any) -> str:
    live = request.headers.get("X-UI-Live") == "1"
    values.setdefault("poll_ms", POLL_MS)
    return render_template(
        template,
        layout="inbox/fragment.html" if live else "inbox/base.html",
        csrf=security.csrf_token(),
        inbox_on=inbox_on(),
        console_on=console_on(),
        password=security.password_required(),
        **values,
    )


def _error(status: int, note: str) -> tuple[str, int]:
    return _render("inbox/error.html", status=status, note=note, poll_ms=0), status


def _misdirected() -> tuple[str, int]:
    return _error(421, "This bridge is not served under that name: open it by its address or its public URL.")


def _back() -> Response:
    return redirect(security.safe_next(request.form.get("next")), 303)  # type: ignore[return-value]


# --- pages ---------------------------------------------------------------------------------------------


@bp.get("/")
@_guarded(lambda: inbox_on() or console_on())
def home() -> Any:
    if not inbox_on():
        return redirect(url_for("inbox.console"), 303)
    search = request.args.get("q", "")[:200]
    status = request.args.get("status", "")
    channel = request.args.get("channel", "")
    inbox = security.inbox()
    messages = inbox.messages(
        search, status if status in STATUSES else "", channel if channel in CHANNELS else ""
    )
    received = inbox.received(search) if not status and channel in ("", "sms", "whatsapp") else []
    if channel:
        received = [r for r in received if r.channel == channel]
    return _render(
        "inbox/inbox.html",
        messages=messages,
        received=received,
        search=search,
        status=status,
        channel=channel,
        statuses=STATUSES,
        channels=CHANNELS,
    )


@bp.get("/inbox/messages/<guid>")
@_guarded(inbox_on)
def message(guid: str) -> Any:
    inbox = security.inbox()
    try:
        found = inbox.message(guid)
    except BridgeError as error:
        return _error(404, error.note)
    return _render("inbox/message.html", m=found, deliveries=inbox.deliveries(guid))


@bp.get("/inbox/phones/<account>/<number>")
@_guarded(inbox_on)
def phone(account: str, number: str) -> Any:
    inbox = security.inbox()
    region = runtime().settings.default_region
    conversation: dict | None = None
    # Each log is read once per request, whichever origins are looked at (each look asks for both).
    sent_log = functools.cache(lambda: inbox.sent_log(account))
    received_sms = functools.cache(lambda: inbox.received_sms(account))
    try:
        for origin in ("sent", "received"):
            answer = conversations(
                sent_log, received_sms, {"origineConversation": origin, "numero": number}, region
            )
            if answer["conversations"]:
                conversation = answer["conversations"][0]
                break
        whatsapp = inbox.whatsapp_from(account, number)
    except BridgeError as error:
        return _error(400, error.note)
    return _render(
        "inbox/phone.html",
        account=account,
        number=number,
        client=inbox.client_of(account),
        conversation=conversation,
        whatsapp=whatsapp,
    )


@bp.get("/inbox/accounts/<account>")
@_guarded(inbox_on)
def account(account: str) -> Any:
    inbox = security.inbox()
    return _render(
        "inbox/account.html", account=account, client=inbox.client_of(account), **inbox.extras(account)
    )


@bp.get("/console")
@_guarded(console_on)
def console() -> Any:
    inbox = security.inbox()
    return _render(
        "inbox/console.html",
        backends=inbox.backends(),
        queue=inbox.queue(),
        dead=inbox.dead_events(),
        limits=recent.limit_use(),
        requests=recent.recent_requests(),
        worker=os.getpid(),
    )


@bp.route("/ui/login", methods=["GET", "POST"])
def login() -> Any:
    if not (inbox_on() or console_on()):
        abort(404)
    if not security.host_served():
        return _misdirected()
    target = security.safe_next(request.values.get("next"))
    if not security.password_required():
        return redirect(target, 303)
    note = ""
    if request.method == "POST":
        if not security.csrf_ok():
            note = "This form expired: try again."
        elif security.password_matches(request.form.get("password", "")):
            security.sign_in()
            return redirect(target, 303)
        else:
            note = "Wrong password."
    return _render("inbox/login.html", target=target, note=note, poll_ms=0), 401 if note else 200


@bp.post("/ui/logout")
@_guarded(lambda: inbox_on() or console_on(), post=True)
def logout() -> Any:
    security.sign_out()
    return redirect(url_for("inbox.login"), 303)


# --- buttons -------------------------------------------------------------------------------------------


@bp.post("/ui/messages/<guid>/fail")
@_guarded(inbox_on, post=True)
def fail(guid: str) -> Any:
    try:
        security.inbox().fail(guid, request.form.get("error", "").strip()[:200] or "failed")
    except BridgeError as error:
        return _error(error.http_status, error.note)
    return _back()


@bp.post("/ui/messages/<guid>/deliver")
@_guarded(inbox_on, post=True)
def deliver(guid: str) -> Any:
    try:
        security.inbox().deliver(guid)
    except BridgeError as error:
        return _error(error.http_status, error.note)
    return _back()


@bp.post("/ui/messages/<guid>/resend")
@_guarded(inbox_on, post=True)
def resend(guid: str) -> Any:
    try:
        security.inbox().resend(guid)
    except BridgeError as error:
        return _error(error.http_status, error.note)
    return _back()


@bp.post("/ui/phones/<account>/<number>/reply")
@_guarded(inbox_on, post=True)
def reply(account: str, number: str) -> Any:
    text = request.form.get("text", "")
    if not text.strip():
        return _error(400, "Write the reply first.")
    channel = request.form.get("channel", "sms")
    try:
        security.inbox().reply(account, number, text, channel if channel in CHANNELS else "sms")
    except BridgeError as error:
        return _error(error.http_status, error.note)
    return _back()


@bp.post("/ui/events/<event_id>/replay")
@_guarded(console_on, post=True)
def replay(event_id: str) -> Any:
    if not security.inbox().replay(event_id):
        return _error(404, "No dead event has that id (it may have been replayed already).")
    return _back()


# --- template helpers ----------------------------------------------------------------------------------


@bp.app_template_filter("when")
def when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S")


def init_app(app: Flask) -> None:
    """Serve the inbox and the console, and keep recent requests for the console."""
    app.register_blueprint(bp)
    request_log.on_request(recent.observe)
