"""SOAP 1.1 by hand: a sendSms envelope as a client would post it, and the fault a bridge answers."""

from __future__ import annotations

import requests
from lxml import etree

#: the recipient of every envelope made here
TO = "+32470000001"
ENVELOPE = (
    '<?xml version="1.0" encoding="{encoding}"?>'
    '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
    '<SOAP-ENV:Body><sendSms xmlns="{ns}"><recipients>{to}</recipients><message>{message}</message>'
    "<apikey>{key}</apikey></sendSms></SOAP-ENV:Body></SOAP-ENV:Envelope>"
)


def envelope(
    message: str = "Hi", key: str = "k", ns: str = "urn:smsbridge:sendsms", encoding: str = "UTF-8"
) -> str:
    return ENVELOPE.format(encoding=encoding, ns=ns, to=TO, message=message, key=key)


def fault_of(response: requests.Response | object) -> tuple[str, str]:
    """Return (faultcode, faultstring) of a SOAP 1.1 fault answer, checking it is one."""
    status = getattr(response, "status_code", None)
    body = response.content if hasattr(response, "content") else response.get_data()
    assert status == 500
    assert b"<html" not in body.lower()
    root = etree.fromstring(body)
    fault = root.find(".//{http://schemas.xmlsoap.org/soap/envelope/}Fault")
    assert fault is not None, body
    return fault.findtext("faultcode"), fault.findtext("faultstring")
