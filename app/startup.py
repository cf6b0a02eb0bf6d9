"""Work done once, before gunicorn forks its workers: generated secrets, database files and their schemas.

gunicorn's `on_starting` hook calls `prepare`; `create_app` calls it too (for a process that is not
under gunicorn), where it finds everything done and returns at once. Every process preparing the same
data directory takes turns on one lock file in it (`app.state.sqlite.db.preparing`), so that several starting
at once never race.
"""

from __future__ import annotations

import logging

from app.access import tokens
from app.config import Settings
from app.errors import StorageUnavailable
from app.state import limits as limit_storages
from app.state import migrate_shared_state, shared_state
from app.state.sqlite import outbox, sandbox, state_file
from app.state.sqlite.db import Database, preparing
from app.state.sqlite.db import prepare as prepare_database

log = logging.getLogger(__name__)


def databases(settings: Settings) -> list[Database]:
    """Return the databases the bridge opens with these settings."""
    # The sandbox's too whatever the default backend: any client may name the sandbox as its own. With
    # shared state (PostgreSQL) none of them: the state is in the shared database.
    found = [] if shared_state(settings) else [state_file.DATABASE, outbox.DATABASE, sandbox.DATABASE]
    if settings.ratelimit_storage.startswith("sqlite://"):
        found.append(limit_storages.DATABASE)
    return found


def prepare(settings: Settings, *, migrate_shared: bool = True) -> None:
    """Create what every worker needs and must never race to create.

    With a PostgreSQL state URL, its schema too, unless `migrate_shared` is false: gunicorn's master
    migrates in a forked child (gunicorn.conf.py), since psycopg chooses when imported whether it waits
    cooperatively, and must first be imported in a worker gevent has patched.
    """
    with preparing(settings.data_dir):
        tokens.prepare_secret(settings.token_secret, settings.data_dir)
        for database in databases(settings):
            prepare_database(settings.data_dir / database.file_name, database.migrations)
    if migrate_shared:
        migrate_or_say(settings)


def migrate_or_say(settings: Settings) -> None:
    """Migrate the shared database; when unreachable, say so and start anyway.

    Its stores migrate it at their first use, and answer 503 (nothing sent) until then. A schema a newer
    smsbridge made stops the start (UnusableDatabase, a RuntimeError).
    """
    try:
        migrate_shared_state(settings)
    except StorageUnavailable as error:
        log.error(
            "smsbridge: the shared state cannot be prepared now (%s): starting anyway; what needs it "
            "answers 503 (nothing sent) until PostgreSQL answers",
            error.trouble,
        )
