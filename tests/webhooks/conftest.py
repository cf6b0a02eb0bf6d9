"""Fixtures of the webhook tests: fast retries, the client's receivers, bridges served over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

import app.state.sqlite.outbox
from tests.harness.bridge import LiveBridge
from tests.harness.net import port_of, stop_quickly
from tests.harness.webhooks import TOKEN_SECRET, Receiver, park


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """First retry after 0.05-0.15 s instead of 1-3 s."""
    monkeypatch.setattr(app.state.sqlite.outbox, "FIRST_RETRY_SECONDS", 0.1)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Any]]:
    """Make receivers, stopped at the end of the test."""
    made: list[Receiver] = []

    def make(kind: type[Receiver], *args: Any, **kwargs: Any) -> Any:
        receiver = kind(*args, **kwargs)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        stop_quickly(receiver.stop, port_of(receiver.url))


@pytest.fixture
def serve(make_app: Callable[..., Flask]) -> Iterator[Callable[..., LiveBridge]]:
    """Serve bridges over HTTP on 127.0.0.1 (loopback receivers allowed unless overridden)."""
    bridges: list[LiveBridge] = []

    def start(backend: str = "mobsms", **overrides: Any) -> LiveBridge:
        settings = {"webhook_allow_private": True, "token_secret": TOKEN_SECRET, **overrides}
        bridge = LiveBridge(lambda url: make_app(backend, public_url=url, **settings))
        bridge.app.extensions["smsbridge"].deliverer.poll = 0.05
        bridges.append(bridge)
        return bridge

    yield start
    for bridge in bridges:
        stop_quickly(bridge.stop, port_of(bridge.url))
        park(bridge.app)
