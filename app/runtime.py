"""What a running bridge holds: its settings and its backend, reachable from any request."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from app.backends import Backend
from app.config import Settings

EXTENSION = "smsbridge"


@dataclass(frozen=True)
class Runtime:
    """The bridge's state for one Flask app."""

    settings: Settings
    backend: Backend


def init_app(app: Flask, settings: Settings, backend: Backend) -> Runtime:
    """Attach the runtime to `app`."""
    state = Runtime(settings=settings, backend=backend)
    app.extensions[EXTENSION] = state
    return state


def runtime() -> Runtime:
    """Return the runtime of the app handling the current request."""
    return current_app.extensions[EXTENSION]
