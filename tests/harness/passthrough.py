"""A managed bridge whose one client uses the smsmobileapi backend with an operator key that quotes badly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from app.access.resolution import hash_key

#: an operator key with characters that URL, JSON and HTML each write their own way
OPERATOR_KEY = 'op/Key+1 é"&'
CLIENT_KEY = "shop-client-key-1"


def managed_vendor_app(make_app: Callable[..., Flask], tmp_path: Path, **overrides: object) -> Flask:
    """Build a managed bridge with one smsmobileapi client, whose upstream key is OPERATOR_KEY."""
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f'[clients.shop]\nkey_sha256 = ["{hash_key(CLIENT_KEY)}"]\nbackend = "smsmobileapi"\n'
        f"upstream_key = {json.dumps(OPERATOR_KEY)}\n"
    )
    return make_app("sandbox", clients_file=str(clients), **overrides)
