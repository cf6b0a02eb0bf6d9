"""Settings: defaults, environment variables, and a clear error for each invalid one."""

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app import create_app
from app.config import ConfigError, Settings


def test_defaults_choose_the_sandbox() -> None:
    settings = Settings.from_env({})
    assert settings.backend == "sandbox"
    # The vendor's own API, over TLS (tests never call it: they point every backend at 127.0.0.1).
    default = urlsplit(settings.smsmobileapi_url)
    assert (default.scheme, default.hostname.endswith("smsmobileapi.com")) == ("https", True)
    assert settings.connect_timeout == 3.0
    assert settings.read_timeout == 7.0


def test_environment_variables_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "SMSBRIDGE_BACKEND": "MobSMS",
            "SMSBRIDGE_MOBSMS_URL": "http://127.0.0.1:9/",
            "SMSBRIDGE_PUBLIC_URL": "https://sms.example.org",
            "SMSBRIDGE_DATA_DIR": "/var/lib/smsbridge",
            "SMSBRIDGE_CONNECT_TIMEOUT": "1.5",
            "SMSBRIDGE_READ_TIMEOUT": "4",
            "SMSBRIDGE_SANDBOX_API_KEYS": "a, b,,c",
        }
    )
    assert settings.backend == "mobsms"
    assert settings.mobsms_url == "http://127.0.0.1:9/"
    assert settings.data_dir == Path("/var/lib/smsbridge")
    assert (settings.connect_timeout, settings.read_timeout) == (1.5, 4.0)
    assert settings.sandbox_api_keys == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("SMSBRIDGE_BACKEND", "twilio", "expected one of sandbox, smsmobileapi, mobsms"),
        ("SMSBRIDGE_MOBSMS_URL", "ftp://x", "expected an http:// or https:// URL"),
        ("SMSBRIDGE_PUBLIC_URL", "https://x/?a=1", "no query"),
        ("SMSBRIDGE_READ_TIMEOUT", "soon", "expected a number of seconds"),
        ("SMSBRIDGE_CONNECT_TIMEOUT", "0", "expected seconds in (0, 300]"),
        ("SMSBRIDGE_UPSTREAM_CA_BUNDLE", "/nonexistent.pem", "no such file"),
        ("SMSBRIDGE_MAX_BODY_BYTES", "ten", "expected a whole number"),
    ],
)
def test_invalid_settings_are_refused_naming_the_variable(variable: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert variable in str(caught.value)
    assert named in str(caught.value)


def test_create_app_refuses_an_invalid_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSBRIDGE_BACKEND", "nope")
    with pytest.raises(ConfigError, match="SMSBRIDGE_BACKEND"):
        create_app()
