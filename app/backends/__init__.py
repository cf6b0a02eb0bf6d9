"""The backends, one module each, and the registry that picks one from the configuration."""

from __future__ import annotations

from app.backends.base import Backend
from app.backends.mobsms import MobsmsBackend
from app.backends.sandbox import SandboxBackend
from app.backends.smsmobileapi import SmsMobileApiBackend
from app.config import Settings

BACKEND_CLASSES: dict[str, type[Backend]] = {
    cls.name: cls for cls in (SandboxBackend, SmsMobileApiBackend, MobsmsBackend)
}


def build_backend(settings: Settings) -> Backend:
    """Return the backend SMSBRIDGE_BACKEND names."""
    return BACKEND_CLASSES[settings.backend](settings)


__all__ = ["BACKEND_CLASSES", "Backend", "build_backend"]
