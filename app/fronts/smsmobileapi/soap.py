"""The SMSMobileAPI SOAP dialect: `sendSms(recipients, message, apikey)`, served by spyne in a Flask view.

Running spyne inside a view (not as WSGI middleware) puts SOAP behind everything Flask applies to a
request: body size limit, error handlers, and later rate limits and the request log. The WSDL is the
file `wsdl/sendsms.wsdl`, with its address set once from SMSBRIDGE_PUBLIC_URL, never from the Host
header.

A call's envelope is parsed once, with lxml and no DTD, entities or network, before anything else
(the limiter reads its apikey from the tree); spyne then reads that tree written out again. An
envelope that does not parse is a Client fault before the limiter counts anything.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import hashlib
import io
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from xml.parsers import expat
from xml.sax.saxutils import escape

from flask import Blueprint, Flask, Response, current_app, request
from lxml import etree
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header

# Before spyne: on Python 3.12+ spyne 2.14 imports only with this stand-in for its vendored six.
from app import spyne_compat  # noqa: F401

# isort: split
from spyne import Application, ComplexModel, Integer, ServiceBase, Unicode, const, rpc
from spyne.model.fault import Fault
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from app.errors import BridgeError
from app.fronts.request_log import note_outcome, note_recipients
from app.fronts.smsmobileapi.dialect import RESULT_FIELDS, check_key, require, send_result, split_recipients
from app.service import current, deliver, requested_key, runtime, storage_unavailable
from app.vocabulary import Credential, CredentialSource, SendRequest

log = logging.getLogger(__name__)

TNS = "urn:smsbridge:sendsms"
WSDL_FILE = Path(__file__).resolve().parents[3] / "wsdl" / "sendsms.wsdl"
WSDL_PATH = "/sendsms/wsdl/sendsms.wsdl"
ENDPOINT_PATH = "/sendsms/soap/"
_SOAP11_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
_SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
#: the most children of sendSms, and attributes on one of its elements, a call may have (it needs 3)
MAX_PARTS = 32

bp = Blueprint("soap", __name__)

_INTERNAL_ERROR = (
    "Server.InternalError",
    "smsbridge failed unexpectedly; the operator's log has the details",
)


class Encrypted(ComplexModel):
    """`result.encrypted`."""

    __namespace__ = TNS
    _type_info = (("status", Unicode),)


class TrialAccount(ComplexModel):
    """`result.trial_account`."""

    __namespace__ = TNS
    _type_info = (("status", Unicode), ("sms_sent", Integer))


_RESULT_TYPES = {"encrypted": Encrypted, "trial_account": TrialAccount}


class SendSmsService(ServiceBase):
    """The vendor's SOAP service: one operation, sendSms."""

    # The single message part must be named "parameters", or nusoap (wsdl=true) sends an empty
    # <sendSms/> and reports nothing.
    @rpc(
        Unicode,
        Unicode,
        Unicode,
        _returns=tuple(_RESULT_TYPES.get(name, Unicode) for name in RESULT_FIELDS),
        _out_variable_names=RESULT_FIELDS,
        _wsdl_part_name="parameters",
    )
    def sendSms(ctx, recipients, message, apikey):  # noqa: N802, N805 (the WSDL's names)
        """Send `message` to the comma-separated `recipients`; answer the REST result's fields."""
        context = current()
        context.soap_operation = "sendSms"
        try:
            key = check_key(require("apikey", apikey))
            if context.principal is not None and context.principal_key == key:
                caller = context.principal  # resolved for this key before the idempotency claim
            else:
                caller = runtime().access.resolve(Credential(key, CredentialSource.SOAP))
            context.principal = caller
            send = SendRequest(
                credential=caller.upstream,
                recipients=split_recipients(recipients or ""),
                message=require("message", message),
                reference=context.request_id,
            )
            note_recipients(send.recipients)
            result = send_result(deliver(caller, send, runtime().breaker))
        except BridgeError as error:
            raise _fault(error) from None
        except sqlite3.OperationalError as error:
            # The bridge's own data failed (a store without its own answer for it): retry, nothing sent.
            log.error("the bridge's data failed in SOAP sendSms: %s", error)
            raise _fault(storage_unavailable(error)) from None
        except Exception:
            log.exception("unexpected error in SOAP sendSms")
            note_outcome("internal_error")
            raise Fault(*_INTERNAL_ERROR) from None
        return tuple(_soap_value(name, result.get(name)) for name in RESULT_FIELDS)


def _fault(error: BridgeError) -> Fault:
    """Return the SOAP fault of a bridge error, noting the outcome (and Retry-After, for the answer)."""
    note_outcome(error.name)
    context = current()
    context.nothing_sent = error.nothing_sent
    if error.retry_after is not None:
        context.soap_retry_after = error.retry_after
    note = error.note
    if getattr(error, "outcome_unknown", False):
        note += f" (reference: {context.request_id})"
    return Fault(faultcode=error.fault_code, faultstring=note)


def _soap_value(name: str, value: object) -> object:
    model = _RESULT_TYPES.get(name)
    if model is not None:
        return model(**value) if isinstance(value, dict) else None
    return None if value is None else str(value)


def build_soap_app() -> WsgiApplication:
    """Return spyne's WSGI application for the service."""
    # spyne runs gc.collect() after a call at most once a second (MIN_GC_INTERVAL), to close file
    # descriptors of uploads this service never has; under load each collection stalls a worker for
    # about 50 ms. Python's own collector is enough.
    const.MIN_GC_INTERVAL = float("inf")
    application = Application(
        [SendSmsService],
        tns=TNS,
        name="sendsms",
        in_protocol=_ParsedOnceSoap11(validator="soft"),
        out_protocol=Soap11(),
    )
    # spyne makes the answer of sendSms from a class it "customized" (the tuple of fields above), and
    # on every answer that class's constructor formats the whole stack for a debug line, about 5% of a
    # SOAP send's CPU. Built, the class no longer needs to know its origin: the answer is the same.
    SendSmsService.public_methods["sendSms"].out_message.__orig__ = None
    return WsgiApplication(application)


def build_wsdl(public_url: str) -> bytes:
    """Return the contract with its soap:address pointing at `public_url`."""
    tree = etree.parse(str(WSDL_FILE), etree.XMLParser(resolve_entities=False, no_network=True))
    for address in tree.iter(f"{{{_SOAP11_NS}}}address"):
        address.set("location", public_url.rstrip("/") + ENDPOINT_PATH)
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


@bp.get(WSDL_PATH)
@bp.get(ENDPOINT_PATH, strict_slashes=False)
def wsdl() -> Response:
    """Serve the WSDL."""
    return Response(_state().wsdl, content_type="text/xml; charset=utf-8")


@bp.post(WSDL_PATH)
@bp.post(ENDPOINT_PATH, strict_slashes=False)
def endpoint() -> Response:
    """Serve a SOAP call (also at the WSDL's own URL, where nusoap posts when wsdl=false)."""
    try:
        envelope = request_envelope()
    except EnvelopeRefused as refused:
        return fault_response(refused.code, refused.note)
    environ = dict(request.environ)
    # spyne reads the tree parsed here (_ParsedOnceSoap11), not the body again: no second parse, and
    # exactly what the limiter read.
    environ[_PARSED_ENVELOPE] = envelope.root
    environ["wsgi.input"] = io.BytesIO(b"")
    environ["CONTENT_LENGTH"] = "0"
    environ["CONTENT_TYPE"] = request.mimetype or "text/xml"
    key = requested_key()
    if key is None:
        return _call_spyne(environ)
    _resolve_caller(envelope.apikey)
    # The same envelope from the same client is the same send; parsed and written again, it is canonical.
    digest = hashlib.sha256(envelope.document()).hexdigest()
    client = current().limit_key or request.remote_addr or ""
    return runtime().idempotency.run(client, key, digest, lambda: _call_spyne(environ))


def _resolve_caller(apikey: str | None) -> None:
    """Resolve the caller before its key is claimed: a caller with a failover backend is held longer.

    A key refused here is refused again, in the dialect, when spyne runs sendSms (nothing is sent).
    """
    context = current()
    if apikey is None or context.principal is not None:
        return
    with contextlib.suppress(BridgeError):
        key = check_key(apikey)
        context.principal = runtime().access.resolve(Credential(key, CredentialSource.SOAP))
        context.principal_key = key  # sendSms reuses the caller resolved for this very key


@dataclass(frozen=True)
class Envelope:
    """A SOAP call's envelope, parsed once: the limiter reads its key, spyne the same tree."""

    #: the parsed envelope
    root: etree._Element
    #: sendSms's apikey as the XML parser read it (character references, CDATA, comments removed)
    apikey: str | None

    def document(self) -> bytes:
        """Return the envelope written out again as UTF-8: one form for any spelling of the same call."""
        return etree.tostring(self.root, xml_declaration=True, encoding="UTF-8")


#: where the endpoint hands spyne the parsed envelope, in the WSGI environ spyne's context keeps
_PARSED_ENVELOPE = "smsbridge.soap_envelope"


class _ParsedOnceSoap11(Soap11):
    """spyne's SOAP 1.1, reading the envelope the endpoint parsed (safely, once) instead of the body."""

    def create_in_document(self, ctx, charset=None):
        root = ctx.transport.req_env.get(_PARSED_ENVELOPE)
        if root is None:
            super().create_in_document(ctx, charset)
            return
        # No ids: references (href) were refused when the envelope was read.
        ctx.in_document = (root, {})


class EnvelopeRefused(Exception):
    """The body is no SOAP envelope the bridge reads: a Client fault, before any other work."""

    def __init__(self, code: str, note: str) -> None:
        super().__init__(note)
        self.code = code
        self.note = note


def request_envelope() -> Envelope:
    """Return this SOAP call's envelope (parsed once per request), or raise EnvelopeRefused."""
    context = current()
    found = context.soap_envelope
    if found is None:
        found = context.soap_envelope = _read_envelope()
    if isinstance(found, EnvelopeRefused):
        raise found
    return found


def refuse_bad_envelope() -> Response | None:
    """Answer a SOAP call whose body is no envelope with a Client fault, before the limiter counts it."""
    if request.method != "POST" or request.blueprint != bp.name:
        return None
    try:
        request_envelope()
    except EnvelopeRefused as refused:
        return fault_response(refused.code, refused.note)
    return None


def _read_envelope() -> Envelope | EnvelopeRefused:
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        limit = runtime().settings.max_body_bytes
        return EnvelopeRefused("Client.BodyTooLarge", f"the SOAP envelope is over {limit} bytes")
    if not body.strip():
        return EnvelopeRefused("Client.InvalidXml", "the request has no SOAP envelope")
    media_type = request.mimetype or "text/xml"
    if media_type.startswith("multipart/"):
        # MTOM and SOAP with attachments: sendSms has no attachment to carry, and spyne would read the
        # parts (their Content-IDs, their charsets) with code of its own. The envelope comes as it is.
        return EnvelopeRefused(
            "Client.UnsupportedMediaType",
            f"{media_type[:60]} is not accepted: post the SOAP envelope itself, as text/xml",
        )
    try:
        root = envelope_root(body, request.content_type or "text/xml")
    except CharsetRefused as exc:
        return EnvelopeRefused("Client.UnsupportedCharset", str(exc)[:300])
    except (etree.XMLSyntaxError, LookupError, ValueError) as exc:
        return EnvelopeRefused("Client.InvalidXml", f"the SOAP envelope is not well-formed XML: {exc}"[:300])
    docinfo = root.getroottree().docinfo
    doctype = docinfo.doctype  # type: ignore[attr-defined]  # lxml has it, lxml-stubs (0.5) do not
    if doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        return EnvelopeRefused("Client.InvalidXml", "a DOCTYPE or ENTITY is not allowed in a request")
    if root.find(".//*[@href]") is not None:
        # spyne resolves SOAP-encoded references (href="#id") itself: an apikey by reference would be
        # counted as one client and sent as another. This document/literal service needs none.
        return EnvelopeRefused("Client.InvalidXml", "references (href) are not accepted in a request")
    try:
        apikey = _apikey_of(root)
    except ValueError as exc:
        return EnvelopeRefused("Client.InvalidXml", str(exc))
    return Envelope(root, apikey)


def _apikey_of(root: etree._Element) -> str | None:
    """Return sendSms's apikey where spyne reads it: the first child of the first Body, by local name."""
    if root.tag != f"{{{_SOAP11_ENV}}}Envelope":
        return None
    body = root.find(f"{{{_SOAP11_ENV}}}Body")
    if body is None or len(body) == 0 or etree.QName(body[0]).localname != "sendSms":
        return None
    operation = body[0]
    # spyne reads every child of the operation and every attribute of each with lxml's attrib.items(),
    # which is quadratic: 20,000 attributes on one element cost a worker about a second.
    if len(operation) > MAX_PARTS or any(len(part.attrib) > MAX_PARTS for part in (operation, *operation)):
        raise ValueError(f"sendSms has more than {MAX_PARTS} parameters or attributes on one element")
    keys = [part for part in operation if etree.QName(part).localname == "apikey"]
    if len(keys) > 1:
        # Counted under one and sent under another, a client would choose its own count.
        raise ValueError("sendSms has more than one apikey")
    text = keys[0].text if keys else None
    return (text.strip() or None) if text else None


def _call_spyne(environ: dict) -> Response:
    try:
        # from_app builds the class it is called on: werkzeug's annotation names its own Response.
        response = cast(Response, Response.from_app(_state().soap_app, environ))
    except Exception:
        log.exception("spyne failed on a SOAP request")
        return fault_response(*_INTERNAL_ERROR)
    context = current()
    retry_after, context.soap_retry_after = context.soap_retry_after, None
    if retry_after is not None:
        # A fault worth retrying (storage trouble, a rate limit) says when, as the REST answer does.
        response.headers["Retry-After"] = str(retry_after)
    return response


def fault_response(code: str, string: str) -> Response:
    """Return a SOAP 1.1 Fault made by the bridge itself, before spyne has read the request."""
    context = current()
    if context.outcome is None:
        context.outcome = _fault_outcome(code)
    envelope = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        '<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/">'
        "<soap11env:Body><soap11env:Fault>"
        f"<faultcode>soap11env:{escape(code)}</faultcode>"
        f"<faultstring>{escape(string)}</faultstring>"
        "</soap11env:Fault></soap11env:Body></soap11env:Envelope>"
    )
    return Response(envelope, status=500, content_type="text/xml; charset=utf-8")


def _fault_outcome(code: str) -> str:
    """Return the log's outcome for a fault code: Client.BodyTooLarge -> body_too_large."""
    name = code.rpartition(".")[2]
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _parser(encoding: str | None) -> etree.XMLParser:
    # No DTD, no entities, no network, no huge trees; comments and processing instructions dropped.
    return etree.XMLParser(
        encoding=encoding,
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
    )


def envelope_root(body: bytes, content_type: str) -> etree._Element:
    """Parse an envelope in the encoding it is really written in; raise CharsetRefused or XMLSyntaxError.

    lxml reads a byte order mark, else the XML declaration's encoding (UTF-8 without one). Without a
    declaration, the Content-Type's charset says how to read the bytes. And nusoap (soap_defencoding's
    default) declares ISO-8859-1, in the declaration or the header, but sends PHP's strings as they are,
    which is UTF-8: read as declared, every non-ASCII character would arrive as mojibake, so a body said
    to be Latin-1 whose bytes are UTF-8 is read as UTF-8. One whose high bytes are not UTF-8 really is
    Latin-1.

    Every encoding named (charset, declaration, BOM) must be one Python knows and one that reads ASCII
    as ASCII (UTF-8, ISO-8859-*, windows-125*...), or UTF-16; and they must agree. UTF-7, EBCDIC
    (cp037...), UTF-32, the stateful ISO-2022 family and unknown names are refused: in them the same
    bytes are other characters (a DOCTYPE, say) for a reader that follows the name than for one that
    does not, and the answer must never depend on which one reads.
    """
    charset = parse_options_header(content_type)[1].get("charset")
    header = _accepted_codec(charset, "the Content-Type's charset") if charset else None
    bom = _bom_codec(body)
    if bom is not None:
        _check_bom(body, bom, charset, header)
        return etree.fromstring(body, _parser(None))  # read as its BOM says
    wide = body.startswith((b"<\x00", b"\x00<"))  # UTF-16 without a BOM, which libxml2 also detects so
    if header is not None and (header in _UTF16) != wide:
        raise CharsetRefused(
            f"the Content-Type says charset={(charset or '')[:40]}, which the body is not written in"
        )
    try:
        root = etree.fromstring(body, _parser(None))
    except etree.XMLSyntaxError:
        if charset is None or wide:
            raise
        return etree.fromstring(body, _parser(charset))  # not UTF-8, and only the header says what
    named = root.getroottree().docinfo.encoding or "UTF-8"
    declared = _accepted_codec(named, "the XML declaration's encoding")
    if (declared in _UTF16) != wide:
        raise CharsetRefused(
            f"the XML declaration says encoding={named[:40]}, which the body is not written in"
        )
    if wide or body.isascii():
        return root  # UTF-16 as the body's bytes say; ASCII reads the same in every accepted encoding
    if declared == _LATIN1:
        return etree.fromstring(body, _parser("utf-8")) if _is_utf8(body) else root
    if declared == "utf-8" and header is not None and header != "utf-8":
        if header == _LATIN1 and _is_utf8(body):
            return root
        return etree.fromstring(body, _parser(charset))
    return root


class CharsetRefused(ValueError):
    """The envelope names an encoding the bridge does not read, or two that contradict each other."""


#: Python's names of the UTF-16 encodings, the only accepted ones that do not read ASCII as ASCII
_UTF16 = frozenset({"utf-16", "utf-16-le", "utf-16-be"})
_LATIN1 = "iso8859-1"
#: byte order marks, longest first (UTF-32's little-endian mark starts with UTF-16's)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ASCII = bytes(range(128))


def _accepted_codec(name: str, where: str) -> str:
    """Return Python's name of the encoding `name`, or raise CharsetRefused when it is not one accepted."""
    try:
        codec = codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):
        raise CharsetRefused(f"{where} {name[:40]!r} is not a known character encoding") from None
    if codec in _UTF16 or (not codec.startswith(("utf-7", "iso2022", "hz")) and _reads_ascii(codec)):
        return codec
    raise CharsetRefused(
        f"{where} {name[:40]!r} is not accepted: write the envelope in UTF-8, UTF-16 or an encoding "
        "that keeps ASCII as it is (ISO-8859-1, windows-1252...)"
    )


@functools.lru_cache(maxsize=64)
def _reads_ascii(codec: str) -> bool:
    try:
        return _ASCII.decode(codec) == _ASCII.decode("ascii")
    except (LookupError, ValueError):  # not a text encoding (base64, rot13), or not a superset of ASCII
        return False


def _bom_codec(body: bytes) -> str | None:
    return next((codec for mark, codec in _BOMS if body.startswith(mark)), None)


def _check_bom(body: bytes, bom: str, charset: str | None, header: str | None) -> None:
    """Refuse a byte order mark that another name of the body's encoding contradicts."""
    if bom.startswith("utf-32"):
        raise CharsetRefused("UTF-32 envelopes are not accepted: write the envelope in UTF-8 or UTF-16")
    agreeing = {bom, "utf-16"} if bom in _UTF16 else {bom}
    declared = _declared_encoding(body)
    if declared is not None and _accepted_codec(declared, "the XML declaration's encoding") not in agreeing:
        raise CharsetRefused(f"the byte order mark says {bom} but the XML declaration says {declared[:40]}")
    if charset is not None and header not in agreeing:
        raise CharsetRefused(
            f"the byte order mark says {bom} but the Content-Type says charset={charset[:40]}"
        )


class _PrologRead(Exception):
    pass


def _declared_encoding(body: bytes) -> str | None:
    """Return the XML declaration's encoding as written (None without one), behind a byte order mark.

    libxml2 follows the mark and keeps no trace of a declaration that says otherwise; expat reports the
    declaration as written. It reads the prolog only: it stops at the DOCTYPE or the first tag, and
    nothing it reads is used but this name.
    """
    found: list[str | None] = [None]

    def declaration(version: str, encoding: str | None, standalone: int) -> None:
        found[0] = encoding
        raise _PrologRead

    def stop(*args: object) -> None:
        raise _PrologRead

    reader = expat.ParserCreate()
    reader.XmlDeclHandler = declaration
    reader.StartDoctypeDeclHandler = stop
    reader.StartElementHandler = stop
    try:
        reader.Parse(body, True)
    except _PrologRead:
        pass
    except expat.ExpatError as exc:
        raise CharsetRefused(f"the envelope does not read as its byte order mark says: {exc}") from None
    return found[0]


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _SoapState:
    def __init__(self, public_url: str) -> None:
        self.wsdl = build_wsdl(public_url)
        self.soap_app = build_soap_app()


def init_app(app: Flask, public_url: str) -> None:
    """Build the WSDL and spyne's application once, and register the routes."""
    app.extensions["smsbridge.soap"] = _SoapState(public_url)
    app.register_blueprint(bp)
    # spyne logs every fault with a traceback (ERROR, on spyne.application and its children) and warns
    # on each answer that its response class is "customized". A fault is an answer, not the operator's
    # error; sendSms logs what is unexpected itself.
    logging.getLogger("spyne.application").setLevel(logging.CRITICAL)
    logging.getLogger("spyne.model.complex").setLevel(logging.ERROR)
    # spyne logs an envelope that does not parse, whole, at ERROR: its apikey and message with it.
    logging.getLogger("spyne.protocol").setLevel(logging.CRITICAL)


def _state() -> _SoapState:
    return current_app.extensions["smsbridge.soap"]
