"""Fixtures: fake upstreams as real HTTP servers on 127.0.0.1, and the bridge built or served against them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from app import create_app
from app.backends import BACKEND_NAMES as BACKENDS
from tests.fakes.mobsms import FakeMobsms
from tests.fakes.smsmobileapi import FakeSmsMobileApi

#: a key each backend accepts, as a client of that backend would hold it
GOOD_KEY = {"sandbox": "sandbox-key-1", "smsmobileapi": "vendor-key-1", "mobsms": "mobsms-key-1"}

#: the message every interop test sends: Cyrillic, the euro sign, Latin-1, CJK and an emoji
UNICODE_TEXT = "Здравей € ñ 你好 😀"


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


class LiveBridge:
    """A bridge served over real HTTP on 127.0.0.1 from a thread of the test process."""

    def __init__(self, build: Callable[[str], Flask]) -> None:
        # Bind first, so that the app can be built advertising the URL it is really served at.
        self.server = make_server("127.0.0.1", 0, Flask("placeholder"), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.app = build(self.url)
        self.server.app = self.app
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def wsdl_url(self) -> str:
        return self.url + "/sendsms/wsdl/sendsms.wsdl"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


@pytest.fixture
def live(live_bridges: dict[str, LiveBridge], backend: str) -> LiveBridge:
    """The live bridge of the backend under test."""
    return live_bridges[backend]


def data_dir(app: Flask) -> Path:
    """Return the data directory an app was built with."""
    return app.extensions["smsbridge"].settings.data_dir
