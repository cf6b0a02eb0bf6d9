"""Every SMSBRIDGE_* setting, named once, typed and validated at start-up."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many

from app.phone import REGIONS
from app.registry import BACKEND_NAMES
from app.webhook_targets import check_target

#: the shortest token secret accepted, configured or generated
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and says what is expected."""


@dataclass(frozen=True)
class Settings:
    """The bridge's configuration; build it with `Settings.from_env`."""

    backend: str = "sandbox"
    smsmobileapi_url: str = "https://api.smsmobileapi.com"
    mobsms_url: str = "https://api.mobsms.cloud"
    public_url: str = "http://localhost:8080"
    data_dir: Path = Path("data")
    connect_timeout: float = 3.0
    read_timeout: float = 7.0
    upstream_ca_bundle: str | None = None
    upstream_pool_size: int = 256
    #: an egress proxy for upstream calls; unset, HTTPS_PROXY / HTTP_PROXY / NO_PROXY apply
    upstream_proxy: str | None = field(default=None, repr=False)
    #: the region national numbers (0470 12 34 56) belong to, for backends that need E.164
    default_region: str | None = None
    max_body_bytes: int = 256 * 1024
    sandbox_api_keys: frozenset[str] = field(default_factory=frozenset)
    mobsms_max_pages: int = 20
    clients_file: str | None = None
    rate_limit: str = "120/minute"
    #: may hold a password (postgresql://USER:PASSWORD@..., redis://:PASSWORD@...): never shown
    ratelimit_storage: str = field(default="sqlite://", repr=False)
    #: where the state that must never be lost or repeated lives: SQLite files in the data directory, or
    #: a PostgreSQL database several hosts share (its URL may hold a password: never shown)
    state_url: str = field(default="sqlite://", repr=False)
    #: the first part of every count's name in the storage: bridges sharing a Redis share counts
    #: only when they share the prefix
    ratelimit_key_prefix: str = "smsbridge"
    token_secret: str | None = field(default=None, repr=False)
    token_ttl: int = 3600
    trusted_proxies: int = 0
    #: one gevent worker per core: each is held to one core by the GIL
    workers: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    idempotency_ttl: int = 86400
    failover_backend: str | None = None
    failover_key: str | None = field(default=None, repr=False)
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    webhook_url: str | None = None
    webhook_format: str = "v2"
    webhook_secret: str | None = field(default=None, repr=False)
    vendor_webhook_secret: str | None = field(default=None, repr=False)
    webhook_allow_private: bool = False
    webhook_retry_hours: float = 24.0
    webhook_timeout: float = 5.0
    #: attempts one worker runs at once to one webhook target (scheme, host, port)
    webhook_target_concurrency: int = 4
    #: delivered webhook events are purged this long after delivery (dead ones are kept)
    webhook_retention_days: float = 7.0
    metrics_token: str | None = field(default=None, repr=False)
    #: closes the web inbox (sandbox) and opens the operator console with any other backend
    ui_password: str | None = field(default=None, repr=False)
    log_level: str = "INFO"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        *,
        parse_urls: bool = True,
    ) -> Settings:
        """Read SMSBRIDGE_* variables, apply `overrides` (field names), validate, or raise ConfigError.

        `parse_urls=False` leaves out the webhook URL's check, which imports the HTTP client (urllib3's
        parser): gunicorn's master reads the settings that way, so that urllib3 is imported only in the
        workers, after gevent patched ssl; each worker checks everything when it builds the app.
        """
        env = os.environ if environ is None else environ
        _refuse_unknown_variables(env)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw.strip() != "":
                values[f.name] = _PARSERS.get(f.name, _text)(f.name, raw.strip())
        for name, value in (overrides or {}).items():
            if name not in _FIELD_NAMES:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = value
        settings = cls(**values)
        settings.validate(parse_urls=parse_urls)
        return settings

    @property
    def token_secrets(self) -> list[bytes]:
        """Return SMSBRIDGE_TOKEN_SECRET's secrets, oldest first (the last one signs); none if unset."""
        return split_token_secret(self.token_secret) if self.token_secret is not None else []

    def validate(self, *, parse_urls: bool = True) -> None:
        """Raise ConfigError naming the first invalid setting (see `from_env` for `parse_urls`)."""
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(
                f"{env_name('backend')}={self.backend!r}: expected one of {', '.join(BACKEND_NAMES)}"
            )
        for name in ("smsmobileapi_url", "mobsms_url", "public_url"):
            _check_base_url(name, getattr(self, name))
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 300:
                raise ConfigError(f"{env_name(name)}={value}: expected seconds in (0, 300]")
        check_limit(self.rate_limit, env_name("rate_limit"))
        if self.clients_file and not Path(self.clients_file).is_file():
            raise ConfigError(f"{env_name('clients_file')}={self.clients_file!r}: no such file")
        _check_ratelimit_storage(self.ratelimit_storage)
        if self.ratelimit_storage == "postgresql://" and not self.state_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError(
                f"{env_name('ratelimit_storage')}=postgresql:// counts in {env_name('state_url')}'s "
                "database, which is not PostgreSQL: set it, or give the counts' database in full"
            )
        _check_state_url(self.state_url)
        if self.state_url != "sqlite://" and self.token_secret is None:
            raise ConfigError(
                f"{env_name('state_url')} names a PostgreSQL database several hosts share, so "
                f"{env_name('token_secret')} must be set, to the same value on every host: unset, each host "
                "makes its own secret in its data directory, and a token or webhook URL one host gives out "
                "is refused by the others"
            )
        if not _KEY_PREFIX.fullmatch(self.ratelimit_key_prefix):
            raise ConfigError(
                f"{env_name('ratelimit_key_prefix')}={self.ratelimit_key_prefix!r}: expected 1 to 64 "
                "letters, digits, '.', '_', ':' or '-' (bridges sharing a Redis share counts only when "
                "they share the prefix)"
            )
        if self.workers > 1 and self.ratelimit_storage.startswith("memory://"):
            raise ConfigError(
                f"{env_name('workers')}={self.workers} with {env_name('ratelimit_storage')}=memory:// "
                "would count each client's requests in each worker separately, multiplying its limit: "
                "use sqlite:// (the workers of one host) or redis:// (several hosts)"
            )
        if self.token_secret is not None:
            split_token_secret(self.token_secret)
        if not 60 <= self.token_ttl <= 86400:
            raise ConfigError(f"{env_name('token_ttl')} must be between 60 and 86400 seconds")
        if not 0 <= self.trusted_proxies <= 10:
            raise ConfigError(f"{env_name('trusted_proxies')} must be between 0 and 10")
        if self.failover_backend is not None:
            if self.failover_backend not in BACKEND_NAMES or self.failover_backend == self.backend:
                raise ConfigError(
                    f"{env_name('failover_backend')}={self.failover_backend!r}: expected another of "
                    f"{', '.join(BACKEND_NAMES)} than {env_name('backend')}"
                )
            if not self.failover_key and self.failover_backend != "sandbox":
                raise ConfigError(
                    f"{env_name('failover_key')} is needed: the {self.failover_backend} credential"
                )
        if self.breaker_failures < 1 or not 0 < self.breaker_cooldown <= 3600:
            raise ConfigError(
                f"{env_name('breaker_failures')} must be at least 1 and {env_name('breaker_cooldown')} "
                "between 0 and 3600 seconds"
            )
        if self.webhook_url and parse_urls:
            try:
                check_target(self.webhook_url, self.webhook_format, env_name("webhook_url"))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if self.webhook_format == "v2" and not self.webhook_secret:
                raise ConfigError(f"{env_name('webhook_secret')} is needed to sign v2 webhooks")
        if self.webhook_retry_hours < 24:
            raise ConfigError(f"{env_name('webhook_retry_hours')} must be at least 24")
        if not 0 < self.webhook_timeout <= 30:
            raise ConfigError(f"{env_name('webhook_timeout')} must be between 0 and 30 seconds")
        if not 1 <= self.webhook_target_concurrency <= 32:
            raise ConfigError(f"{env_name('webhook_target_concurrency')} must be between 1 and 32")
        if not 0 <= self.webhook_retention_days <= 3650:
            raise ConfigError(f"{env_name('webhook_retention_days')} must be between 0 and 3650 days")
        if self.idempotency_ttl < 86400:
            raise ConfigError(f"{env_name('idempotency_ttl')} must be at least 86400 seconds (24 hours)")
        if self.workers < 1:
            raise ConfigError(f"{env_name('workers')} must be at least 1")
        if not 1 <= self.mobsms_max_pages <= 1000:
            raise ConfigError(f"{env_name('mobsms_max_pages')} must be between 1 and 1000")
        if self.upstream_pool_size < 1:
            raise ConfigError(f"{env_name('upstream_pool_size')} must be at least 1")
        if self.max_body_bytes < 4096:
            raise ConfigError(f"{env_name('max_body_bytes')} must be at least 4096")
        if self.upstream_ca_bundle and not Path(self.upstream_ca_bundle).is_file():
            raise ConfigError(f"{env_name('upstream_ca_bundle')}={self.upstream_ca_bundle!r}: no such file")
        if self.upstream_proxy is not None:
            _check_proxy_url(self.upstream_proxy)
        else:
            _check_environment_proxies()
        if self.default_region is not None and self.default_region not in REGIONS:
            raise ConfigError(
                f"{env_name('default_region')}={self.default_region!r}: expected the two-letter code "
                "(ISO 3166-1) of a country whose national numbers callers write, such as BE, FR or US"
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"{env_name('log_level')}={self.log_level!r}: expected DEBUG, INFO, WARNING or ERROR"
            )


ENV_PREFIX = "SMSBRIDGE_"
_FIELD_NAMES = {f.name for f in dataclasses.fields(Settings)}


#: SMSBRIDGE_* variables read elsewhere than Settings: gunicorn.conf.py's and the scripts'
OTHER_VARIABLES = frozenset({"SMSBRIDGE_BIND", "SMSBRIDGE_PYTHON"})


def _refuse_unknown_variables(env: Mapping[str, str]) -> None:
    """Raise ConfigError for an SMSBRIDGE_* variable no setting reads: a misspelt one would be ignored."""
    known = {env_name(name) for name in _FIELD_NAMES} | OTHER_VARIABLES
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
    if not unknown:
        return
    name = unknown[0]
    # Compared without the prefix every name shares, which would make any two look alike.
    suffixes = sorted(k.removeprefix(ENV_PREFIX) for k in known)
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6)
    hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else "docs/configuration.md lists every setting"
    raise ConfigError(
        f"{name} is not a setting smsbridge knows: {hint} (SMSBRIDGE_ names are kept for settings; "
        "a variable a clients file names with upstream_key_env needs another prefix)"
    )


def env_name(field_name: str) -> str:
    """Return the environment variable that sets `field_name`."""
    return ENV_PREFIX + field_name.upper()


def _text(name: str, raw: str) -> str:
    return raw


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{env_name(name)}={raw!r}: expected a number of seconds") from None


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{env_name(name)}={raw!r}: expected a whole number") from None


def _flag(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{env_name(name)}={raw!r}: expected true or false")


def _key_set(name: str, raw: str) -> frozenset[str]:
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


_PARSERS = {
    "backend": lambda name, raw: raw.lower(),
    "data_dir": lambda name, raw: Path(raw),
    "connect_timeout": _number,
    "read_timeout": _number,
    "upstream_pool_size": _integer,
    "mobsms_max_pages": _integer,
    "token_ttl": _integer,
    "trusted_proxies": _integer,
    "workers": _integer,
    "idempotency_ttl": _integer,
    "failover_backend": lambda name, raw: raw.lower(),
    "default_region": lambda name, raw: raw.upper(),
    "breaker_failures": _integer,
    "breaker_cooldown": _number,
    "webhook_allow_private": lambda name, raw: _flag(name, raw),
    "webhook_retry_hours": _number,
    "webhook_timeout": _number,
    "webhook_target_concurrency": _integer,
    "webhook_retention_days": _number,
    "max_body_bytes": _integer,
    "sandbox_api_keys": _key_set,
}


def split_token_secret(value: str) -> list[bytes]:
    """Return the comma-separated token secrets in `value`; raise ConfigError at an empty or short one."""
    parts = [part.strip() for part in value.split(",")]
    for number, part in enumerate(parts, 1):
        where = f"{env_name('token_secret')}: secret {number} of {len(parts)}"
        if not part:
            raise ConfigError(
                f"{where} is empty: give one or more secrets separated by commas, none empty "
                "(the last one signs, all verify)"
            )
        if len(part.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{where} is {len(part.encode())} bytes: each must be at least {MIN_SECRET_BYTES} "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    return [part.encode() for part in parts]


_KEY_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: the rate-limit storages: each scheme, and whether its URI names a server
_RATELIMIT_SCHEMES = {
    "sqlite": False,
    "memory": False,
    "redis": True,
    "rediss": True,
    "redis+sentinel": True,
    "postgresql": True,
}


def _check_ratelimit_storage(uri: str) -> None:
    parts = urlsplit(uri)
    needs_server = _RATELIMIT_SCHEMES.get(parts.scheme)
    # sqlite:// and memory:// take nothing more: the file's place is the data directory's.
    valid = bool(parts.netloc) if needs_server else uri == f"{parts.scheme}://"
    if uri == "postgresql://":
        valid = True  # the shared state's database: checked against SMSBRIDGE_STATE_URL in validate()
    if needs_server is None or not valid:
        # Not the value itself: a URL may hold a password.
        raise ConfigError(
            f"{env_name('ratelimit_storage')} ({parts.scheme or 'no scheme'}://...): expected sqlite:// (a "
            "file in the data directory), memory://, redis://HOST:PORT (also rediss://, redis+sentinel://) "
            "or postgresql://[USER@HOST:PORT/DATABASE] (bare: SMSBRIDGE_STATE_URL's database)"
        )


def _check_state_url(url: str) -> None:
    """Raise ConfigError unless `url` is sqlite:// or a postgresql:// URL (never echo it: it may hold a
    password)."""
    if url == "sqlite://":
        return
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("postgresql", "postgres") and bool(parts.netloc or parts.path.strip("/"))
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            f"{env_name('state_url')} is neither sqlite:// (files in the data directory, one host) nor "
            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (one database several hosts share)"
        )


def check_limit(value: object, where: str) -> None:
    """Raise ConfigError unless `value` is a rate limit such as "10/minute;500/day"."""
    try:
        if not isinstance(value, str) or not parse_many(value):
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"{where}={value!r}: expected a rate limit such as '10/minute;500/day'") from None


def _check_environment_proxies() -> None:
    """Raise ConfigError for an HTTP(S)_PROXY / ALL_PROXY the upstream client cannot use (socks5://...).

    Found only at the first send, it would make every send fail as unreachable, open the circuit
    breaker and fail over, with nothing said at start-up.
    """
    for scheme, url in urllib.request.getproxies_environment().items():
        usable = "://" not in url or urlsplit(url).scheme in ("http", "https")
        if scheme in ("http", "https", "all") and not usable:
            raise ConfigError(
                f"{scheme.upper()}_PROXY: smsbridge reaches upstreams only through an http:// or "
                f"https:// proxy; set {env_name('upstream_proxy')} to one, or unset the variable"
            )


def _check_proxy_url(url: str) -> None:
    """Raise ConfigError unless `url` is an http:// or https:// proxy URL with a host (never echo it)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port that is not a number
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        valid = valid and parts.path in ("", "/") and not parts.query and not parts.fragment
    except ValueError:
        valid = False
    if not valid:
        # The value may hold the proxy's password: name the variable, not its value.
        raise ConfigError(
            f"{env_name('upstream_proxy')}: expected an http:// or https:// proxy URL with a host, "
            "such as http://user:password@proxy.example:3128"
        )


def _check_base_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{env_name(name)}={url!r}: expected an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{env_name(name)}={url!r}: a base URL has no query or fragment")
