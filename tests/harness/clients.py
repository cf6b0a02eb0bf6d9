"""Clients files: the keys and client tables tests share, written as the bridge reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from app.access.resolution import hash_key

KEY_A = "client-key-A"  # a mobsms client
KEY_B = "client-key-B"  # an smsmobileapi client
KEY_S = "client-key-S"  # a sandbox client
MOBSMS_KEY = "mobsms-key-1"  # the key the fake mobsms accepts
VENDOR_KEY = "vendor-key-1"  # a key the fake SMSMobileAPI accepts

MOBSMS_CLIENT = {"key_sha256": [hash_key(KEY_A)], "backend": "mobsms", "upstream_key": MOBSMS_KEY}
VENDOR_CLIENT = {"key_sha256": [hash_key(KEY_B)], "backend": "smsmobileapi", "upstream_key": VENDOR_KEY}
SANDBOX_CLIENT = {"key_sha256": [hash_key(KEY_S)], "backend": "sandbox"}


def clients_toml(clients: dict[str, dict], defaults: dict | None = None) -> str:
    """Render a clients file: {name: {field: str | list[str]}} as [clients.name] tables."""
    lines = []
    if defaults:
        lines.append("[defaults]")
        lines += [f"{field} = {json.dumps(value)}" for field, value in defaults.items()]
    for name, spec in clients.items():
        lines.append(f"[clients.{json.dumps(name)}]")
        lines += [f"{field} = {json.dumps(value)}" for field, value in spec.items()]
    return "\n".join(lines) + "\n"


def write_clients(path: Path, clients: dict[str, dict] | str, defaults: dict | None = None) -> Path:
    """Write a clients file (a dict of clients, or raw text), making sure its mtime changes."""
    before = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(clients if isinstance(clients, str) else clients_toml(clients, defaults))
    if before is not None and path.stat().st_mtime_ns <= before:
        stamp = before + 1_000_000
        os.utime(path, ns=(stamp, stamp))
    return path
