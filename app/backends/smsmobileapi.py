"""The vendor's own API, passed through: same path, same parameters, its answer unchanged."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from app.backends.base import Backend
from app.config import Settings
from app.errors import (
    BackendBadAnswer,
    BackendBadJson,
    BackendFailed,
    BridgeError,
    CallerError,
    CredentialRefused,
    UpstreamRateLimited,
)
from app.upstream import Answer, UpstreamHttp
from app.vocabulary import (
    Credential,
    CredentialSource,
    HttpCall,
    SendOptions,
    SendReceipt,
    SendRequest,
    UpstreamReply,
)

#: upstream headers a passthrough hands on besides the body's type
PASSED_HEADERS = ("Retry-After", "Cache-Control", "Pragma", "WWW-Authenticate")


class SmsMobileApiBackend(Backend):
    """Forward SMSMobileAPI calls to the configured vendor URL and return its answers."""

    name = "smsmobileapi"
    passes_through = True

    def __init__(self, settings: Settings, http: UpstreamHttp | None = None) -> None:
        super().__init__(settings)
        self.base_url = settings.smsmobileapi_url.rstrip("/")
        self.http = http or UpstreamHttp(settings, self.name)

    def send(self, request: SendRequest) -> SendReceipt:
        """Forward the send (the caller's REST call as made, or a form POST for SOAP)."""
        call = request.http or _form_post("/sendsms/", request)
        reply = self.forward(call, request.credential)
        fields = _result_fields(reply)
        if not 200 <= reply.status < 300 or fields is None:
            raise _error_for(reply, fields)
        return SendReceipt(
            message_ids=(str(fields.get("id", "")),),
            note=str(fields.get("note", "")),
            port=None if fields.get("port") is None else str(fields["port"]),
            via_whatsapp=str(fields.get("send_with_whatsapp", "0")) == "1",
            encrypted=str((fields.get("encrypted") or {}).get("status", "0")) == "1",
            upstream_fields=fields,
            verbatim=reply,
        )

    def forward(self, call: HttpCall, credential: Credential | None) -> UpstreamReply:
        """Make `call` upstream with `credential` put back where the caller had it."""
        query, form, headers = list(call.query), list(call.form), {}
        body: bytes | str | None = call.body
        if credential is None:
            pass
        elif credential.source is CredentialSource.BEARER:
            headers["Authorization"] = f"Bearer {credential.secret}"
        elif credential.source is CredentialSource.QUERY:
            query.insert(0, ("apikey", credential.secret))
        elif body is None:
            form.insert(0, ("apikey", credential.secret))
        else:
            body = _with_json_apikey(body, credential.secret)
        if call.authorization and "Authorization" not in headers:
            headers["Authorization"] = call.authorization
        if body is not None:
            # Not a form (JSON, say): forwarded as it came, with the credential put back inside it.
            headers["Content-Type"] = call.content_type
        elif form or call.method not in ("GET", "HEAD", "DELETE"):
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        url = self.base_url + call.path
        if query:
            url += "?" + urlencode(query)
        reply = _reply(self.http.request(call.method, url, data=body, headers=headers))
        if reply.status >= 500 and not _is_json(reply.body):
            raise _error_for(reply, None)
        if reply.status == 429 and not _is_json(reply.body):
            raise _error_for(reply, None)
        return reply


def _with_json_apikey(body: bytes | str, secret: str) -> bytes | str:
    """Put `secret` as the apikey of a JSON object body (the one the caller's key came in)."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict) or document.get("apikey") == secret:
        return body
    document["apikey"] = secret
    return json.dumps(document, ensure_ascii=False).encode()


def _form_post(path: str, request: SendRequest) -> HttpCall:
    """Build the form POST the vendor's PHP SDK would make for `request`."""
    form = [("recipients", ",".join(request.recipients)), ("message", request.message)]
    for name in SendOptions.names():
        value = getattr(request.options, name)
        if value:
            form.append((name, value))
    return HttpCall(method="POST", path=path, query=(), form=tuple(form))


def _reply(response: Answer) -> UpstreamReply:
    headers = tuple((h, response.headers[h]) for h in PASSED_HEADERS if h in response.headers)
    return UpstreamReply(
        status=response.status_code,
        content_type=response.headers.get("Content-Type", "application/octet-stream"),
        body=response.content,
        headers=headers,
    )


def _result_fields(reply: UpstreamReply) -> dict | None:
    """Return the `result` object of a JSON answer, or None when there is none."""
    try:
        document = json.loads(reply.body)
    except ValueError:
        return None
    result = document.get("result") if isinstance(document, dict) else None
    return result if isinstance(result, dict) else None


def _error_for(reply: UpstreamReply, fields: dict | None) -> BridgeError:
    """Say what an answer that is not a readable success means, keeping the answer itself."""
    said = _vendor_words(reply, fields)
    error: BridgeError
    if reply.status in (401, 403):
        error = CredentialRefused(f"SMSMobileAPI refused the API key{said}")
    elif reply.status == 429:
        error = UpstreamRateLimited(
            f"SMSMobileAPI says too many requests{said}",
            retry_after=_retry_after(reply),
        )
    elif 400 <= reply.status < 500:
        error = CallerError(f"SMSMobileAPI refused the request (HTTP {reply.status}){said}")
    elif reply.status >= 500:
        error = BackendFailed(
            f"SMSMobileAPI answered with a server error, HTTP {reply.status}; the message may have been "
            "sent: check the sent log before sending it again"
        )
    elif _is_json(reply.body):
        error = BackendBadAnswer(
            f"SMSMobileAPI answered HTTP {reply.status} with JSON of an unexpected shape (no result); "
            "the message may have been sent: check the sent log before sending it again"
        )
    else:
        error = BackendBadJson(
            f"SMSMobileAPI answered HTTP {reply.status} with a body that is not JSON, or is cut short; "
            "the message may have been sent: check the sent log before sending it again"
        )
    # The vendor's own JSON error goes back to a REST caller unchanged; an HTML error page never does,
    # nor a success the bridge cannot read (the caller must learn that the outcome is unknown).
    error.verbatim = reply if _is_json(reply.body) and not 200 <= reply.status < 300 else None
    return error


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _vendor_words(reply: UpstreamReply, fields: dict | None) -> str:
    try:
        document = json.loads(reply.body)
    except ValueError:
        return ""
    words = None
    if isinstance(document, dict):
        words = document.get("message") or document.get("note")
    if words is None and fields:
        words = fields.get("note") or fields.get("message")
    return f": {str(words)[:200]}" if words else ""


def _retry_after(reply: UpstreamReply) -> int | None:
    value = dict(reply.headers).get("Retry-After", "")
    return int(value) if value.isdigit() else None
