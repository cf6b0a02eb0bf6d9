"""OAuth2 access tokens: signed, so that every worker and every host sharing the secret accepts them.

A token is `sbt1.<payload>.<signature>`: base64url JSON {sub: client name, kh: the hash of the key the
client authenticated with, exp}, HMAC-SHA256 signed. It is accepted until it expires, while its client
exists and still holds that key: revoking a key revokes its tokens, and adding a key leaves them be.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

PREFIX = "sbt1."


class TokenSigner:
    """Issue and check the bridge's access tokens."""

    def __init__(self, secret: bytes, ttl: int) -> None:
        self._secret = secret
        self.ttl = ttl

    @classmethod
    def from_settings(cls, secret: str | None, data_dir: Path, ttl: int) -> TokenSigner:
        """Use the configured secret, else one kept in the data directory (made on first start)."""
        if secret:
            return cls(secret.encode(), ttl)
        return cls(_stored_secret(data_dir / "token-secret"), ttl)

    def issue(self, client: str, key_hash: str, now: float | None = None) -> str:
        """Return a token for `client`, who authenticated with the key whose hash is `key_hash`."""
        expires = int(now if now is not None else time.time()) + self.ttl
        payload = _b64(json.dumps({"sub": client, "kh": key_hash[:16], "exp": expires}).encode())
        return f"{PREFIX}{payload}.{self._sign(payload)}"

    def check(self, token: str, now: float | None = None) -> tuple[str, str] | None:
        """Return (client, key hash prefix) of a valid, unexpired token, else None."""
        if not token.startswith(PREFIX):
            return None
        payload, _, signature = token[len(PREFIX) :].partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            client, key_hash, expires = str(claims["sub"]), str(claims["kh"]), int(claims["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= (now if now is not None else time.time()):
            return None
        return client, key_hash

    def label(self, text: str) -> str:
        """Return an unguessable, stable tag for `text` (the secret part of a webhook source URL)."""
        return hmac.new(self._secret, f"label:{text}".encode(), hashlib.sha256).hexdigest()[:32]

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, (PREFIX + payload).encode(), hashlib.sha256).digest())


def is_token(value: str) -> bool:
    """Say whether a Bearer value is one of the bridge's tokens (and not, say, the vendor's)."""
    return value.startswith(PREFIX)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _stored_secret(path: Path) -> bytes:
    """Read the token secret kept at `path`, creating it (readable by its owner only) the first time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        secret = secrets.token_bytes(32)
        out.write(secret)
    return secret


def prepare_secret(secret: str | None, data_dir: Path) -> None:
    """Make the generated token secret before the workers start (nothing to do when one is configured)."""
    if not secret:
        _stored_secret(data_dir / "token-secret")
