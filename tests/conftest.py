"""Fixtures shared by the test modules; what they are built from is in tests/harness/ (see its __init__).

Fake upstreams are real HTTP servers on 127.0.0.1; the bridge is built, served from a thread, or served by
gunicorn against them. A fixture one module alone uses stays in that module; one that the modules of one
folder alone use is in that folder's conftest.py (webhooks/, fronts/smsmobileapi/); here are the rest.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

import app.access.resolution
from app import create_app
from tests.harness.bridge import BACKENDS, LiveBridge
from tests.harness.fakes.listener import Listener
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn


@pytest.fixture(scope="session")
def fake_vendor() -> Iterator[FakeSmsMobileApi]:
    """The fake SMSMobileAPI, for the whole session."""
    server = FakeSmsMobileApi()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_mobsms() -> Iterator[FakeMobsms]:
    """The fake mobsms, for the whole session."""
    server = FakeMobsms()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_fakes(fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms) -> None:
    fake_vendor.reset()
    fake_vendor.next_reply = None
    fake_vendor.behave()
    fake_mobsms.reset()
    fake_mobsms.queued.clear()
    fake_mobsms.no_device = False
    fake_mobsms.next_reply = None
    fake_mobsms.behave()
    fake_mobsms.reset_state()


@pytest.fixture(scope="session")
def settings_for(
    fake_vendor: FakeSmsMobileApi, fake_mobsms: FakeMobsms, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., dict]:
    """Return settings overrides that point `backend` at the fakes, with its own data directory."""

    def settings(backend: str, **overrides: object) -> dict:
        return {
            "backend": backend,
            "smsmobileapi_url": fake_vendor.url,
            "mobsms_url": fake_mobsms.url,
            "public_url": "https://bridge.example.test",
            "data_dir": tmp_path_factory.mktemp(f"data-{backend}"),
            "connect_timeout": 2.0,
            "read_timeout": 5.0,
            "rate_limit": "100000/minute",
            **overrides,
        }

    return settings


@pytest.fixture
def make_app(settings_for: Callable[..., dict]) -> Callable[..., Flask]:
    """Build a bridge app for `backend`, with settings overrides."""

    def make(backend: str, **overrides: object) -> Flask:
        app = create_app(settings_for(backend, **overrides))
        app.testing = True
        return app

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    return request.param


@pytest.fixture(scope="session")
def live_bridges(settings_for: Callable[..., dict]) -> Iterator[dict[str, LiveBridge]]:
    """One live bridge per backend, for the whole session; each advertises its own URL in the WSDL."""
    bridges = {
        name: LiveBridge(lambda url, name=name: create_app(settings_for(name, public_url=url)))
        for name in BACKENDS
    }
    yield bridges
    for bridge in bridges.values():
        bridge.stop()


# --- shared by more than one folder ------------------------------------------------------------------------


@pytest.fixture
def reload_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look at the clients file on every request, not at most once a second.

    For access/test_access.py and fronts/smsmobileapi/test_oauth.py.
    """
    monkeypatch.setattr(app.access.resolution, "RELOAD_CHECK_SECONDS", 0)


@pytest.fixture
def loopback_listeners() -> Iterator[list[Listener]]:
    """A listener on 127.0.0.1, and one on [::1] where the machine has IPv6 loopback.

    For webhooks/test_webhook_ssrf.py and test_audit_variations.py.
    """
    made = [Listener("127.0.0.1")]
    with contextlib.suppress(OSError):  # no IPv6 loopback here
        made.append(Listener("::1", made[0].port))
    yield made
    for listener in made:
        listener.close()


@pytest.fixture(scope="module")
def vendor_bridge(
    fake_vendor: FakeSmsMobileApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """The bridge under gunicorn in passthrough mode, in front of the fake vendor under /base.

    For backends/test_passthrough.py and test_audit_variations.py.
    """
    data = tmp_path_factory.mktemp("vendor-bridge")
    server = Gunicorn(
        {
            "SMSBRIDGE_BACKEND": "smsmobileapi",
            "SMSBRIDGE_SMSMOBILEAPI_URL": fake_vendor.url + "/base",
            "SMSBRIDGE_DATA_DIR": str(data),
        },
        data / "gunicorn.log",
    )
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the screenshots the browser tests took (tests/harness/browser.py), one path a line."""
    browser = sys.modules.get("tests.harness.browser")
    taken = browser.screenshots_taken() if browser else []
    if taken:
        terminalreporter.section("screenshots")
        for path in taken:
            terminalreporter.write_line(str(path))
