"""app.phone: recipients read, checked and written in E.164, and the setting naming the default region."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings
from app.errors import InvalidRecipient
from app.phone import conversation_key, plain_number, to_e164

BE_MOBILE = "+32470123456"


@pytest.mark.parametrize(
    "written",
    [
        "0470 12 34 56",
        "0470123456",
        "0470.12.34.56",
        # Without its trunk 0 and without a country code: only a national number of BE is valid.
        "470123456",
    ],
)
def test_a_national_number_is_read_in_the_default_region(written: str) -> None:
    assert to_e164(written, "BE") == BE_MOBILE


@pytest.mark.parametrize("region", [None, "BE", "FR", "US"])
@pytest.mark.parametrize(
    "written",
    [
        "+32470123456",
        "+32 470 12 34 56",
        # The trunk 0 some people keep in brackets after the country code is not part of the number.
        "+32 (0)470 12 34 56",
        "0032470123456",
        "0032 470 12 34 56",
        # Digits only, country code first: how the vendor's docs write recipients.
        "32470123456",
    ],
)
def test_international_forms_do_not_depend_on_the_region(written: str, region: str | None) -> None:
    assert to_e164(written, region) == BE_MOBILE


def test_digits_only_are_national_first_with_a_region_and_international_without() -> None:
    # The same ten digits are a New Jersey number and an Egyptian one: the region decides.
    assert to_e164("201 555 0123", "US") == "+12015550123"
    assert to_e164("201 555 0123", None) == "+2015550123"
    # With a region, digits that are no national number of it are still read as international.
    assert to_e164("12015550123", "BE") == "+12015550123"
    assert to_e164("33612345678", "BE") == "+33612345678"


def test_a_region_s_own_international_prefix_is_understood() -> None:
    assert to_e164("011 32 470 12 34 56", "US") == BE_MOBILE


def test_without_a_region_a_national_number_is_refused_saying_what_to_do() -> None:
    with pytest.raises(InvalidRecipient) as caught:
        to_e164("0470 12 34 56", None)
    note = str(caught.value)
    assert "'0470 12 34 56'" in note
    assert "national number" in note
    assert "country code" in note and "SMSBRIDGE_DEFAULT_REGION" in note


@pytest.mark.parametrize(
    ("written", "region", "why"),
    [
        ("+32 470", None, "too short for +32"),
        ("0470", "BE", "read as a national number of BE"),
        ("+32 470 12 34 56 78 9", None, "too long for +32"),
        ("+0123456789", None, "no known country code"),
        ("+999 123 4567", None, "no known country code"),
        # A possible length, but a range no country has allocated: mobsms would fail it after the
        # bridge had said it was sent.
        ("+1 555 0100 000", None, "no +1 number is allocated"),
        ("191728660", "BE", "nor is it a national number of BE"),
        ("+32 abc", "BE", "not a phone number"),
        ("+32 470 12 34 56 ext. 7", "BE", "not a phone number"),
        ("", "BE", "not a phone number"),
    ],
)
def test_an_invalid_number_is_refused_by_name_saying_why(written: str, region: str | None, why: str) -> None:
    with pytest.raises(InvalidRecipient) as caught:
        to_e164(written, region)
    assert f"recipient {written!r}" in str(caught.value)
    assert why in str(caught.value)


def test_the_shape_check_keeps_what_the_sandbox_accepts() -> None:
    # The sandbox is the dialect's reference: it keeps short fakes such as the vendor's 191728660.
    assert plain_number("191728660") == "191728660"
    assert plain_number("+32 (0)470 12-34.56") == "+320470123456"
    with pytest.raises(InvalidRecipient):
        plain_number("12")


def test_conversations_group_national_and_international_forms_when_a_region_allows() -> None:
    written = ["0470 12 34 56", "+32470123456", "0032 470 12 34 56", "32470123456"]
    assert {conversation_key(n, "BE") for n in written} == {"32470123456"}
    # Without a region a national number cannot be read, and falls back to its digits.
    assert {conversation_key(n, None) for n in written} == {"0470123456", "32470123456"}
    assert conversation_key("191728660", "BE") == "191728660"
    assert conversation_key("8200", "BE") == "8200"


@pytest.mark.parametrize("value", ["be", "BE", " fr "])
def test_the_default_region_is_read_upper_cased(value: str) -> None:
    assert Settings.from_env({"SMSBRIDGE_DEFAULT_REGION": value}).default_region == value.strip().upper()


@pytest.mark.parametrize("value", ["XX", "BEL", "001", "ZZ", "32", "EU"])
def test_an_unknown_default_region_stops_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SMSBRIDGE_DEFAULT_REGION": value})
    assert f"SMSBRIDGE_DEFAULT_REGION={value!r}" in str(caught.value)
    assert "two-letter code" in str(caught.value)


def test_an_unknown_default_region_given_as_an_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="SMSBRIDGE_DEFAULT_REGION"):
        Settings.from_env({}, overrides={"default_region": "Belgium"})
