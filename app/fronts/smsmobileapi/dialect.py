"""SMSMobileAPI's vocabulary, shared by its REST and SOAP fronts: send results and error results."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache

from app.errors import BridgeError, InvalidParameter, MissingParameter
from app.vocabulary import SendReceipt

#: the fields of a send result, in the docs' order; SOAP answers carry exactly these
RESULT_FIELDS = (
    "error",
    "sent",
    "id",
    "note",
    "datetime",
    "datetimeLocal",
    "port",
    "iac_control",
    "iac_authorized",
    "send_with_whatsapp",
    "encrypted",
    "trial_account",
)


def split_recipients(raw: str) -> tuple[str, ...]:
    """Split the comma-separated `recipients` parameter; raise MissingParameter if none is left."""
    recipients = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not recipients:
        raise MissingParameter("recipients is missing: give one phone number or several, comma-separated")
    return recipients


def check_key(secret: str) -> str:
    """Return an API key or token that can travel in a header; refuse any other (nothing is sent)."""
    if not (secret.isascii() and secret.isprintable()) or len(secret) > 512:
        raise InvalidParameter("apikey must be printable ASCII, at most 512 characters")
    return secret


#: the deepest nesting of arrays and objects a JSON body may have: the dialect's bodies are flat objects
MAX_JSON_DEPTH = 32


def parse_json(data: bytes | str) -> object:
    """Parse a JSON document; raise ValueError for one that is not JSON, or nested past MAX_JSON_DEPTH.

    The same rule on every Python: 3.11's parser raises RecursionError (no ValueError) on `[[[[...` 5,000
    deep, while 3.12 and later read it; either way such a body is refused by name.
    """
    try:
        document = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None
    pending: list[tuple[dict[str, object] | list[object], int]] = (
        [(document, 1)] if isinstance(document, (dict, list)) else []
    )
    while pending:  # the arrays and objects still to look into, each with its depth
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested over {MAX_JSON_DEPTH} deep")
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return document


def header_value(name: str, value: str) -> str:
    """Return a request header's value the bridge may hand on upstream; refuse (nothing is sent) any other.

    A value must be printable ASCII: a TAB, another control character or a byte past ASCII (which the
    server decoded as Latin-1) is refused by name, where the upstream's HTTP client would fail on it.
    """
    if not (value.isascii() and value.isprintable()):
        raise InvalidParameter(
            f"the {name} header holds a control character (a TAB, say) or a non-ASCII byte"
        )
    return value


def require_present(params: Mapping[str, str], name: str, empty: str = "it may be empty") -> str:
    """Return a parameter that must be given but may be empty (`alias=`, `label=`)."""
    if name not in params:
        raise MissingParameter(f"{name} is missing: give {name}= ({empty})")
    return params[name]


def require(name: str, value: str | None) -> str:
    """Return `value`, or raise MissingParameter naming the parameter."""
    if value is None or value == "":
        raise MissingParameter(f"{name} is missing")
    return value


def send_result(receipt: SendReceipt) -> dict:
    """Return the `result` object of a successful send."""
    if receipt.upstream_fields is not None:
        return dict(receipt.upstream_fields)
    utc, local = _now()
    result = {
        "error": 0,
        "sent": "1",
        "id": receipt.message_ids[0],
        "note": receipt.note,
        "datetime": utc,
        "datetimeLocal": local,
        "port": int(receipt.port) if receipt.port else None,
        "iac_control": "1",
        "iac_authorized": "1",
        "send_with_whatsapp": "1" if receipt.via_whatsapp else "0",
        "encrypted": {"status": "1" if receipt.encrypted else "0"},
        "trial_account": {"status": "0", "sms_sent": 0},
    }
    if len(receipt.message_ids) > 1:
        # Beyond the docs: one id per recipient, in the order the recipients were given.
        result["ids"] = list(receipt.message_ids)
    return result


def error_result(error: BridgeError) -> dict:
    """Return the `result` object that reports `error`."""
    utc, local = _now()
    result: dict = {
        "error": error.code,
        "error_code": error.name,
        "sent": "0",
        "id": "",
        "note": error.note,
        "datetime": utc,
        "datetimeLocal": local,
        "send_with_whatsapp": "0",
    }
    if error.reference:
        # The outcome is unknown: the reference finds the request in the log (and, on mobsms, the
        # message itself, whose my_id it is).
        result["reference"] = error.reference
    return result


def _now() -> tuple[str, str]:
    """Return this second in UTC and in the host's time zone, as the vendor's answers show them."""
    return _second_forms(int(time.time()))


@lru_cache(maxsize=1)
def _second_forms(second: int) -> tuple[str, str]:
    # Once a second, not per answer: finding the local zone costs a system call or two.
    now = datetime.fromtimestamp(second, UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ"), now.astimezone().isoformat()
