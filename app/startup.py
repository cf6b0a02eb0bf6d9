"""Work done once, before gunicorn forks its workers: generated secrets, database schemas.

gunicorn's `on_starting` hook calls `prepare`; `create_app` calls it too (for a process that is not
under gunicorn), where it finds everything done and returns at once.
"""

from __future__ import annotations

from app import tokens
from app.config import Settings


def prepare(settings: Settings) -> None:
    """Create what every worker needs and must never race to create."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tokens.prepare_secret(settings.token_secret, settings.data_dir)
