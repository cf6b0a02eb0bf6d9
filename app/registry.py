"""Every backend, by name: the one list of SMSBRIDGE_BACKEND names and the class that serves each.

Plain strings ("module:Class"), so that the configuration can check names without importing a backend:
app.backends imports a backend's module when one of its name is first built (gunicorn's master imports
no HTTP client). Adding a backend: its module under app/backends/, one line here, its test file
(docs/architecture.md, "Adding a backend").
"""

from __future__ import annotations

#: each SMSBRIDGE_BACKEND name and the class that serves it ("module:Class")
BACKEND_CLASSES = {
    "sandbox": "app.backends.sandbox:SandboxBackend",
    "smsmobileapi": "app.backends.smsmobileapi:SmsMobileApiBackend",
    "mobsms": "app.backends.mobsms:MobsmsBackend",
}
BACKEND_NAMES = tuple(BACKEND_CLASSES)
