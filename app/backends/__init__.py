"""The backends, one module each, and the registry that picks one from the configuration.

A backend's module is imported when a backend of its name is first built, not with this package:
gunicorn's master imports the sandbox's module to prepare its database before the workers start, and
must not load an HTTP client (urllib3 imports ssl, which gevent has to patch first, in the worker).
"""

from __future__ import annotations

from importlib import import_module

from app.backends.base import Backend
from app.config import Settings

#: each SMSBRIDGE_BACKEND name and the class that serves it ("module:Class")
_CLASSES = {
    "sandbox": "app.backends.sandbox:SandboxBackend",
    "smsmobileapi": "app.backends.smsmobileapi:SmsMobileApiBackend",
    "mobsms": "app.backends.mobsms:MobsmsBackend",
}
BACKEND_NAMES = tuple(_CLASSES)


def backend_class(name: str) -> type[Backend]:
    """Return the class of the backend called `name`."""
    module, _, cls = _CLASSES[name].partition(":")
    found: type[Backend] = getattr(import_module(module), cls)
    return found


def build_backend(settings: Settings) -> Backend:
    """Return the backend SMSBRIDGE_BACKEND names."""
    return backend_class(settings.backend)(settings)


__all__ = ["BACKEND_NAMES", "Backend", "backend_class", "build_backend"]
