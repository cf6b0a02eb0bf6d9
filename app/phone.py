"""Phone numbers: checked, read and written in E.164 with phonenumbers (libphonenumber's metadata).

How a recipient is read, in this order:

- ``+`` then the country code: international, as written (``+32 470 12 34 56``).
- ``00`` then the country code: ``00`` is read as ``+`` whatever the region (the prefix most of the
  world dials; the dialect's own filters compare numbers the same way).
- ``0`` then digits: a national number of SMSBRIDGE_DEFAULT_REGION (``0470 12 34 56`` with BE is
  ``+32470123456``; a region's own international prefix, such as US ``011``, is understood too);
  without a region it is refused, saying to write the country code or set the region.
- digits only, not starting with 0: with a region, a national number of it first (``201 555 0123``
  with US; libphonenumber also takes the region's own country code written without +, so
  ``32470123456`` with BE), else the country code first, as the vendor's docs write recipients
  (``32470123456``, ``12015550123``). National first, because in regions without a trunk 0 (US,
  Canada) national numbers are written this way and the same digits can be valid abroad
  (``2015550123`` is also an Egyptian number).

A number must be valid for its country (an allocated range of the right length), not merely of a
possible length: a send to an unallocated range would fail upstream, after the bridge said it was
accepted.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, ValidationResult

from app.errors import InvalidRecipient

#: the regions SMSBRIDGE_DEFAULT_REGION may name (ISO 3166-1 alpha-2 codes libphonenumber knows)
REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)

# Letters are refused even though libphonenumber reads vanity numbers (1-800-FLOWERS): a recipient
# with letters is far more often a mistake than a vanity number.
_WRITTEN = re.compile(r"\+?[0-9][0-9 ().\-]*")
_PUNCTUATION = re.compile(r"[ ().\-]")

_NOT_A_NUMBER = "is not a phone number (expected digits, optionally starting with + and the country code)"


def plain_number(recipient: str) -> str:
    """Return the number without its punctuation, or raise InvalidRecipient unless it looks like one."""
    digits = _PUNCTUATION.sub("", recipient)
    if not _WRITTEN.fullmatch(recipient) or not 3 <= len(digits.lstrip("+")) <= 15:
        raise InvalidRecipient(f"recipient {shown(recipient)} {_NOT_A_NUMBER}")
    return digits


def to_e164(recipient: str, region: str | None) -> str:
    """Return `recipient` in E.164 (+32470123456), or raise InvalidRecipient naming it and saying why."""
    e164, why_not = _read(plain_number(recipient), region)
    if not e164:
        raise InvalidRecipient(f"recipient {shown(recipient)}{why_not}")
    return e164


def conversation_key(number: str, region: str | None) -> str:
    """Return what groups a number's messages: its E.164 digits, else its digits without + or 00."""
    try:
        e164, _ = _read(plain_number(number), region)
    except InvalidRecipient:
        e164 = ""
    if e164:
        return e164[1:]
    # A shortcode, a sender name or a number in no known range is compared by its digits, as before.
    digits = re.sub(r"\D", "", number)
    return digits[2:] if digits.startswith("00") else digits


# Reading a number costs about 20 us, a cached one about 1 us: a send may name 500 recipients and
# a conversation list reads every number of the history again. Keyed by the digits (16 characters
# at most, not the text as written), 4096 entries hold about 1.3 MiB.
@lru_cache(maxsize=4096)
def _read(digits: str, region: str | None) -> tuple[str, str]:
    """Return (E.164, "") for a valid number, else ("", why it is refused, to follow its name)."""
    if digits.startswith("+"):
        return _checked(digits, None)
    if digits.startswith("00"):
        return _checked("+" + digits[2:], None)
    if digits.startswith("0"):
        if region is None:
            return "", (
                " is a national number: write it with + and the country code (such as +32470123456), "
                "or have the operator set SMSBRIDGE_DEFAULT_REGION to the country it belongs to"
            )
        e164, why_not = _checked(digits, region)
        return e164, why_not and f", read as a national number of {region},{why_not}"
    if region is not None:
        national, _ = _checked(digits, region)
        if national:
            return national, ""
    e164, why_not = _checked("+" + digits, None)
    if e164 or region is None:
        return e164, why_not
    return "", f"{why_not} (nor is it a national number of {region})"


def _checked(text: str, region: str | None) -> tuple[str, str]:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            return "", " cannot be written in E.164: it starts with no known country code"
        return "", " cannot be written in E.164 (+, the country code, then the number)"
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""
    return "", f" cannot be written in E.164: {_why_invalid(number)}"


def _why_invalid(number: PhoneNumber) -> str:
    code = f"+{number.country_code}"
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == ValidationResult.TOO_SHORT:
        return f"it is too short for {code}"
    if possible == ValidationResult.TOO_LONG:
        return f"it is too long for {code}"
    if possible == ValidationResult.INVALID_LENGTH:
        return f"no {code} number has that length"
    return f"no {code} number is allocated in that range"


def shown(value: str, limit: int = 40) -> str:
    """Quote a caller's value for an error note, cut short so a note stays readable."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
