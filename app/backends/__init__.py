"""The backends, one module each, and the registry that picks one from the configuration.

A backend's module is imported when a backend of its name is first built, not with this package:
gunicorn's master imports the sandbox's module to prepare its database before the workers start, and
must not load an HTTP client (urllib3 imports ssl, which gevent has to patch first, in the worker).

The names and classes are listed once, in app/registry.py (plain strings, which app/config.py checks
SMSBRIDGE_BACKEND and SMSBRIDGE_FAILOVER_BACKEND against without importing a backend).
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from app.backends.base import Backend, WebhookEvent
from app.registry import BACKEND_CLASSES, BACKEND_NAMES

if TYPE_CHECKING:
    from app.config import Settings


def backend_class(name: str) -> type[Backend]:
    """Return the class of the backend called `name` (importing its module: not in gunicorn's master)."""
    module, _, cls = BACKEND_CLASSES[name].partition(":")
    found: type[Backend] = getattr(import_module(module), cls)
    return found


def build_backend(settings: Settings) -> Backend:
    """Return the backend SMSBRIDGE_BACKEND names."""
    return backend_class(settings.backend)(settings)


@cache
def webhook_source_names() -> tuple[str, ...]:
    """Return the names of the backends whose upstreams post webhooks (/webhooks/<name>/<client>), by name."""
    return tuple(sorted(name for name in BACKEND_NAMES if backend_class(name).receives_webhooks))


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "WebhookEvent",
    "backend_class",
    "build_backend",
    "webhook_source_names",
]
