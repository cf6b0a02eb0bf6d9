"""The `smsbridge` command: serve, check the configuration, manage clients, webhooks and the sandbox.

    smsbridge serve [GUNICORN_OPTION]...          gunicorn -c gunicorn.conf.py wsgi:app, options passed on
    smsbridge check-config                        read the settings as a worker would; one line either way
    smsbridge clients add NAME --backend B [--upstream-key-env VAR] [--rate-limit LIMIT]
    smsbridge clients rotate NAME                 a new key beside the old ones
    smsbridge clients revoke NAME (--hash PREFIX | --all)
    smsbridge clients list                        names, backends and key hash prefixes, never keys
    smsbridge webhooks dead | replay EVENT_ID | purge-dead | urls CLIENT | register-mobsms CLIENT
    smsbridge sandbox inbound | fail              the sandbox phone's side, through a running bridge

The `clients` commands edit the TOML file SMSBRIDGE_CLIENTS_FILE (or --file) with tomlkit, so its
comments and layout stay; a new key is printed once, on stdout alone, and only its SHA-256 is stored.
Each edit is checked as the bridge would load it, then written whole or not at all (a temporary file in
the same directory, fsync, rename; the file's mode and owner kept, 0600 for a new one), under a lock on
the directory so that two edits never lose one another. Running bridges reload the file within a second.

The `sandbox` commands post to a running bridge's console (/sandbox/inbound, /sandbox/fail) rather
than write the sandbox's database: the bridge then does what it does for a tester over HTTP, webhook
events included. Every failure is one line on stderr starting with "smsbridge:", never a traceback.
The whole reference: docs/cli.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import sqlite3
import stat
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import click
import tomlkit
import tomlkit.exceptions
from tomlkit.container import OutOfOrderTableProxy
from tomlkit.items import AbstractTable, Array, InlineTable

if TYPE_CHECKING:
    from app.access.resolution import Access
    from app.access.tokens import TokenSigner
    from app.backends import Backend
    from app.config import Settings
    from app.service.bridge import Runtime
    from app.state import Outbox

#: the repository: gunicorn.conf.py and wsgi.py sit beside the app package
ROOT = Path(__file__).resolve().parents[1]
#: client names the CLI gives out: they appear in webhook source URLs and in logs
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: how much of a key's hash `clients list` shows, and the least `revoke --hash` accepts
SHOWN_HASH = 12
SHORTEST_PREFIX = 6
#: the clients file's settings that name an environment variable
ENV_KEYS = ("upstream_key_env", "failover_upstream_key_env", "webhook_secret_env")


class CliError(click.ClickException):
    """A failure said in one line on stderr, as the bridge says an invalid setting: `smsbridge: ...`."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"smsbridge: {self.format_message()}", file=file or sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """smsbridge: SMSMobileAPI's REST and SOAP dialects in front of the SMS backend the operator chose."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line (`argv`, else sys.argv[1:]) and return its exit status."""
    try:
        cli.main(args=argv, prog_name="smsbridge", standalone_mode=True)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        click.echo(done.code, err=True)
        return 1
    return 0


# --- serve and check-config -----------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("gunicorn_options", nargs=-1, type=click.UNPROCESSED)
def serve(gunicorn_options: tuple[str, ...]) -> None:
    """Serve the bridge: gunicorn -c gunicorn.conf.py wsgi:app, with GUNICORN_OPTIONS passed on.

    Settings come from SMSBRIDGE_* as for scripts/run; relative paths in them are read from the current
    directory. `smsbridge serve --workers 2` passes --workers on; `smsbridge serve --help` is gunicorn's.
    """
    config = ROOT / "gunicorn.conf.py"
    if not config.is_file() or not (ROOT / "wsgi.py").is_file():
        raise CliError(f"serve runs from a checkout of smsbridge: no gunicorn.conf.py and wsgi.py in {ROOT}")
    argv = [sys.executable, "-m", "gunicorn", "-c", str(config), "--pythonpath", str(ROOT)]
    # gunicorn itself, in place of this process: its signals (TERM, HUP, USR1) reach it unchanged.
    os.execv(sys.executable, [*argv, *gunicorn_options, "wsgi:app"])  # noqa: S606 (our own argv)


@cli.command("check-config")
def check_config() -> None:
    """Read and check the settings as a worker would: SMSBRIDGE_*, the clients file, webhook URLs.

    Prints one line and exits 0 when a worker would start; else prints the reason in one line and
    exits 1. Nothing is written (the data directory is not made).
    """
    from app.access.resolution import parse_clients_file
    from app.access.tokens import SECRET_FILE, stored_secret
    from app.config import ConfigError, Settings, env_name

    try:
        settings = Settings.from_env()
        clients: dict[str, Any] = {}
        if settings.clients_file:
            path = Path(settings.clients_file)
            try:
                clients, _ = parse_clients_file(path.read_bytes(), path)
            except OSError as exc:
                raise ConfigError(f"{path} cannot be read ({exc.strerror})") from None
            except ConfigError as exc:
                raise ConfigError(f"{env_name('clients_file')}: {exc}") from None
        if settings.token_secret is None and (settings.data_dir / SECRET_FILE).exists():
            stored_secret(settings.data_dir)  # only read: it exists
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    mode = f"managed, {len(clients)} clients" if settings.clients_file else "passthrough"
    webhooks = sum(1 for entry in clients.values() if entry.webhook) + bool(settings.webhook_url)
    click.echo(
        f"smsbridge: configuration OK: backend {settings.backend}, {mode}, "
        f"{webhooks} webhook target{'s' if webhooks != 1 else ''}, data in {settings.data_dir}, "
        f"{settings.workers} worker{'s' if settings.workers != 1 else ''}, public URL {settings.public_url}"
    )


# --- clients --------------------------------------------------------------------------------------


@cli.group()
@click.option(
    "--file",
    "path",
    envvar="SMSBRIDGE_CLIENTS_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The clients file (default: SMSBRIDGE_CLIENTS_FILE).",
)
@click.pass_context
def clients(ctx: click.Context, path: Path | None) -> None:
    """Add, rotate, revoke and list the clients of a managed bridge (its clients file)."""
    ctx.obj = path


def _file(path: Path | None) -> Path:
    if path is None:
        raise CliError("name the clients file: --file PATH, or set SMSBRIDGE_CLIENTS_FILE")
    return path


@clients.command("add")
@click.argument("name")
@click.option("--backend", required=True, help="sandbox, smsmobileapi or mobsms.")
@click.option(
    "--upstream-key-env",
    metavar="VAR",
    help="The environment variable holding the backend's credential (not needed for sandbox).",
)
@click.option("--rate-limit", metavar="LIMIT", help="The client's own limit, e.g. '10/minute;500/day'.")
@click.pass_obj
def clients_add(
    path: Path | None, name: str, backend: str, upstream_key_env: str | None, rate_limit: str | None
) -> None:
    """Add client NAME and print its new key, once (only its SHA-256 is stored)."""
    path = _file(path)
    from app.backends import BACKEND_NAMES
    from app.config import ENV_PREFIX, ConfigError, check_limit

    if not CLIENT_NAME.fullmatch(name):
        raise CliError(f"{name!r}: a client name is 1 to 64 letters, digits, '.', '_' or '-'")
    if backend not in BACKEND_NAMES:
        raise CliError(f"--backend {backend!r}: expected one of {', '.join(BACKEND_NAMES)}")
    if upstream_key_env is not None:
        if not (upstream_key_env.isascii() and upstream_key_env.isidentifier()):
            raise CliError(f"--upstream-key-env {upstream_key_env!r}: expected an environment variable name")
        if upstream_key_env.startswith(ENV_PREFIX):
            raise CliError(
                f"--upstream-key-env {upstream_key_env}: SMSBRIDGE_ names are kept for settings "
                "(the bridge refuses any other): choose another prefix"
            )
    elif backend != "sandbox":
        raise CliError(f"--upstream-key-env VAR is needed: the variable holding the {backend} credential")
    if rate_limit is not None:
        try:
            check_limit(rate_limit, "--rate-limit")
        except ConfigError as exc:
            raise CliError(str(exc)) from None
    key = new_key()
    with editing(path, create=True) as document:
        table = _clients_table(document, path, create=True)
        if name in table:
            raise CliError(
                f"{path}: client {name} exists: `smsbridge clients rotate {name}` gives it a new key"
            )
        entry = tomlkit.inline_table() if isinstance(table, InlineTable) else tomlkit.table()
        entry["key_sha256"] = _array([_digest(key)])
        entry["backend"] = backend
        if upstream_key_env is not None:
            entry["upstream_key_env"] = upstream_key_env
        if rate_limit is not None:
            entry["rate_limit"] = rate_limit
        table[name] = entry
    if upstream_key_env is not None and not os.environ.get(upstream_key_env):
        click.echo(
            f"smsbridge: note: {upstream_key_env} is not set here; set it in the bridge's environment "
            "before it reloads the file",
            err=True,
        )
    _print_key_once(f"client {name} added ({backend})", key)


@clients.command("rotate")
@click.argument("name")
@click.pass_obj
def clients_rotate(path: Path | None, name: str) -> None:
    """Give client NAME a new key beside its old ones, and print it once."""
    path = _file(path)
    key = new_key()
    with editing(path) as document:
        entry = _client(document, path, name)
        hashes = _hashes_of(entry, path, name)
        entry["key_sha256"] = _array([*hashes, _digest(key)])
    said = f"client {name} has a new key"
    if hashes:  # a client left with no key (key_sha256 = []) has none to revoke
        oldest = hashes[0][:SHOWN_HASH]
        said += f"; its old ones work until revoked (smsbridge clients revoke {name} --hash {oldest})"
    _print_key_once(said, key)


@clients.command("revoke")
@click.argument("name")
@click.option("--hash", "prefix", metavar="PREFIX", help="Revoke the one key whose SHA-256 starts so.")
@click.option("--all", "everything", is_flag=True, help="Remove the client, and every key it has.")
@click.pass_obj
def clients_revoke(path: Path | None, name: str, prefix: str | None, everything: bool) -> None:
    """Revoke one key of client NAME (--hash PREFIX, as `list` shows it), or the client (--all)."""
    path = _file(path)
    if (prefix is None) == (not everything):
        said = "not both" if everything else "one of them"
        raise CliError(f"revoke takes --hash PREFIX (one key) or --all (the client and its keys): {said}")
    with editing(path) as document:
        table = _clients_table(document, path)
        entry = _client(document, path, name)
        if everything:
            del table[name]
            try:
                count = len(_hashes_of(entry, path, name))
            except CliError:  # a client whose keys are malformed can still be removed
                said = f"client {name} removed"
            else:
                said = f"client {name} removed, with its {count} key{'s' if count != 1 else ''}"
        else:
            assert prefix is not None
            prefix = prefix.lower()
            if len(prefix) < SHORTEST_PREFIX or not all(c in "0123456789abcdef" for c in prefix):
                raise CliError(f"--hash {prefix!r}: expected at least {SHORTEST_PREFIX} hex digits")
            hashes = _hashes_of(entry, path, name)
            matching = [h for h in hashes if h.startswith(prefix)]
            if len(matching) != 1:
                found = "no key" if not matching else f"{len(matching)} keys"
                raise CliError(f"client {name} has {found} whose hash starts with {prefix}")
            if len(hashes) == 1:
                raise CliError(
                    f"{prefix} is client {name}'s only key: `--all` removes the client, or rotate first"
                )
            entry["key_sha256"] = _array([h for h in hashes if h != matching[0]])
            said = f"key {matching[0][:SHOWN_HASH]} of client {name} revoked"
    click.echo(f"smsbridge: {said}; running bridges reload the file within a second", err=True)


@clients.command("list")
@click.pass_obj
def clients_list(path: Path | None) -> None:
    """List the clients: name, backend, rate limit and the start of each key's SHA-256 (never a key)."""
    path = _file(path)
    try:
        document = tomllib.loads(_read(path).decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path} is not valid TOML: {exc}") from None
    table = document.get("clients", {})
    if not isinstance(table, dict):
        raise CliError(f"{path}: [clients] must be a table of [clients.NAME] tables")
    rows = [("NAME", "BACKEND", "RATE LIMIT", "KEYS (SHA-256)")]
    for name, entry in table.items():
        if not isinstance(entry, dict):
            continue
        hashes = entry.get("key_sha256", [])
        hashes = [hashes] if isinstance(hashes, str) else hashes if isinstance(hashes, list) else []
        rows.append(
            (
                name,
                str(entry.get("backend", "?")),
                str(entry.get("rate_limit", "default")),
                " ".join(str(h)[:SHOWN_HASH].lower() for h in hashes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]])
        )


def new_key() -> str:
    """Return a new client key: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def _digest(key: str) -> str:
    from app.vocabulary import key_digest

    return key_digest(key)


def _print_key_once(what: str, key: str) -> None:
    click.echo(f"smsbridge: {what}. Its key, shown this once (the file keeps only its SHA-256):", err=True)
    click.echo(key)


def _array(values: list[str]) -> Array:
    array = tomlkit.array()
    array.extend(values)
    return array


def _clients_table(
    document: tomlkit.TOMLDocument, path: Path, *, create: bool = False
) -> AbstractTable | OutOfOrderTableProxy:
    if "clients" not in document and create:
        document["clients"] = tomlkit.table(is_super_table=True)
    table = document.get("clients")
    # A [clients] table, an inline one (clients = {shop = {...}}), or one whose clients are spread over
    # the file (clients.b = {...} then [clients.c]: tomlkit's proxy), as TOML allows.
    if not isinstance(table, AbstractTable | OutOfOrderTableProxy):
        raise CliError(f"{path}: [clients] must be a table of [clients.NAME] tables")
    return table


def _client(document: tomlkit.TOMLDocument, path: Path, name: str) -> AbstractTable:
    entry = _clients_table(document, path).get(name) if "clients" in document else None
    if not isinstance(entry, AbstractTable):
        raise CliError(f"{path}: there is no client {name} (smsbridge clients list shows them)")
    return entry


def _hashes_of(entry: AbstractTable, path: Path, name: str) -> list[str]:
    """Return the client's key hashes, lower case; CliError unless key_sha256 is a string or list of them."""
    hashes = entry.get("key_sha256", [])
    if isinstance(hashes, str):
        hashes = [hashes]
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise CliError(f"{path}: [clients.{name}] key_sha256 must be one or more SHA-256 hex digests")
    return [str(h).lower() for h in hashes]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path} cannot be read ({exc.strerror})") from None


@contextlib.contextmanager
def editing(path: Path, *, create: bool = False) -> Iterator[tomlkit.TOMLDocument]:
    """Yield the clients file as a tomlkit document; write it back, checked and atomically, after.

    Nothing is written when the block raises. The file's directory is locked (flock) from the read to
    the rename, so a concurrent edit waits and then sees this one.
    """
    real = Path(os.path.realpath(path))  # a symbolic link stays one: the file it points at is replaced
    try:
        directory = os.open(real.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise CliError(f"{real.parent} cannot be opened ({exc.strerror})") from None
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        raw = b"" if create and not real.exists() else _read(real)
        try:
            document = tomlkit.parse(raw.decode())
        except (UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
            raise CliError(f"{path} is not valid TOML: {exc}") from None
        yield document
        # A table removed from the end leaves its blank line: the file ends as it did, in one newline.
        text = tomlkit.dumps(document).rstrip() + "\n"
        _check_loads(text, path)
        _write_atomically(real, text.encode(), directory)
    finally:
        os.close(directory)


def _check_loads(text: str, path: Path) -> None:
    """Raise CliError unless the bridge would load `text` (variables it names need not be set here)."""
    from app.access.resolution import parse_clients_file
    from app.config import ConfigError

    named: set[str] = set()
    with contextlib.suppress(tomllib.TOMLDecodeError):
        for entry in tomllib.loads(text).get("clients", {}).values():
            if isinstance(entry, dict):
                named |= {v for k, v in entry.items() if k in ENV_KEYS and isinstance(v, str)}
    unset = {name: "set-in-the-bridge-environment" for name in named if not os.environ.get(name)}
    saved = {name: os.environ.get(name) for name in unset}
    os.environ.update(unset)
    try:
        parse_clients_file(text.encode(), path)
    except ConfigError as exc:
        raise CliError(f"not written, the bridge would refuse it: {exc}") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _write_atomically(path: Path, content: bytes, directory: int) -> None:
    """Replace `path` with `content` whole or not at all, keeping its mode and owner (new: 0600)."""
    try:
        before = path.stat()
        mode, owner = stat.S_IMODE(before.st_mode), (before.st_uid, before.st_gid)
    except FileNotFoundError:
        mode, owner = 0o600, None
    try:
        # mkstemp makes the file its owner's only (0600) from the start.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CliError(f"{path.parent} is not writable ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fchmod(out.fileno(), mode)
            if owner is not None and (os.geteuid(), os.getegid()) != owner:
                # Edited as root, the file stays the bridge user's, readable by the bridge.
                with contextlib.suppress(PermissionError):
                    os.fchown(out.fileno(), *owner)
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise CliError(f"{path} cannot be written ({exc.strerror}); it is unchanged") from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    os.fsync(directory)


# --- webhooks -------------------------------------------------------------------------------------


@cli.group()
def webhooks() -> None:
    """Dead webhook events, and the URLs upstreams post events to."""


def _settings() -> Settings:
    from app.config import ConfigError, Settings

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def _event_store() -> Iterator[Outbox]:
    """Yield the webhook event store, closed after; every failure to open or use it said in one line."""
    from app.state import close_shared_state, outbox

    settings = _settings()
    data_dir = settings.data_dir
    with _storage_said():
        try:
            store = outbox(settings)
        except OSError as exc:
            raise CliError(
                f"the webhook event store in {data_dir} cannot be opened ({exc.strerror})"
            ) from None
        except sqlite3.Error as exc:
            raise CliError(f"the webhook event store in {data_dir} cannot be opened ({exc})") from None
        try:
            with contextlib.closing(store):
                yield store
        finally:
            close_shared_state()


@contextlib.contextmanager
def _storage_said() -> Iterator[None]:
    from app.errors import StorageUnavailable

    try:
        yield
    except StorageUnavailable as exc:
        raise CliError(f"the webhook event store: {exc}") from None


@webhooks.command("dead")
def webhooks_dead() -> None:
    """List dead events: id, type, client, attempts, last error."""
    with _event_store() as store:
        for event in store.dead():
            click.echo(
                f"{event['id']} {event['type']} {event['client']} {event['attempts']} {event['last_error']}"
            )


@webhooks.command("replay")
@click.argument("event_id")
def webhooks_replay(event_id: str) -> None:
    """Deliver dead event EVENT_ID again (same id); exit 1 if there is no such dead event."""
    with _event_store() as store:
        replayed = store.replay(event_id)
    if not replayed:
        raise CliError(f"no dead event {event_id}")


@webhooks.command("purge-dead")
def webhooks_purge_dead() -> None:
    """Delete every dead event."""
    with _event_store() as store:
        click.echo(f"{store.purge_dead()} dead events purged")


class _Sources:
    """What `webhooks urls` and `register-mobsms` use of a bridge, made here without a Runtime.

    A Runtime would start the webhook deliverer in this short-lived process (claiming events that then
    wait for their lease, or reach the client twice), prepare every database, and need every client's
    variables: these two commands need the settings and the token signer, and register-mobsms the
    clients (Access) and the mobsms backend.
    """

    def __init__(self, settings: Settings, tokens: TokenSigner) -> None:
        self.settings = settings
        self.tokens = tokens
        self._backends: dict[str, Backend] = {}
        self.access: Access | None = None

    def backend_for(self, name: str) -> Backend:
        from app.backends import build_backend

        if name not in self._backends:
            self._backends[name] = build_backend(dataclasses.replace(self.settings, backend=name))
        return self._backends[name]

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()

    def as_runtime(self) -> Runtime:
        """This, typed as what app.fronts.webhook_sources takes (it reads only the attributes above)."""
        return cast("Runtime", self)


@contextlib.contextmanager
def _sources(settings: Settings) -> Iterator[_Sources]:
    """Yield the settings and the token signer (making the generated secret, as the bridge would)."""
    from app.access.tokens import TokenSigner, prepare_secret
    from app.config import ConfigError
    from app.state.sqlite.db import preparing

    try:
        if settings.token_secret is None:
            with preparing(settings.data_dir):  # the lock app.startup takes to make it
                prepare_secret(None, settings.data_dir)
        tokens = TokenSigner.from_settings(settings.token_secrets, settings.data_dir, settings.token_ttl)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"the data directory {settings.data_dir} cannot be used ({exc.strerror})") from None
    sources = _Sources(settings, tokens)
    try:
        yield sources
    finally:
        sources.close()


def _check_client_exists(settings: Settings, client: str) -> None:
    """CliError unless the bridge has `client`: a name in the clients file, or `default` without one."""
    if not settings.clients_file:
        if client != "default":
            raise CliError(f"there is no client {client}: in passthrough mode the one client is default")
        return
    path = Path(settings.clients_file)
    try:
        document = tomllib.loads(_read(path).decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path} is not valid TOML: {exc}") from None
    table = document.get("clients", {})
    if not isinstance(table, dict) or not isinstance(table.get(client), dict):
        raise CliError(f"{path}: there is no client {client} (smsbridge clients list shows them)")


@webhooks.command("urls")
@click.argument("client")
def webhooks_urls(client: str) -> None:
    """Print the URLs upstreams post CLIENT's events to (`default` in passthrough mode)."""
    from app.fronts.webhook_sources import source_urls

    settings = _settings()
    _check_client_exists(settings, client)
    with _sources(settings) as sources:
        for source, url in source_urls(sources.as_runtime(), client).items():
            click.echo(f"{source}: {url}")


@webhooks.command("register-mobsms")
@click.argument("client")
def webhooks_register_mobsms(client: str) -> None:
    """Point mobsms's webhooks for managed CLIENT's mobsms key at the bridge (PUT /api/webhooks)."""
    from app.access.resolution import Access
    from app.errors import BridgeError
    from app.fronts.webhook_sources import register_mobsms

    with _sources(_settings()) as sources:
        try:
            sources.access = Access(sources.settings, sources.backend_for, sources.tokens)
            click.echo(register_mobsms(sources.as_runtime(), client))
        except ValueError as exc:  # ConfigError (an invalid clients file) is one
            raise CliError(str(exc)) from None
        except BridgeError as exc:
            raise CliError(f"mobsms: {exc.note}") from None


# --- sandbox --------------------------------------------------------------------------------------


def _public_url() -> str:
    from app.config import Settings

    return os.environ.get("SMSBRIDGE_PUBLIC_URL", "").strip() or Settings.public_url


@cli.group()
def sandbox() -> None:
    """Make the sandbox's phone side happen on a running bridge, as its /sandbox/ console does."""


def _bridge_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add --url (the running bridge) and --key (the account's API key, asked for when not given)."""
    command = click.option(
        "--key",
        prompt="API key",
        hide_input=True,
        help="The sandbox account's API key (a managed bridge: the client's key); asked for if not given.",
    )(command)
    return click.option(
        "--url",
        default=_public_url,
        show_default="SMSBRIDGE_PUBLIC_URL, else http://localhost:8080",
        help="The running bridge.",
    )(command)


@sandbox.command("inbound")
@click.option("--number", required=True, help="Who the message comes from.")
@click.option("--message", required=True, help="Its text.")
@click.option("--device", default="", help="The phone that receives it (sIdentifiantPhone).")
@click.option("--channel", type=click.Choice(["sms", "whatsapp"]), default="sms", show_default=True)
@click.option("--message-type", default="text", show_default=True, help="WhatsApp: text or audio.")
@click.option("--contact", default="", help="WhatsApp: the sender's contact name.")
@_bridge_options
def sandbox_inbound(
    url: str, key: str, number: str, message: str, device: str, channel: str, message_type: str, contact: str
) -> None:
    """Make the account's phone receive an SMS or a WhatsApp message; print the bridge's answer."""
    _console(
        url,
        key,
        "inbound",
        {
            "number": number,
            "message": message,
            "sIdentifiantPhone": device,
            "channel": channel,
            "message_type": message_type,
            "contact": contact,
        },
    )


@sandbox.command("fail")
@click.option("--guid", required=True, help="The sent message's id, as /sendsms/ answered it.")
@click.option("--error", default="", help="The error the phone reports.")
@click.option("--where", type=click.Choice(["mobile", "api"]), default="mobile", show_default=True)
@_bridge_options
def sandbox_fail(url: str, key: str, guid: str, error: str, where: str) -> None:
    """Make a sent message fail, so that resends and error_mobile=1 can be tried; print the answer."""
    _console(url, key, "fail", {"guid": guid, "error": error, "where": where})


def _console(url: str, key: str, action: str, form: dict[str, str]) -> None:
    import requests

    url = url.rstrip("/")
    try:
        answer = requests.post(
            f"{url}/sandbox/{action}", data={"apikey": key, **form}, timeout=(5, 30), allow_redirects=False
        )
    except requests.RequestException as exc:
        raise CliError(f"{url} cannot be reached ({type(exc).__name__}): is the bridge running?") from None
    with answer:
        try:
            document = answer.json()
        except ValueError:
            document = None
    result = document.get("result") if isinstance(document, dict) else None
    if answer.status_code != 200 or not isinstance(result, dict) or str(result.get("error")) != "0":
        note = result.get("note") if isinstance(result, dict) else None
        said = note or (f"{answer.status_code} {answer.reason}" if answer.status_code == 404 else None)
        hint = " (is its backend the sandbox?)" if answer.status_code == 404 else ""
        raise CliError(f"the bridge refused /sandbox/{action}: {said or answer.status_code}{hint}")
    click.echo(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
