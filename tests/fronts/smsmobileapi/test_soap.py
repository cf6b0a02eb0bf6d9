"""The SOAP front: the WSDL contract, zeep and suds on every backend, faults, and what nusoap sends."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import zeep
from flask import Flask
from lxml import etree
from spyne.interface.wsdl import Wsdl11
from suds.client import Client as SudsClient
from suds.client import WebFault

from app.fronts.smsmobileapi.dialect import RESULT_FIELDS
from app.fronts.smsmobileapi.soap import WSDL_FILE, build_soap_app, envelope_root
from tests.harness.bridge import GOOD_KEY, UNICODE_TEXT, LiveBridge
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.soap import envelope, fault_of

TO = "+32470000001"
WSDL_NS = {
    "wsdl": "http://schemas.xmlsoap.org/wsdl/",
    "soap": "http://schemas.xmlsoap.org/wsdl/soap/",
    "xs": "http://www.w3.org/2001/XMLSchema",
}


def delivered_text(
    backend: str, live: LiveBridge, fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms
) -> str:
    """Return the message text the backend received for the last send."""
    if backend == "mobsms":
        return fake_mobsms.received[-1].json["message"]
    if backend == "smsmobileapi":
        return dict(fake_vendor.received[-1].form)["message"]
    return live.app.extensions["smsbridge"].backend.sent(GOOD_KEY["sandbox"])[-1]["message"]


# --- the contract ---------------------------------------------------------------------------------------


def test_wsdl_is_the_contract_file_with_the_configured_address(make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox", public_url="https://sms.example.org/").test_client()
    response = client.get("/sendsms/wsdl/sendsms.wsdl", headers={"Host": "attacker.example"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/xml")
    served = etree.fromstring(response.get_data())
    [address] = served.findall(".//soap:address", WSDL_NS)
    assert address.get("location") == "https://sms.example.org/sendsms/soap/"
    assert b"attacker" not in response.get_data()
    # Everything else is the file as committed.
    address.set("location", "https://smsbridge.invalid/sendsms/soap/")
    committed = etree.parse(str(WSDL_FILE)).getroot()
    assert etree.tostring(served, method="c14n") == etree.tostring(committed, method="c14n")
    # ?wsdl on the endpoint serves the same document.
    assert client.get("/sendsms/soap/?wsdl").get_data() == response.get_data()


def _contract(root: etree._Element) -> dict:
    """What a client relies on: schema types and elements, messages, operation, binding style."""
    schema = root.find(".//xs:schema", WSDL_NS)
    types = {
        t.get("name"): [
            (e.get("name"), e.get("type").split(":")[-1], e.get("minOccurs"), e.get("nillable"))
            for e in t.iterfind(".//xs:element", WSDL_NS)
        ]
        for t in schema.iterfind("xs:complexType", WSDL_NS)
    }
    elements = {e.get("name"): e.get("type").split(":")[-1] for e in schema.iterfind("xs:element", WSDL_NS)}
    messages = {
        m.get("name"): [
            (p.get("name"), p.get("element").split(":")[-1]) for p in m.iterfind("wsdl:part", WSDL_NS)
        ]
        for m in root.iterfind("wsdl:message", WSDL_NS)
    }
    operations = [
        (
            op.get("name"),
            op.find("soap:operation", WSDL_NS).get("soapAction"),
            op.find("soap:operation", WSDL_NS).get("style"),
            [b.get("use") for b in op.iterfind(".//soap:body", WSDL_NS)],
        )
        for op in root.iterfind("wsdl:binding/wsdl:operation", WSDL_NS)
    ]
    return {
        "tns": root.get("targetNamespace"),
        "schema_tns": schema.get("targetNamespace"),
        "form": schema.get("elementFormDefault"),
        "types": types,
        "elements": elements,
        "messages": messages,
        "operations": operations,
        "style": root.find("wsdl:binding/soap:binding", WSDL_NS).get("style"),
    }


def test_the_contract_file_agrees_with_what_spyne_serves() -> None:
    document = Wsdl11(build_soap_app().app.interface)
    document.build_interface_document("http://localhost/sendsms/soap/")
    spyne_root = etree.fromstring(document.get_interface_document())
    committed = _contract(etree.parse(str(WSDL_FILE)).getroot())
    assert committed == _contract(spyne_root)
    assert [name for name, *_ in committed["types"]["sendSmsResponse"]] == list(RESULT_FIELDS)
    # nusoap wraps arguments only when the single part is named "parameters".
    assert committed["messages"]["sendSms"] == [("parameters", "sendSms")]


# --- real Python SOAP clients on every backend --------------------------------------------------------------


def test_zeep_sends_with_text_intact(
    backend: str, live: LiveBridge, fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms
) -> None:
    client = zeep.Client(live.wsdl_url)
    result = client.service.sendSms(recipients=TO, message=UNICODE_TEXT, apikey=GOOD_KEY[backend])
    assert (result["error"], result["sent"]) == ("0", "1")
    assert result["id"]
    assert result["encrypted"]["status"] == "0"
    assert result["trial_account"]["sms_sent"] == 0
    assert delivered_text(backend, live, fake_vendor, fake_mobsms) == UNICODE_TEXT
    if backend == "mobsms":
        assert result["id"] == fake_mobsms.queued[-1]["message_id"]
        assert fake_mobsms.received[-1].json == {"message": UNICODE_TEXT, "recipient_number": TO}
    if backend == "smsmobileapi":
        assert fake_vendor.received[-1].form == [
            ("apikey", GOOD_KEY[backend]),
            ("recipients", TO),
            ("message", UNICODE_TEXT),
        ]


def test_suds_sends_with_text_intact(
    backend: str, live: LiveBridge, fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms
) -> None:
    client = SudsClient(live.wsdl_url, cache=None)
    result = client.service.sendSms(
        recipients=f"{TO},+32470000002", message=UNICODE_TEXT, apikey=GOOD_KEY[backend]
    )
    assert (result.error, result.sent) == ("0", "1")
    assert result.id
    assert delivered_text(backend, live, fake_vendor, fake_mobsms) == UNICODE_TEXT
    if backend == "mobsms":
        assert fake_mobsms.received[-1].path == "/api/sms/bulk"
        assert result.id == fake_mobsms.queued[0]["message_id"]


def test_zeep_gets_client_faults_for_the_callers_mistakes(backend: str, live: LiveBridge) -> None:
    client = zeep.Client(live.wsdl_url)
    with pytest.raises(zeep.exceptions.Fault) as missing:
        client.service.sendSms(recipients=TO, message=UNICODE_TEXT)
    assert missing.value.code.endswith("Client.MissingParameter")
    assert missing.value.message == "apikey is missing"
    with pytest.raises(zeep.exceptions.Fault) as no_text:
        client.service.sendSms(recipients=TO, apikey=GOOD_KEY[backend])
    assert no_text.value.message == "message is missing"


@pytest.mark.parametrize("backend_name", ["smsmobileapi", "mobsms"])
def test_suds_gets_a_key_refused_fault(backend_name: str, live_bridges: dict[str, LiveBridge]) -> None:
    client = SudsClient(live_bridges[backend_name].wsdl_url, cache=None)
    with pytest.raises(WebFault) as caught:
        client.service.sendSms(recipients=TO, message="Hi", apikey="wrong-key")
    assert caught.value.fault.faultcode.endswith("Client.KeyRefused")
    assert "refused the API key" in caught.value.fault.faultstring


def test_a_keyed_sandbox_refuses_other_keys(make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox", sandbox_api_keys=frozenset({"sandbox-key-1"})).test_client()
    code, string = fault_of(
        client.post("/sendsms/soap/", data=envelope(key="wrong-key"), content_type="text/xml")
    )
    assert code == "soap11env:Client.KeyRefused"
    assert string == "the API key is not one of the sandbox's keys"


# --- faults and what reaches spyne, through Flask's test client -------------------------------------------


def test_backend_trouble_is_a_server_fault(make_app: Callable[..., Flask], fake_mobsms: FakeMobsms) -> None:
    fake_mobsms.no_device = True
    client = make_app("mobsms").test_client()
    code, string = fault_of(
        client.post("/sendsms/soap/", data=envelope(key="mobsms-key-1"), content_type="text/xml")
    )
    assert code == "soap11env:Server.NoDeviceAvailable"
    assert string == "mobsms has no active device to send from; nothing was sent"


def test_an_unreachable_backend_is_a_server_fault(make_app: Callable[..., Flask]) -> None:
    client = make_app("mobsms", mobsms_url="http://127.0.0.1:9").test_client()
    code, string = fault_of(
        client.post("/sendsms/soap/", data=envelope(key="mobsms-key-1"), content_type="text/xml")
    )
    assert code == "soap11env:Server.BackendUnreachable"
    assert "nothing was sent" in string


def test_the_wsdl_url_also_takes_calls(make_app: Callable[..., Flask]) -> None:
    """nusoap with wsdl=false posts to the URL it was given, which is usually the WSDL's."""
    app = make_app("sandbox")
    response = app.test_client().post("/sendsms/wsdl/sendsms.wsdl", data=envelope(), content_type="text/xml")
    assert response.status_code == 200
    root = etree.fromstring(response.get_data())
    assert root.findtext(".//{urn:smsbridge:sendsms}sent") == "1"
    assert app.extensions["smsbridge"].backend.sent("k")[-1]["message"] == "Hi"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + envelope()[21:],
            "Client.InvalidXml",
        ),
        ("<Envelope><unclosed>", None),
        (envelope(ns="urn:somebody:else"), None),
        ("", None),
    ],
    ids=["doctype", "malformed", "wrong-namespace", "empty"],
)
def test_bad_envelopes_are_client_faults(body: str, code: str | None, make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox")
    faultcode, faultstring = fault_of(
        app.test_client().post("/sendsms/soap/", data=body, content_type="text/xml")
    )
    assert faultcode.startswith("soap11env:Client")
    if code:
        assert faultcode == f"soap11env:{code}"
    assert "root:" not in faultstring
    assert app.extensions["smsbridge"].backend.sent("k") == []


def test_an_oversize_envelope_is_a_client_fault(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox", max_body_bytes=4096)
    code, string = fault_of(
        app.test_client().post("/sendsms/soap/", data=envelope(message="x" * 5000), content_type="text/xml")
    )
    assert code == "soap11env:Client.BodyTooLarge"
    assert "4096" in string


def test_an_unexpected_error_is_a_server_fault(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app("sandbox")

    def broken(request: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["smsbridge"].backend, "send", broken)
    code, string = fault_of(
        app.test_client().post("/sendsms/soap/", data=envelope(), content_type="text/xml")
    )
    assert code == "soap11env:Server.InternalError"
    assert "boom" not in string
    assert "RuntimeError: boom" in caplog.text


# --- what nusoap does to text ---------------------------------------------------------------------------


def test_utf8_labelled_latin1_as_nusoap_sends_it_arrives_intact(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox")
    body = envelope(message=UNICODE_TEXT, encoding="ISO-8859-1").encode("utf-8")
    response = app.test_client().post(
        "/sendsms/soap/", data=body, content_type="text/xml; charset=ISO-8859-1"
    )
    assert response.status_code == 200
    assert app.extensions["smsbridge"].backend.sent("k")[-1]["message"] == UNICODE_TEXT


def test_real_latin1_stays_latin1(make_app: Callable[..., Flask]) -> None:
    app = make_app("sandbox")
    body = envelope(message="Café déjà vu", encoding="ISO-8859-1").encode("latin-1")
    response = app.test_client().post(
        "/sendsms/soap/", data=body, content_type="text/xml; charset=ISO-8859-1"
    )
    assert response.status_code == 200
    assert app.extensions["smsbridge"].backend.sent("k")[-1]["message"] == "Café déjà vu"


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        (
            '<?xml version="1.0" encoding="ISO-8859-1"?><a>é €</a>'.encode(),
            "text/xml; charset=ISO-8859-1",
            "é €",
        ),
        ("<a>é €</a>".encode(), "text/xml; charset=latin1", "é €"),
        ('<?xml version="1.0" encoding="ISO-8859-1"?><a>é</a>'.encode("latin-1"), "text/xml", "é"),
        ("<a>é</a>".encode("latin-1"), "text/xml; charset=ISO-8859-1", "é"),
        ("<a>é €</a>".encode("cp1252"), "text/xml; charset=windows-1252", "é €"),
        ("<a>é €</a>".encode(), "text/xml; charset=utf-8", "é €"),
        ("<a>é €</a>".encode(), "text/xml", "é €"),
        (b"<a>e</a>", "text/xml; charset=ISO-8859-1", "e"),
    ],
    ids=[
        "utf8-declared-latin1-in-xml",
        "utf8-declared-latin1-in-header",
        "really-latin1-in-xml",
        "really-latin1-in-header",
        "cp1252-in-header",
        "utf8-in-header",
        "utf8-undeclared",
        "ascii",
    ],
)
def test_an_envelope_is_read_in_the_encoding_it_is_written_in(
    body: bytes, content_type: str, text: str
) -> None:
    """lxml reads the declaration; the header speaks when there is none; nusoap's UTF-8 labelled Latin-1."""
    assert envelope_root(body, content_type).text == text
