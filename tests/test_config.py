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


@pytest.mark.parametrize(
    ("variable", "suggested"),
    [
        ("SMSBRIDGE_RATE_LIMIT_STORAGE", "SMSBRIDGE_RATELIMIT_STORAGE"),
        ("SMSBRIDGE_BACKEN", "SMSBRIDGE_BACKEND"),
        ("SMSBRIDGE_WEBHOOK_SECRT", "SMSBRIDGE_WEBHOOK_SECRET"),
    ],
)
def test_a_misspelt_variable_stops_the_start_naming_the_setting_meant(variable: str, suggested: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: "redis://127.0.0.1:6379/0"})
    assert str(caught.value).startswith(
        f"{variable} is not a setting smsbridge knows: did you mean {suggested}?"
    )


def test_an_unknown_variable_with_no_close_setting_points_at_the_list() -> None:
    with pytest.raises(
        ConfigError, match=r"SMSBRIDGE_FOO is not a setting .* docs/configuration.md lists every setting"
    ):
        Settings.from_env({"SMSBRIDGE_FOO": "1"})


def test_variables_read_outside_the_settings_are_not_refused() -> None:
    settings = Settings.from_env({"SMSBRIDGE_BIND": "127.0.0.1:9", "SMSBRIDGE_PYTHON": "3.13"})
    assert settings.backend == "sandbox"


def test_gunicorn_refuses_to_start_with_a_misspelt_variable(tmp_path: Path) -> None:
    import subprocess

    from tests.harness.gunicorn import GUNICORN, ROOT, gunicorn_env
    from tests.harness.net import free_port

    env = gunicorn_env(
        free_port(), SMSBRIDGE_DATA_DIR=str(tmp_path), SMSBRIDGE_RATE_LIMIT_STORAGE="memory://"
    )
    done = subprocess.run(
        GUNICORN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "smsbridge: SMSBRIDGE_RATE_LIMIT_STORAGE is not a setting" in done.stderr
    assert "did you mean SMSBRIDGE_RATELIMIT_STORAGE?" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_environment_proxy_the_client_cannot_use_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5h://127.0.0.1:1080")
    with pytest.raises(ConfigError, match="ALL_PROXY: smsbridge reaches upstreams only through an http"):
        Settings.from_env({})
    # The bridge's own setting replaces the environment's proxies: then it is not in the way.
    assert Settings.from_env({"SMSBRIDGE_UPSTREAM_PROXY": "http://127.0.0.1:3128"}).upstream_proxy
