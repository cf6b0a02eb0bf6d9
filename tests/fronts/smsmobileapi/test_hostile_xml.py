"""Hostile XML on the SOAP endpoint: each attack is a Client fault, quick, reading no file, calling nowhere.

The cases follow defusedxml's attack catalogue (XXE by file and by network, billion laughs, quadratic
blow-up, external DTD, parameter entities), plus deep nesting, encodings that hide a DOCTYPE,
malformed XML, a foreign namespace and an oversize envelope.
"""

from __future__ import annotations

import base64
import codecs
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from lxml import etree

from tests.harness.bridge import UNICODE_TEXT
from tests.harness.soap import envelope, fault_of

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
BODY = envelope()[envelope().index("<SOAP-ENV:Envelope") :]


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections made to it (none must be)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def attacks(port: int) -> dict[str, bytes]:
    laughs = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    return {
        "xxe-file": f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>{BODY}'.replace(
            "<message>Hi</message>", "<message>&x;</message>"
        ).encode(),
        "xxe-network": f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">]>'
        f"{BODY}".replace("<message>Hi</message>", "<message>&x;</message>").encode(),
        "billion-laughs": f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY lol0 "lol">{laughs}]>{BODY}'.replace(
            "<message>Hi</message>", "<message>&lol9;</message>"
        ).encode(),
        "quadratic-blowup": (
            f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "{"x" * 50000}">]>'
            + BODY.replace("<message>Hi</message>", "<message>" + "&a;" * 1000 + "</message>")
        ).encode(),
        "external-dtd": f'<?xml version="1.0"?><!DOCTYPE e SYSTEM "http://127.0.0.1:{port}/e.dtd">{BODY}'.encode(),
        "parameter-entity": f'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p">'
        f"%p;]>{BODY}".encode(),
        "lowercase-doctype": f"<!doctype e>{BODY}".encode(),
        "utf16-doctype": f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE e>{BODY}'.encode("utf-16"),
        "deep-nesting": BODY.replace(
            "<message>Hi</message>", "<message>" + "<a>" * 100000 + "</a>" * 100000 + "</message>"
        ).encode(),
        "malformed": BODY[:-30].encode(),
        "not-xml": b"apikey=k&recipients=1&message=hi",
        "foreign-namespace": envelope(ns="urn:evil").encode(),
        "no-body": f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"/>'.encode(),
    }


CASES = list(attacks(1))


@pytest.mark.parametrize("name", CASES)
def test_an_attack_is_a_quick_client_fault(
    name: str, make_app: Callable[..., Flask], listener: Listener
) -> None:
    app = make_app("sandbox")
    body = attacks(listener.port)[name]
    started = time.monotonic()
    response = app.test_client().post("/sendsms/soap/", data=body, content_type="text/xml; charset=utf-8")
    elapsed = time.monotonic() - started
    assert response.status_code == 500, response.get_data()[:300]
    assert response.content_type.startswith("text/xml")
    fault = etree.fromstring(response.get_data()).find(f".//{{{SOAP_ENV}}}Fault")
    assert fault is not None
    assert fault.findtext("faultcode").startswith("soap11env:Client"), fault.findtext("faultcode")
    assert elapsed < 2, elapsed
    assert b"root:" not in response.get_data() and b"lollol" not in response.get_data()
    assert listener.connections == 0
    assert app.extensions["smsbridge"].backend.sent("k") == []


def test_an_oversize_envelope_is_a_client_fault_before_it_is_read(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox", max_body_bytes=64 * 1024)
    huge = BODY.replace("<message>Hi</message>", "<message>" + "x" * (1024 * 1024) + "</message>").encode()
    response = app.test_client().post("/sendsms/soap/", data=huge, content_type="text/xml")
    assert response.status_code == 500
    assert b"Client.BodyTooLarge" in response.get_data()


def test_an_unparsable_envelope_is_not_logged_with_its_key(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app("sandbox")
    broken = envelope(key="secret-key-in-envelope")[:-40]
    with caplog.at_level("DEBUG"):
        app.test_client().post("/sendsms/soap/", data=broken, content_type="text/xml")
    assert "secret-key-in-envelope" not in caplog.text


def test_a_body_of_open_apikey_tags_is_refused_in_milliseconds(make_app: Callable[..., Flask]) -> None:
    """256 KiB of `<apikey ` and no credential: a Client fault for well under 100 ms of this process's CPU.

    A regex that looked for the key in the raw body backtracked quadratically on it (about 31 s of a
    worker, until gunicorn killed it); the parser stops at the first malformed tag.
    """
    client = make_app("sandbox").test_client()
    body = b"<apikey " * 32768
    assert len(body) == 256 * 1024
    started = time.process_time()
    response = client.post("/sendsms/soap/", data=body, content_type="text/xml; charset=utf-8")
    cpu = time.process_time() - started
    assert cpu < 0.1, f"{cpu:.3f} s of CPU"
    code, _ = fault_of(response)
    assert code == "soap11env:Client.InvalidXml"


def test_an_envelope_that_does_not_parse_is_refused_before_the_limiter_counts(
    make_app: Callable[..., Flask],
) -> None:
    """With 1 call a minute, three broken envelopes are three InvalidXml faults, and a send still passes."""
    client = make_app("sandbox", rate_limit="1/minute").test_client()
    for broken in (BODY[:-30], "<apikey " * 10, "not xml"):
        code, _ = fault_of(client.post("/sendsms/soap/", data=broken, content_type="text/xml"))
        assert code != "soap11env:Client.RateLimited"  # not counted, so never over the limit
        assert code == "soap11env:Client.InvalidXml"
    send = envelope(key="sandbox-key-1")
    assert client.post("/sendsms/soap/", data=send, content_type="text/xml").status_code == 200
    code, _ = fault_of(client.post("/sendsms/soap/", data=send, content_type="text/xml"))
    assert code == "soap11env:Client.RateLimited"


@pytest.mark.parametrize(
    "apikey",
    [
        # spyne resolves href="#id" itself: counted as no key (or another), sent as the referenced one
        '<apikey href="#k"/><extra id="k">sandbox-key-1</extra>',
        # two keys: counted under one, sent under the other
        "<apikey>decoy</apikey><apikey>sandbox-key-1</apikey>",
    ],
)
def test_an_apikey_the_limiter_and_spyne_could_read_apart_is_refused(
    apikey: str, make_app: Callable[..., Flask]
) -> None:
    app = make_app("sandbox")
    body = BODY.replace("<apikey>k</apikey>", apikey)
    assert body != BODY
    response = app.test_client().post("/sendsms/soap/", data=body, content_type="text/xml")
    code, _ = fault_of(response)
    assert code == "soap11env:Client.InvalidXml"
    assert app.extensions["smsbridge"].backend.sent("sandbox-key-1") == []


@pytest.mark.parametrize(
    "bomb",
    [
        # lxml's attrib.items(), which spyne calls on each parameter, is quadratic in the attributes
        "<apikey " + " ".join(f'a{n}="x"' for n in range(20000)) + ">k</apikey>",
        "<apikey>k</apikey>" + "<x/>" * 60000,
    ],
    ids=["20000-attributes", "60000-parameters"],
)
def test_a_parameter_bomb_is_refused_in_milliseconds(bomb: str, make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox").test_client()
    body = BODY.replace("<apikey>k</apikey>", bomb).encode()
    assert 200 * 1024 < len(body) <= 256 * 1024
    started = time.process_time()
    response = client.post("/sendsms/soap/", data=body, content_type="text/xml; charset=utf-8")
    cpu = time.process_time() - started
    assert cpu < 0.1, f"{cpu:.3f} s of CPU"
    assert fault_of(response)[0] == "soap11env:Client.InvalidXml"


# --- XML in any declared charset (issue 12, item 5) ------------------------------------------------------

KEY = "sandbox-key-1"
KEYED = BODY.replace("<apikey>k</apikey>", f"<apikey>{KEY}</apikey>")
XXE = '<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + KEYED.replace(
    "<message>Hi</message>", "<message>a&x;b</message>"
)


def charset_attacks() -> dict[str, tuple[bytes, str]]:
    """XXE/DOCTYPE envelopes named in encodings where the bytes read differently by who follows the name."""
    declaration = '<?xml version="1.0" encoding="{}"?>'
    # UTF-7 with every markup character shifted: to a reader that ignores the name, there is no tag at all
    utf7_markup = "".join(f"+{base64_utf16(c)}-" if c in '<>!"[]&;=/:' else c for c in XXE).encode()
    return {
        "cp037-in-the-header": (XXE.encode("cp037"), "text/xml; charset=cp037"),
        "cp037-in-the-declaration": ((declaration.format("cp037") + XXE).encode("cp037"), "text/xml"),
        "ebcdic-in-both": ((declaration.format("IBM037") + XXE).encode("cp037"), "text/xml; charset=IBM037"),
        "utf7-in-the-header": (XXE.encode("utf-7"), "text/xml; charset=utf-7"),
        "utf7-markup-in-the-header": (utf7_markup, "text/xml; charset=UTF-7"),
        "utf7-in-the-declaration": (declaration.format("UTF-7").encode() + utf7_markup, "text/xml"),
        "utf7-rfc2231-header": (XXE.encode("utf-7"), "text/xml; charset*=utf-7''"),
        "utf16-doctype-in-the-header": (XXE.encode("utf-16"), "text/xml; charset=utf-16"),
        "utf32-doctype": ((declaration.format("UTF-32") + XXE).encode("utf-32"), "text/xml"),
    }


def base64_utf16(char: str) -> str:
    """Return UTF-7's shifted form of one character (base64 of its UTF-16BE bytes, unpadded)."""
    return base64.b64encode(char.encode("utf-16-be")).decode().rstrip("=")


@pytest.mark.parametrize("name", list(charset_attacks()))
def test_a_doctype_in_any_charset_is_a_client_fault(
    name: str, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app("sandbox")
    body, content_type = charset_attacks()[name]
    response = app.test_client().post("/sendsms/soap/", data=body, headers={"Content-Type": content_type})
    code, _ = fault_of(response)
    assert code.startswith("soap11env:Client."), code
    assert b"root:" not in response.get_data()
    assert app.extensions["smsbridge"].backend.sent(KEY) == []
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        # an encoding nobody knows, in the header, for a body that is plain ASCII
        (KEYED.encode(), "text/xml; charset=x-nope", "Client.UnsupportedCharset"),
        (
            KEYED.replace("Hi", "caf\xe9").encode("latin-1"),
            "text/xml; charset=x-nope",
            "Client.UnsupportedCharset",
        ),
        # ... in the declaration
        (b'<?xml version="1.0" encoding="x-nope"?>' + KEYED.encode(), "text/xml", "Client.InvalidXml"),
        # a name Python knows that is no text encoding
        (KEYED.encode(), "text/xml; charset=base64", "Client.UnsupportedCharset"),
        # UTF-7 with no DOCTYPE: its `+ADw-` is a `<` to a reader that follows the header
        (KEYED.replace("Hi", "+ADw-b+AD4-").encode(), "text/xml; charset=utf-7", "Client.UnsupportedCharset"),
        # bytes that are not UTF-8, declared UTF-8 twice
        (
            b'<?xml version="1.0" encoding="UTF-8"?>' + KEYED.replace("Hi", "\xff\xfe").encode("latin-1"),
            "text/xml; charset=utf-8",
            "Client.InvalidXml",
        ),
        # a byte order mark contradicting the declaration, or the header
        (
            codecs.BOM_UTF8 + b'<?xml version="1.0" encoding="ISO-8859-1"?>' + KEYED.encode(),
            "text/xml",
            "Client.UnsupportedCharset",
        ),
        (
            ('\ufeff<?xml version="1.0" encoding="UTF-8"?>' + KEYED).encode("utf-16-le"),
            "text/xml",
            "Client.UnsupportedCharset",
        ),
        (
            ('\ufeff<?xml version="1.0" encoding="UTF-16BE"?>' + KEYED).encode("utf-16-le"),
            "text/xml",
            "Client.UnsupportedCharset",
        ),
        (codecs.BOM_UTF8 + KEYED.encode(), "text/xml; charset=utf-16", "Client.UnsupportedCharset"),
        # the header says UTF-16, the bytes are UTF-8
        (KEYED.encode(), "text/xml; charset=utf-16", "Client.UnsupportedCharset"),
        # a UTF-16 body the header says is Latin-1
        (("\ufeff" + KEYED).encode("utf-16-le"), "text/xml; charset=iso-8859-1", "Client.UnsupportedCharset"),
    ],
    ids=[
        "unknown-charset-ascii-body",
        "unknown-charset-latin1-body",
        "unknown-declared-encoding",
        "not-a-text-encoding",
        "utf7-header-without-doctype",
        "invalid-utf8",
        "utf8-bom-vs-latin1-declaration",
        "utf16-bom-vs-utf8-declaration",
        "utf16le-bom-vs-utf16be-declaration",
        "utf8-bom-vs-utf16-header",
        "utf16-header-utf8-body",
        "utf16-body-latin1-header",
    ],
)
def test_an_unknown_or_undecodable_charset_is_a_client_fault(
    body: bytes,
    content_type: str,
    expected: str,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app("sandbox")
    response = app.test_client().post("/sendsms/soap/", data=body, headers={"Content-Type": content_type})
    code, string = fault_of(response)
    assert code == f"soap11env:{expected}", string
    assert app.extensions["smsbridge"].backend.sent(KEY) == []
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        (
            ('<?xml version="1.0" encoding="windows-1252"?>' + KEYED.replace("Hi", "5 \u20ac")).encode(
                "cp1252"
            ),
            "text/xml",
            "5 \u20ac",
        ),
        (KEYED.replace("Hi", "5 \u20ac").encode("cp1252"), "text/xml; charset=windows-1252", "5 \u20ac"),
        (KEYED.replace("Hi", "caf\xe9").encode("latin-1"), "text/xml; charset=ISO-8859-1", "caf\xe9"),
        (
            ('<?xml version="1.0" encoding="ISO-8859-1"?>' + KEYED.replace("Hi", "caf\xe9")).encode(
                "latin-1"
            ),
            'text/xml; charset="iso-8859-1"',
            "caf\xe9",
        ),
        (
            ('<?xml version="1.0" encoding="UTF-16"?>' + KEYED.replace("Hi", UNICODE_TEXT)).encode("utf-16"),
            "text/xml; charset=utf-16",
            UNICODE_TEXT,
        ),
        (KEYED.replace("Hi", UNICODE_TEXT).encode("utf-16"), "text/xml", UNICODE_TEXT),
        (("\ufeff" + KEYED.replace("Hi", UNICODE_TEXT)).encode("utf-16-be"), "text/xml", UNICODE_TEXT),
        (
            codecs.BOM_UTF8
            + ('<?xml version="1.0" encoding="UTF-8"?>' + KEYED.replace("Hi", UNICODE_TEXT)).encode(),
            "text/xml; charset=utf-8",
            UNICODE_TEXT,
        ),
    ],
    ids=[
        "cp1252-declared",
        "cp1252-in-the-header",
        "latin1-in-the-header",
        "latin1-declared-and-quoted",
        "utf16-declared",
        "utf16-bom-only",
        "utf16be-bom",
        "utf8-bom-and-declaration",
    ],
)
def test_a_valid_envelope_in_another_charset_still_sends(
    body: bytes, content_type: str, text: str, make_app: Callable[..., Flask]
) -> None:
    app = make_app("sandbox")
    response = app.test_client().post("/sendsms/soap/", data=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.get_data()[:400]
    assert [row["message"] for row in app.extensions["smsbridge"].backend.sent(KEY)] == [text]
