"""Work done once, before gunicorn forks its workers: generated secrets, database files and their schemas.

gunicorn's `on_starting` hook calls `prepare`; `create_app` calls it too (for a process that is not
under gunicorn), where it finds everything done and returns at once. Every process preparing the same
data directory takes turns on one lock file in it (`app.state.sqlite.db.preparing`), so that several starting
at once never race.
"""

from __future__ import annotations

from app.access import tokens
from app.backends import sandbox
from app.config import Settings
from app.state import limits as limit_storages
from app.state.sqlite import outbox, state_file
from app.state.sqlite.db import Database, preparing
from app.state.sqlite.db import prepare as prepare_database


def databases(settings: Settings) -> list[Database]:
    """Return the databases the bridge opens with these settings."""
    # The sandbox's too whatever the default backend: any client may name the sandbox as its own.
    found = [state_file.DATABASE, outbox.DATABASE, sandbox.DATABASE]
    if settings.ratelimit_storage.startswith("sqlite://"):
        found.append(limit_storages.DATABASE)
    return found


def prepare(settings: Settings) -> None:
    """Create what every worker needs and must never race to create."""
    with preparing(settings.data_dir):
        tokens.prepare_secret(settings.token_secret, settings.data_dir)
        for database in databases(settings):
            prepare_database(settings.data_dir / database.file_name, database.migrations)
