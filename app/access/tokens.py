"""OAuth2 access tokens and webhook source tags, signed with itsdangerous under the token secrets.

The secrets are SMSBRIDGE_TOKEN_SECRET's comma-separated values (the last one signs, all verify), or
else one generated in the data directory (`token-secret`) before the workers start. Tokens and tags
are signed under different salts, so that neither can stand for the other.

A token is `sbt2.` followed by an itsdangerous URL-safe timed signature of {sub: the client's name,
kh: an HMAC, under the signing secret, of the SHA-256 of the key the client authenticated with}. It is
accepted until its lifetime has passed, while its client exists and still holds that exact key:
revoking a key revokes its tokens, and adding a key leaves them be.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from itsdangerous import BadData, Signer, TimestampSigner, URLSafeTimedSerializer

from app.config import MIN_SECRET_BYTES, ConfigError, env_name

PREFIX = "sbt2."
#: the hand-made format before itsdangerous: still known as a token, so its holder is told to get a
#: new one, and never accepted
LEGACY_PREFIX = "sbt1."
# Salts and a file name, not secrets.
TOKEN_SALT = "smsbridge.oauth2-token"  # noqa: S105
SOURCE_SALT = "smsbridge.webhook-source"
SECRET_FILE = "token-secret"  # noqa: S105
#: how far ahead of this host's clock a token's issue time may be (another host's clock)
MAX_CLOCK_SKEW = 5


class _ClockedSigner(TimestampSigner):
    """A TimestampSigner that reads the time from the clock it is given."""

    def __init__(self, *args: Any, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def get_timestamp(self) -> int:
        """Return the clock's time in whole seconds."""
        return int(self.clock())


class TokenSigner:
    """Issue and check the bridge's access tokens; tag and verify webhook source URLs."""

    def __init__(
        self, secret_keys: bytes | Sequence[bytes], ttl: int, clock: Callable[[], float] | None = None
    ) -> None:
        keys = [secret_keys] if isinstance(secret_keys, bytes) else list(secret_keys)
        if not keys or any(len(key) < MIN_SECRET_BYTES for key in keys):
            raise ValueError(f"every token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._keys = keys
        self.ttl = ttl
        #: the wall clock tokens are issued and checked by (a test gives its own)
        self.clock: Callable[[], float] = clock or time.time
        self._tokens = URLSafeTimedSerializer(
            keys,
            salt=TOKEN_SALT,
            signer=_ClockedSigner,
            signer_kwargs={"clock": self._now, "digest_method": hashlib.sha256},
        )
        self._sources = Signer(keys, salt=SOURCE_SALT, digest_method=hashlib.sha256)

    def _now(self) -> float:
        """Return the clock's time: read through the attribute, so that a clock set later is used."""
        return self.clock()

    @classmethod
    def from_settings(cls, secret_keys: Sequence[bytes], data_dir: Path, ttl: int) -> TokenSigner:
        """Use the configured secrets (the last signs), else the one kept in the data directory."""
        return cls(list(secret_keys) or [stored_secret(data_dir)], ttl)

    def issue(self, client: str, key_hash: str) -> str:
        """Return a token for `client`, who authenticated with the key whose SHA-256 hex is `key_hash`."""
        claims = {"sub": client, "kh": self._key_proof(self._keys[-1], key_hash)}
        return PREFIX + self._tokens.dumps(claims)

    def check(self, token: str) -> tuple[str, str] | None:
        """Return (client, key proof) of a valid token within its lifetime, else None."""
        if not token.startswith(PREFIX):
            return None
        try:
            claims, issued = self._tokens.loads(token[len(PREFIX) :], return_timestamp=True)
        except BadData:
            return None
        if not isinstance(claims, dict):
            return None
        client, proof = claims.get("sub"), claims.get("kh")
        if not isinstance(client, str) or not isinstance(proof, str):
            return None
        age = self.clock() - issued.timestamp()
        if not -MAX_CLOCK_SKEW <= age < self.ttl:
            return None
        return client, proof

    def proves_key(self, proof: str, key_hash: str) -> bool:
        """Say whether a token's key proof was made for the key whose SHA-256 hex is `key_hash`."""
        # Each secret in turn: the token may have been signed before the last one was added.
        return any(hmac.compare_digest(proof, self._key_proof(key, key_hash)) for key in self._keys)

    def label(self, text: str) -> str:
        """Return the unguessable, stable tag of `text` (the secret part of a webhook source URL)."""
        return self._sources.get_signature(text).decode()

    def verify_label(self, text: str, tag: str) -> bool:
        """Say whether `tag` is the tag of `text` under any of the secrets."""
        if self._sources.verify_signature(text, tag.encode()):
            return True
        # Source URLs given out before itsdangerous (an HMAC in hex) are registered with upstreams:
        # they keep working under the same secrets.
        return any(
            hmac.compare_digest(
                tag.encode(),
                hmac.new(key, f"label:{text}".encode(), hashlib.sha256).hexdigest()[:32].encode(),
            )
            for key in self._keys
        )

    @staticmethod
    def _key_proof(secret_key: bytes, key_hash: str) -> str:
        return hmac.new(secret_key, f"client-key:{key_hash}".encode(), hashlib.sha256).hexdigest()


def is_token(value: str) -> bool:
    """Say whether a Bearer value is one of the bridge's tokens (and not, say, the vendor's)."""
    return value.startswith((PREFIX, LEGACY_PREFIX))


def stored_secret(data_dir: Path) -> bytes:
    """Return the generated secret kept in `data_dir`, making it the first time; raise ConfigError."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        _create_secret(path)
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"the token secret {path} cannot be read ({exc.strerror})") from None
    if len(secret) < MIN_SECRET_BYTES:
        # Never sign with it: an empty or short secret lets anyone forge tokens and webhook URLs.
        raise ConfigError(
            f"the token secret {path} holds {len(secret)} bytes, fewer than {MIN_SECRET_BYTES} (left "
            f"half-written by an earlier version?): delete it to have a new one made (tokens and webhook "
            f"URLs given out under it stop working), or set {env_name('token_secret')}"
        )
    return secret


def _create_secret(path: Path) -> None:
    """Write a new secret to `path` whole or not at all; if another process got there first, keep theirs."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp makes the file readable and writable by its owner only (0600).
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_FILE}.")
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(MIN_SECRET_BYTES))
            out.flush()
            os.fsync(out.fileno())
        # A link, unlike a rename, never replaces a secret another process made meanwhile.
        try:
            os.link(temporary, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links on this file system (some bind mounts, 9p, SMB): a rename, which callers
            # make only under the data directory's lock (app.startup), so none made one meanwhile.
            if path.exists():
                raise FileExistsError(path) from None
            os.rename(temporary, path)
    except FileExistsError:
        return
    except OSError as exc:
        raise _unwritable(path, exc) from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"the token secret {path} cannot be made ({exc.strerror}): make the data directory writable "
        f"by the bridge, or set {env_name('token_secret')}"
    )


def prepare_secret(secret: str | None, data_dir: Path) -> None:
    """Make the generated token secret before the workers start (nothing to do when one is configured)."""
    if not secret:
        stored_secret(data_dir)
