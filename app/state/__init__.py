"""The bridge's own state: one interface per kind (app.state.base), an implementation per engine.

Each function below returns the store of one kind for the engine SMSBRIDGE_STATE_URL names: `sqlite://`
(the default: files in SMSBRIDGE_DATA_DIR, app/state/sqlite/, one host) or `postgresql://...` (one
database several hosts share, app/state/postgres/). A PostgreSQL store opens no connection when it is
made: its process's pool is made at its first use (after gunicorn's fork). Rate-limit counts are
flask-limiter storages, by URL scheme (app/state/limits.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.state.base import IdempotencyStore, MobsmsState, Outbox, Record
from app.state.sandbox import SandboxStore

if TYPE_CHECKING:
    from app.config import Settings

#: the schemes of SMSBRIDGE_STATE_URL that name a PostgreSQL database
POSTGRES_SCHEMES = ("postgresql", "postgres")


def shared_state(settings: Settings) -> str | None:
    """Return the URL of the PostgreSQL database the state lives in, or None for SQLite files."""
    scheme = settings.state_url.partition("://")[0].lower()
    return settings.state_url if scheme in POSTGRES_SCHEMES else None


def idempotency_store(settings: Settings) -> IdempotencyStore:
    """Return the store of idempotency keys."""
    url = shared_state(settings)
    if url is not None:
        from app.state.postgres.idempotency import PostgresIdempotency

        return PostgresIdempotency(url)
    from app.state.sqlite.idempotency import SqliteIdempotency

    return SqliteIdempotency(settings.data_dir)


def mobsms_state(settings: Settings) -> MobsmsState:
    """Return the store of mobsms's read flags, aliases and resends."""
    url = shared_state(settings)
    if url is not None:
        from app.state.postgres.mobsms import PostgresMobsmsState

        return PostgresMobsmsState(url)
    from app.state.sqlite.mobsms import SqliteMobsmsState

    return SqliteMobsmsState(settings.data_dir)


def outbox(settings: Settings) -> Outbox:
    """Return the webhook outbox."""
    url = shared_state(settings)
    if url is not None:
        from app.state.postgres.outbox import PostgresOutbox

        return PostgresOutbox(url)
    from app.state.sqlite.outbox import SqliteOutbox

    return SqliteOutbox(settings.data_dir)


def migrate_shared_state(settings: Settings) -> int:
    """Bring the shared PostgreSQL database's schema up to date; return how many migrations were applied.

    Hosts starting together take turns on an advisory lock. Imports psycopg, which imports ssl: never in
    gunicorn's master (its workers' gevent must patch ssl first). Raises StorageUnavailable when the
    database cannot be reached (the stores migrate it at their first use once it can), and
    app.state.postgres.db.UnusableDatabase for a schema a newer smsbridge made. 0 for SQLite.
    """
    url = shared_state(settings)
    if url is None:
        return 0
    import psycopg

    from app.errors import StorageUnavailable
    from app.state.postgres.db import TimedOut, migrate, trouble

    try:
        return migrate(url)
    except (psycopg.Error, TimedOut) as error:
        what = trouble(error) if isinstance(error, psycopg.Error) else "postgresql timed out"
        raise StorageUnavailable(
            f"the shared state's schema cannot be checked now: {what}", trouble=what
        ) from error


def close_shared_state() -> None:
    """Close this process's PostgreSQL pools (a command that is done, a test's end); none for SQLite.

    A store's own close() leaves them: every store of the process shares them.
    """
    from app.state.postgres.db import close_all

    close_all()


def sandbox_store(settings: Settings) -> SandboxStore:
    """Return the store of the sandbox's accounts, phones, sent and received messages."""
    url = shared_state(settings)
    if url is not None:
        from app.state.postgres.sandbox import PostgresSandboxStore

        return PostgresSandboxStore(url)
    from app.state.sqlite.sandbox import SqliteSandboxStore

    return SqliteSandboxStore(settings.data_dir)


__all__ = [
    "IdempotencyStore",
    "MobsmsState",
    "Outbox",
    "Record",
    "SandboxStore",
    "close_shared_state",
    "idempotency_store",
    "migrate_shared_state",
    "mobsms_state",
    "outbox",
    "sandbox_store",
    "shared_state",
]
