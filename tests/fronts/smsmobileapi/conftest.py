"""Fixtures of the dialect's tests: the session's live bridge of the backend under test."""

from __future__ import annotations

import pytest

from tests.harness.bridge import LiveBridge


@pytest.fixture
def live(live_bridges: dict[str, LiveBridge], backend: str) -> LiveBridge:
    """The live bridge of the backend under test (from tests/conftest.py's `live_bridges`)."""
    return live_bridges[backend]
