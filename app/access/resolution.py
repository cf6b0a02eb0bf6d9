"""Who is calling, and what credential goes upstream: passthrough and managed access.

Passthrough (the default): the caller's key is the upstream credential, and the backend is the
configured one. Managed (SMSBRIDGE_CLIENTS_FILE set): the caller's key must be one of the bridge's own
client keys, stored in the file only as SHA-256 hashes; each client names its backend, that backend's
credential and its rate limit. The file is read again when it changes, so keys are added, rotated and
revoked without a restart; a file that no longer reads keeps the previous clients and logs why.

An example file:

    [defaults]
    rate_limit = "120/minute"

    [clients.acme-shop]
    key_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
    backend = "mobsms"
    upstream_key_env = "ACME_MOBSMS_KEY"     # or upstream_key = "..."
    rate_limit = "10/minute;500/day"
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.access.tokens import TokenSigner, is_token
from app.backends import BACKEND_NAMES, Backend
from app.config import ConfigError, Settings, check_limit
from app.errors import CredentialRefused
from app.vocabulary import Credential, CredentialSource, key_digest
from app.webhook_targets import Target, check_target

log = logging.getLogger(__name__)

#: how often, at most, a worker looks whether the clients file changed
RELOAD_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class ClientEntry:
    """One client of a managed bridge."""

    name: str
    key_hashes: frozenset[str]
    backend: str
    upstream_key: str = field(repr=False)
    rate_limit: str | None = None
    failover_backend: str | None = None
    failover_key: str = field(default="", repr=False)
    webhook: Target | None = None
    vendor_webhook_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class Principal:
    """The caller as the bridge acts for it."""

    #: the name logs and rate limits use: a client's name, or a key's fingerprint
    client: str
    backend: Backend
    #: the credential the backend is called with
    upstream: Credential
    rate_limit: str
    #: where a send goes when the backend provably did not receive it, and with what credential
    failover: tuple[Backend, Credential] | None = None


def _upstream_source(source: CredentialSource) -> CredentialSource:
    # An upstream API key travels as `apikey`: a Bearer header upstream would be an OAuth token.
    return CredentialSource.QUERY if source is CredentialSource.BEARER else source


#: the SHA-256 hex digest a clients file stores for a key
hash_key = key_digest


class Access:
    """Resolve callers to principals, in passthrough or managed mode."""

    def __init__(
        self, settings: Settings, backend_for: Callable[[str], Backend], tokens: TokenSigner
    ) -> None:
        self.settings = settings
        self.backend_for = backend_for
        self.tokens = tokens
        self.path = Path(settings.clients_file) if settings.clients_file else None
        self._lock = threading.Lock()
        #: the monotonic clock the clients file's reload checks are timed by (a test gives its own)
        self.clock: Callable[[], float] = time.monotonic
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._clients: dict[str, ClientEntry] = {}
        self._by_hash: dict[str, ClientEntry] = {}
        self._default_limit = settings.rate_limit
        if self.path is not None:
            self._load(initial=True)

    @property
    def managed(self) -> bool:
        """Whether callers must hold one of the bridge's own client keys."""
        return self.path is not None

    def resolve(self, credential: Credential) -> Principal:
        """Return who `credential` belongs to, or raise CredentialRefused."""
        if not self.managed:
            failover = None
            if self.settings.failover_backend:
                failover = (
                    self.backend_for(self.settings.failover_backend),
                    Credential(
                        self.settings.failover_key or "failover",
                        _upstream_source(credential.source),
                        operator_held=True,
                    ),
                )
            return Principal(
                client=credential.fingerprint,
                backend=self.backend_for(self.settings.backend),
                upstream=credential,
                rate_limit=self._default_limit,
                failover=failover,
            )
        if credential.source is CredentialSource.BEARER and is_token(credential.secret):
            entry = self.client_for_token(credential.secret)
            if entry is None:
                raise CredentialRefused(
                    "the access token is invalid or expired: get a new one from /oauth2/token"
                )
            return self.principal_for(entry, credential.source)
        entry = self.client_for_key(credential.secret)
        if entry is None:
            raise CredentialRefused("the API key is not one of this bridge's client keys")
        return self.principal_for(entry, credential.source)

    def issue_token(self, client_id: str, client_secret: str) -> str | None:
        """Return a token for a managed client whose id and secret (its key) match, else None."""
        entry = self.client_for_key(client_secret)
        if entry is None or not hmac.compare_digest(entry.name.encode(), client_id.encode()):
            return None
        return self.tokens.issue(entry.name, hash_key(client_secret))

    def client_for_token(self, token: str) -> ClientEntry | None:
        """Return the client of a valid token whose key the client still holds."""
        claims = self.tokens.check(token)
        if claims is None:
            return None
        client, key_proof = claims
        entry = self.client_named(client)
        if entry is None or not any(self.tokens.proves_key(key_proof, h) for h in entry.key_hashes):
            return None
        return entry

    def principal_for(self, entry: ClientEntry, source: CredentialSource) -> Principal:
        """Return the principal of a managed client calling with its key in `source`."""
        failover = None
        if entry.failover_backend:
            failover = (
                self.backend_for(entry.failover_backend),
                Credential(
                    entry.failover_key or f"client:{entry.name}", _upstream_source(source), operator_held=True
                ),
            )
        return Principal(
            client=entry.name,
            backend=self.backend_for(entry.backend),
            upstream=Credential(entry.upstream_key, _upstream_source(source), operator_held=True),
            rate_limit=entry.rate_limit or self._default_limit,
            failover=failover,
        )

    def client_for_key(self, key: str) -> ClientEntry | None:
        """Return the managed client whose key is `key`, comparing digests in constant time."""
        self._reload_if_changed()
        digest = hash_key(key)
        entry = self._by_hash.get(digest)
        if entry is None or not any(hmac.compare_digest(digest, h) for h in entry.key_hashes):
            return None
        return entry

    def client_named(self, name: str) -> ClientEntry | None:
        """Return the managed client called `name`."""
        self._reload_if_changed()
        return self._clients.get(name)

    def entries(self) -> list[ClientEntry]:
        """Return the managed clients, as the clients file says now."""
        self._reload_if_changed()
        return list(self._clients.values())

    def any_webhook(self) -> bool:
        """Say whether any client has a webhook target."""
        return any(entry.webhook for entry in self._clients.values())

    def webhook_for(self, client: str) -> Target | None:
        """Return where a client's events go: its own target (managed), else the configured one."""
        if self.managed:
            entry = self.client_named(client)
            return entry.webhook if entry else None
        if self.settings.webhook_url:
            return Target(
                self.settings.webhook_url, self.settings.webhook_format, self.settings.webhook_secret or ""
            )
        return None

    def limit_for_client(self, client: str | None) -> str:
        """Return the rate limit of a managed client's name; the default for anyone else."""
        entry = self._clients.get(client) if client else None
        return (entry.rate_limit if entry else None) or self._default_limit

    def _reload_if_changed(self) -> None:
        if self.path is None or self.clock() - self._checked < RELOAD_CHECK_SECONDS:
            return
        with self._lock:
            self._checked = self.clock()
            try:
                stat = self.path.stat()
            except OSError as exc:
                log.error(
                    "clients file %s cannot be read (%s); keeping the clients loaded before", self.path, exc
                )
                return
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._load(initial=False)

    def _load(self, *, initial: bool) -> None:
        assert self.path is not None
        try:
            stat = self.path.stat()
            clients, default_limit = parse_clients_file(self.path.read_bytes(), self.path)
        except (OSError, ConfigError) as exc:
            if initial:
                raise ConfigError(f"SMSBRIDGE_CLIENTS_FILE: {exc}") from None
            log.error("clients file %s is invalid (%s); keeping the clients loaded before", self.path, exc)
            if isinstance(exc, ConfigError):
                # Said once for this version of the file, not at every check until it is fixed.
                self._stamp = (stat.st_mtime_ns, stat.st_size)
            return
        for entry in clients.values():
            self.backend_for(entry.backend)
        self._clients = clients
        self._by_hash = {h: entry for entry in clients.values() for h in entry.key_hashes}
        self._default_limit = default_limit or self.settings.rate_limit
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        if not initial:
            log.info("clients file %s reloaded: %d clients", self.path, len(clients))


def _webhook_of(spec: dict, where: str) -> Target | None:
    url = spec.get("webhook_url")
    if url is None:
        return None
    fmt = spec.get("webhook_format", "v2")
    secret = spec.get("webhook_secret")
    if "webhook_secret_env" in spec:
        secret = os.environ.get(str(spec["webhook_secret_env"]))
    if not isinstance(url, str) or not isinstance(fmt, str) or not isinstance(secret, str | None):
        raise ConfigError(f"{where} webhook_url, webhook_format and webhook_secret must be strings")
    try:
        check_target(url, fmt, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if fmt == "v2" and not secret:
        raise ConfigError(f"{where} needs webhook_secret (or webhook_secret_env) to sign v2 webhooks")
    return Target(url=url, format=fmt, secret=secret or "")


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) is not None


def parse_clients_file(raw: bytes, path: Path) -> tuple[dict[str, ClientEntry], str | None]:
    """Parse and check a clients file; raise ConfigError naming what is wrong."""
    try:
        document = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [defaults] must be a table")
    if not isinstance(document.get("clients", {}), dict):
        raise ConfigError(f"{path}: [clients] must be a table of [clients.NAME] tables")
    default_limit = defaults.get("rate_limit")
    if default_limit is not None:
        check_limit(default_limit, f"{path}: [defaults] rate_limit")
    clients: dict[str, ClientEntry] = {}
    seen_hashes: set[str] = set()
    for name, spec in document.get("clients", {}).items():
        where = f"{path}: [clients.{name}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table")
        hashes = spec.get("key_sha256")
        if isinstance(hashes, str):
            hashes = [hashes]
        if not isinstance(hashes, list) or not hashes or not all(_is_sha256(h) for h in hashes):
            raise ConfigError(f"{where} key_sha256 must be one or more SHA-256 hex digests")
        hashes = [h.lower() for h in hashes]
        if seen_hashes & set(hashes):
            raise ConfigError(f"{where} shares a key_sha256 with another client")
        seen_hashes |= set(hashes)
        backend = spec.get("backend")
        if not isinstance(backend, str) or backend not in BACKEND_NAMES:
            raise ConfigError(f"{where} backend must be one of {', '.join(BACKEND_NAMES)}")
        upstream = spec.get("upstream_key")
        if "upstream_key_env" in spec:
            if not isinstance(spec["upstream_key_env"], str):
                raise ConfigError(f"{where} upstream_key_env must be the name of an environment variable")
            upstream = os.environ.get(spec["upstream_key_env"])
            if not upstream:
                raise ConfigError(
                    f"{where} upstream_key_env names {spec['upstream_key_env']}, which is not set"
                )
        if upstream is not None and not isinstance(upstream, str):
            raise ConfigError(f"{where} upstream_key must be a string")
        if not upstream and backend != "sandbox":
            raise ConfigError(f"{where} needs upstream_key or upstream_key_env: the {backend} credential")
        limit = spec.get("rate_limit")
        if limit is not None:
            check_limit(limit, f"{where} rate_limit")
        failover = spec.get("failover_backend")
        failover_key = spec.get("failover_upstream_key")
        if "failover_upstream_key_env" in spec:
            if not isinstance(spec["failover_upstream_key_env"], str):
                raise ConfigError(f"{where} failover_upstream_key_env must name an environment variable")
            failover_key = os.environ.get(spec["failover_upstream_key_env"])
        if failover is not None:
            if not isinstance(failover, str) or failover not in BACKEND_NAMES or failover == backend:
                raise ConfigError(f"{where} failover_backend must be another of {', '.join(BACKEND_NAMES)}")
            if not isinstance(failover_key, str | None) or (not failover_key and failover != "sandbox"):
                raise ConfigError(f"{where} needs failover_upstream_key(_env): the {failover} credential")
        webhook = _webhook_of(spec, where)
        vendor_secret = spec.get("vendor_webhook_secret", "")
        if not isinstance(vendor_secret, str):
            raise ConfigError(f"{where} vendor_webhook_secret must be a string")
        clients[name] = ClientEntry(
            name=name,
            key_hashes=frozenset(hashes),
            backend=backend,
            # A sandbox client without an upstream key gets a sandbox account of its own.
            upstream_key=upstream or f"client:{name}",
            rate_limit=limit,
            failover_backend=failover,
            failover_key=failover_key or "",
            webhook=webhook,
            vendor_webhook_secret=vendor_secret,
        )
    return clients, default_limit
