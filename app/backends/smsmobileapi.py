"""The vendor's own API, passed through: same path, same parameters, its answer unchanged.

Three things are not passed as they came. A path that could leave the configured base URL, or change
the URL around it, is refused (`upstream_path`). Hop-by-hop and framing headers of the answer are
dropped, and a redirect onto the vendor's base comes back pointing at the bridge (SMSBRIDGE_PUBLIC_URL).
With a credential the operator holds (a managed client's upstream key, a failover key), the call may go
only to the vendor's documented endpoints, and the key is masked wherever the answer quotes it.

The vendor's webhooks (V1's flat payload, V2's signed `{id, type, data}` envelope) are read here too
(`verify_webhook`, `webhook_event`); app/fronts/webhook_sources.py serves the URL they are posted to.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import html
import json
import re
import time
import unicodedata
import uuid
import zlib
from urllib.parse import SplitResult, quote, urlencode, urljoin, urlsplit

from app.backends.base import Backend, Headers, WebhookEvent
from app.config import Settings
from app.errors import (
    BackendBadAnswer,
    BackendBadJson,
    BackendFailed,
    BridgeError,
    CallerError,
    CredentialRefused,
    InvalidParameter,
    NotAllowed,
    UpstreamRateLimited,
)
from app.upstream import MAX_ANSWER_BYTES, Answer, UpstreamHttp
from app.vocabulary import (
    MASKED_SECRET,
    Credential,
    CredentialSource,
    HttpCall,
    SendOptions,
    SendReceipt,
    SendRequest,
    UpstreamReply,
    unix_seconds,
)

#: upstream headers never handed on: hop-by-hop ones (RFC 9110 7.6.1, and any the answer's Connection
#: names); the body's framing and type, which the bridge's server sets for the body as it leaves; Date and
#: Server, which gunicorn writes itself (a second copy would contradict it); Set-Cookie, whose Domain and
#: Path are the vendor's and which, made for the operator's key, would be the operator's session; Alt-Svc,
#: which would send the caller's next requests to the vendor's other endpoints as if they were the bridge's
DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "content-type",
        "date",
        "server",
        "set-cookie",
        "set-cookie2",
        "alt-svc",
    }
)
#: the vendor's documented endpoints (its OpenAPI file of 2026-09-23, its API docs and its Postman
#: collection), without the trailing slash that clients both use and omit: the only paths a call made
#: with a credential the operator holds may reach
DOCUMENTED_PATHS = frozenset(
    {
        "/sendsms",
        "/getsms",
        "/getsms/set-read",
        "/getsms/update",
        "/deletesms",
        "/resend",
        "/log/sent/sms",
        "/log/sent/frommobile",
        "/conversation/sms/list",
        "/gateway/mobile/list",
        "/gateway/mobile/update",
        "/gateway/mobile/delete",
        "/call/missed/list",
        "/call/incoming/list",
        "/call/outgoing/list",
        "/notification/send",
        "/notification/list",
        "/resendwa",
        "/getwa",
        "/getwa/active",
        "/getwa/synchronisation",
        "/whatsapp/checknumber",
        "/sendemail",
        "/getemail",
    }
)
#: characters a path segment keeps as they are (RFC 3986 pchar); everything else is %-encoded
_SEGMENT_SAFE = "!$&'()*+,;=:@~"
#: encodings of an answer body the bridge undoes (zlib's window bits for each), to hand on and mask the body
#: (deflate: zlib-wrapped as RFC 9110 says, or raw DEFLATE as some servers send it)
_DECODERS = {
    "gzip": (16 + zlib.MAX_WBITS,),
    "x-gzip": (16 + zlib.MAX_WBITS,),
    "deflate": (zlib.MAX_WBITS, -zlib.MAX_WBITS),
}
#: a V2 webhook's timestamp further off than this is refused, as the vendor's receivers do
MAX_SKEW_SECONDS = 300


class SmsMobileApiBackend(Backend):
    """Forward SMSMobileAPI calls to the configured vendor URL and return its answers."""

    name = "smsmobileapi"
    passes_through = True
    receives_webhooks = True

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
        if _is_refusal(fields):
            raise _refusal_for(reply, fields)
        return SendReceipt(
            message_ids=(str(fields.get("id", "")),),
            note=str(fields.get("note", "")),
            port=None if fields.get("port") is None else str(fields["port"]),
            via_whatsapp=str(fields.get("send_with_whatsapp", "0")) == "1",
            encrypted=_encrypted(fields.get("encrypted")),
            upstream_fields=fields,
            verbatim=reply,
        )

    def forward(self, call: HttpCall, credential: Credential | None) -> UpstreamReply:
        """Make `call` upstream with `credential` put back where the caller had it."""
        target = upstream_path(call.path)
        hidden = credential is not None and credential.operator_held
        if hidden and call.path.rstrip("/") not in DOCUMENTED_PATHS:
            raise NotAllowed(
                f"{call.path[:80]} is not one of SMSMobileAPI's documented endpoints, "
                "which are all this bridge's clients may call"
            )
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
        url = self.base_url + target
        if query:
            url += "?" + urlencode(query)
        answer = self.http.request(call.method, url, data=body, headers=headers)
        reply = self._reply(answer, url, credential.secret if hidden and credential else None)
        if reply.status >= 500 and not _is_json(reply.body):
            raise _error_for(reply, None)
        if reply.status == 429 and not _is_json(reply.body):
            raise _error_for(reply, None)
        return reply

    def _reply(self, answer: Answer, url: str, hidden: str | None) -> UpstreamReply:
        """Keep what the caller may see of an answer: its body and its end-to-end headers.

        With `hidden`, the operator's credential, every form of it in the body and the headers is masked.
        """
        body = answer.content
        encoding = answer.headers.get("Content-Encoding", "").strip().lower()
        kept_encoding = ""
        if encoding in _DECODERS:
            try:
                body = _inflated(body, _DECODERS[encoding])
            except zlib.error:
                # The HTTP client never decodes (decode_content=False): this body is still encoded, in a
                # form the bridge cannot read, and the credential may be inside it.
                if hidden:
                    raise BackendBadAnswer(
                        f"SMSMobileAPI answered a {encoding} body that does not decode, which the bridge "
                        "cannot read to keep the operator's credential out of it; the request may have "
                        "been acted on"
                    ) from None
                kept_encoding = encoding
        elif encoding not in ("", "identity"):
            if hidden:
                raise BackendBadAnswer(
                    f"SMSMobileAPI answered with Content-Encoding {encoding[:40]}, which the bridge cannot "
                    "read to keep the operator's credential out of it; the request may have been acted on"
                )
            kept_encoding = encoding  # the caller can decode what the bridge cannot
        forms = _secret_forms(hidden) if hidden else None
        content_type = answer.headers.get("Content-Type", "application/octet-stream")
        hop_by_hop = {n.strip().lower() for n in answer.headers.get("Connection", "").split(",")}
        headers: list[tuple[str, str]] = []
        for name, value in answer.headers.items():
            lowered = name.lower()
            if lowered in DROPPED_HEADERS or lowered in hop_by_hop:
                continue
            if lowered == "location":
                value = self._public_location(value, url)
            headers.append((_header_name(name), _masked_text(value, forms)))
        if kept_encoding:
            headers.append(("Content-Encoding", kept_encoding))
        return UpstreamReply(
            status=answer.status_code,
            content_type=_masked_text(content_type, forms),
            body=_masked(body, forms),
            headers=tuple(headers),
        )

    def _public_location(self, location: str, url: str) -> str:
        """Return a redirect's target as the caller must follow it: through the bridge when on the base."""
        try:
            target = urlsplit(urljoin(url, location))
        except ValueError:  # not a URL the bridge can read (a broken IPv6 host): handed on as it came
            return location
        base = urlsplit(self.base_url)
        prefix = base.path.rstrip("/")
        same_origin = (target.scheme, target.hostname, _port(target)) == (
            base.scheme,
            base.hostname,
            _port(base),
        )
        if not same_origin or not (target.path == prefix or target.path.startswith(prefix + "/")):
            # Elsewhere (the vendor's web site, say): absolute, since the caller resolves a relative
            # target against the bridge, whose paths map to the base only.
            return target.geturl()
        public = self.settings.public_url.rstrip("/") + (target.path[len(prefix) :] or "/")
        if target.query:
            public += "?" + target.query
        return public + ("#" + target.fragment if target.fragment else "")

    # --- the vendor's webhooks ------------------------------------------------------------------------

    @classmethod
    def verify_webhook(cls, body: bytes, headers: Headers, secret: str) -> None:
        """Check a V2 post's `X-SMSMobileAPI-Signature` (HMAC-SHA256 of "timestamp.body") when signed.

        Without a configured secret, V1 posts (unsigned) are taken as they come.
        """
        if not secret:
            return
        timestamp = headers.get("X-SMSMobileAPI-Timestamp", "")
        signature = headers.get("X-SMSMobileAPI-Signature", "")
        expected = (
            "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        fresh = (
            timestamp.isascii()
            and timestamp.isdigit()
            and len(timestamp) <= 12  # int() refuses over 4,300 digits: a 500; a Unix time has 10
            and abs(time.time() - int(timestamp)) <= MAX_SKEW_SECONDS
        )
        # As bytes: compare_digest refuses str with a character past ASCII (a header's Latin-1 byte).
        if not fresh or not hmac.compare_digest(signature.encode(), expected.encode()):
            raise CredentialRefused("the vendor webhook's signature or timestamp does not verify")

    @classmethod
    def webhook_event(cls, document: dict, headers: Headers) -> WebhookEvent | None:
        """Map the vendor's V2 envelope, or its V1 payload, to an event; its V2 event id is kept."""
        given = headers.get("X-SMSMobileAPI-Event-ID", "") or document.get("id") or ""
        if "type" in document and isinstance(document.get("data"), dict):
            data = dict(document["data"])
            if isinstance(data.get("received_at"), str):
                data["received_at"] = _webhook_time(data["received_at"]) or int(time.time())
            return WebhookEvent(str(document["type"]), data, _uuid(str(given)))
        if "number" in document and "message" in document:
            when = f"{document.get('date', '')} {document.get('hour', '')}".strip()
            data = {
                "guid": str(document.get("guid") or ""),
                "from": str(document["number"]),
                "message": str(document["message"]),
                "received_at": _webhook_time(when) or int(time.time()),
                "alias": None,
                "device_id": "",
            }
            return WebhookEvent("sms.received", data, _uuid(str(given)))
        return None


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _webhook_time(value: object) -> int:
    return unix_seconds(value) or 0


def upstream_path(path: str) -> str:
    """Return `path` (as the caller's server decoded it) with each segment %-encoded for the upstream.

    Refuse, as the caller's error, a path the upstream could read as leaving the base or as more than
    a path: a `.` or `..` segment, a `%` left after decoding (double encoding, `%252e`), `?`, `#`, a
    backslash, a control character.
    """
    segments = path.split("/")
    if segments[0] != "":
        raise InvalidParameter("the path must start with /")
    for segment in segments[1:]:
        if segment.split(";", 1)[0] in (".", "..") or any(
            c in "%?#\\" or unicodedata.category(c) == "Cc" for c in segment
        ):
            shown = segment.encode("unicode_escape").decode()[:40]
            raise InvalidParameter(
                f"the path segment {shown!r} is not allowed: a path may not hold . or .. segments, "
                "%-encoded characters after decoding, ?, #, backslashes or control characters"
            )
    return "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in segments)


def _inflated(body: bytes, window_bits: tuple[int, ...]) -> bytes:
    """Return a compressed body decoded, refusing one that would grow past what the bridge reads.

    Raise zlib.error when no form in `window_bits` decodes it whole (a bad check value included).
    """
    for bits in window_bits:
        inflater = zlib.decompressobj(bits)
        try:
            decoded = inflater.decompress(body, MAX_ANSWER_BYTES)
        except zlib.error:
            continue
        if inflater.eof or inflater.unconsumed_tail:
            break
    else:
        raise zlib.error("the body does not decode")
    if inflater.unconsumed_tail:
        raise BackendBadAnswer(
            f"SMSMobileAPI answered a compressed body of over {MAX_ANSWER_BYTES} bytes; "
            "the request may have been acted on"
        )
    return decoded


def _header_name(name: str) -> str:
    """Return a header name in its usual case when the HTTP client gave it in lower case."""
    if not name.islower():
        return name
    return "-".join(_IRREGULAR_NAME_PARTS.get(part, part.capitalize()) for part in name.split("-"))


#: parts of header names whose usual case is not capitalised
_IRREGULAR_NAME_PARTS = {"www": "WWW", "etag": "ETag", "md5": "MD5", "id": "ID", "xss": "XSS"}


def _port(parts: SplitResult) -> int | None:
    try:
        port = parts.port
    except ValueError:  # not a number: no origin to match
        return None
    return port or {"http": 80, "https": 443}.get(parts.scheme)


@functools.lru_cache(maxsize=64)
def _secret_forms(secret: str) -> re.Pattern[bytes]:
    """Return a pattern matching `secret` however an answer quotes it, one character at a time.

    Each character in any of its forms, mixed as encoders mix them: raw UTF-8 or Latin-1; JSON's
    \\uXXXX (either case), \\/ and its other escapes; %XX (either case) or + for a space; HTML's
    entities. The whole key in base64 (standard or URL-safe) too.
    """
    parts = []
    for c in secret:
        utf8 = c.encode()
        forms = {re.escape(utf8), re.escape(json.dumps(c)[1:-1].encode()), re.escape(html.escape(c).encode())}
        with contextlib.suppress(UnicodeEncodeError):
            forms.add(re.escape(c.encode("latin-1")))
        if ord(c) < 0x10000:
            forms.add(b"\\\\u(?i:%04x)" % ord(c))
        forms.add(b"(?i:" + b"".join(b"%%%02x" % byte for byte in utf8) + b")")
        forms.add(b"&#0*%d;" % ord(c))
        forms.add(b"&#(?i:x0*%x);" % ord(c))
        if c == " ":
            forms.add(rb"\+")
        if c == "/":
            forms.add(rb"\\/")
        longest_first: list[bytes] = sorted(forms, key=len, reverse=True)
        parts.append(b"(?:" + b"|".join(longest_first) + b")")
    whole = [
        re.escape(encode(secret.encode()).rstrip(b"="))
        for encode in (base64.b64encode, base64.urlsafe_b64encode)
    ] + [re.escape(secret.encode(wide)) for wide in ("utf-16-le", "utf-16-be")]
    return re.compile(b"|".join([b"".join(parts), *whole]))


def _masked(data: bytes, forms: re.Pattern[bytes] | None) -> bytes:
    return data if forms is None else forms.sub(MASKED_SECRET.encode(), data)


def _masked_text(text: str, forms: re.Pattern[bytes] | None) -> str:
    # Header values come decoded as Latin-1 (HTTP's own): their bytes, a key's UTF-8 included.
    return text if forms is None else _masked(text.encode("latin-1"), forms).decode("latin-1")


def _with_json_apikey(body: bytes | str, secret: str) -> bytes | str:
    """Put `secret` as the apikey of a JSON object body (the one the caller's key came in)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
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


def _encrypted(field: object) -> bool:
    """Read `result.encrypted` (`{"status": "1"}`), whatever shape an answer gives it."""
    return isinstance(field, dict) and str(field.get("status", "0")) == "1"


def _result_fields(reply: UpstreamReply) -> dict | None:
    """Return the `result` object of a JSON answer, or None when there is none."""
    try:
        document = json.loads(reply.body)
    except (ValueError, RecursionError):
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
    elif 300 <= reply.status < 400:
        # A redirect is answered before the call is acted on: the caller follows it through the bridge.
        error = CallerError(
            f"SMSMobileAPI redirected the request (HTTP {reply.status}) instead of acting on it"
        )
        # Whether it acted first (a 303 after a POST) cannot be told: an Idempotency-Key keeps this
        # answer, so a repeat gets the redirect again and never a second send.
        error.nothing_sent = False
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
    # A redirect goes back as it came too, with its Location made to point through the bridge.
    redirect = 300 <= reply.status < 400
    error.verbatim = reply if redirect or (_is_json(reply.body) and not 200 <= reply.status < 300) else None
    return error


def _is_refusal(fields: dict) -> bool:
    """Tell whether a 2xx send result is the vendor's "documented application error": `error` not 0, not sent.

    The vendor's OpenAPI answers a refused send with 200 as well as with 4xx ("Message accepted or a
    documented application error returned").
    """
    error = fields.get("error")
    if error is None or error is False or str(error).strip().lower() in ("", "0", "false"):
        return False
    return str(fields.get("sent", "")).strip() != "1"


def _refusal_for(reply: UpstreamReply, fields: dict) -> BridgeError:
    """Say what a 2xx refusal means, as the same refusal with a 4xx would: a refused key, or the call."""
    said = _vendor_words(reply, fields)
    error: BridgeError
    # result.iac_authorized: "1 means the API key is authorized to use this endpoint".
    if str(fields.get("iac_authorized", "")).strip() == "0" or "key" in said.lower():
        error = CredentialRefused(f"SMSMobileAPI refused the API key{said}")
    else:
        error = CallerError(f"SMSMobileAPI refused the request{said}")
    # The REST caller gets the vendor's answer unchanged, as before; SOAP has no such answer: a fault.
    error.verbatim = reply
    return error


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def _vendor_words(reply: UpstreamReply, fields: dict | None) -> str:
    try:
        document = json.loads(reply.body)
    except (ValueError, RecursionError):
        return ""
    words = None
    if isinstance(document, dict):
        words = document.get("message") or document.get("note")
    if words is None and fields:
        words = fields.get("note") or fields.get("message")
    return f": {str(words)[:200]}" if words else ""


def _retry_after(reply: UpstreamReply) -> int | None:
    value = next((v for n, v in reply.headers if n.lower() == "retry-after"), "").strip()
    return int(value) if value.isdigit() else None
