"""The read-only queries the inbox adds to the sandbox store and the outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.state.base import Outbox
from app.state.postgres import db as pg
from app.state.postgres.outbox import PostgresOutbox
from app.state.postgres.sandbox import PostgresSandboxStore
from app.state.sandbox import NewReceived, NewSent, SandboxStore
from app.state.sqlite.outbox import SqliteOutbox
from app.state.sqlite.sandbox import SqliteSandboxStore
from tests.harness.postgres import PostgresServer

NOW = 1_800_000_000
_databases = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as started:
        yield started


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SandboxStore, Outbox]]:
    if request.param == "sqlite":
        made: tuple[SandboxStore, Outbox] = (SqliteSandboxStore(tmp_path), SqliteOutbox(tmp_path))
    else:
        server: PostgresServer = request.getfixturevalue("server")
        url = server.create_database(f"inbox_{next(_databases)}")
        pg.migrate(url)
        made = (PostgresSandboxStore(url), PostgresOutbox(url))
    try:
        yield made
    finally:
        for store in made:
            store.close()
        pg.close_all()


def sent(guid: str, account: str, message: str, at: int, **changes: Any) -> NewSent:
    row = NewSent(
        guid=guid,
        account=account,
        recipient="+32470000001",
        message=message,
        port="",
        sidentifiant="",
        via_sms=1,
        via_whatsapp=0,
        encrypted=0,
        shorturl=0,
        url_media="",
        schedule_timestamp=None,
        created_at=at,
        status="sent",
        sent_at=at,
    )
    row.update(changes)  # type: ignore[typeddict-item]
    return row


def test_inbox_lists_every_account_newest_first_with_search_and_filters(
    stores: tuple[SandboxStore, Outbox],
) -> None:
    store, _ = stores
    store.add_sent([sent("g1", "a", "Hello 100%_done", NOW)])
    store.add_sent([sent("g2", "b", "second", NOW + 1, via_sms=0, via_whatsapp=1)])
    store.add_sent([sent("g3", "a", "third", NOW + 2, recipient="+447700900123")])
    store.fail_sent("a", "g3", "boom", "mobile")
    assert [r["guid"] for r in store.inbox()] == ["g3", "g2", "g1"]
    assert [r["guid"] for r in store.inbox(limit=2)] == ["g3", "g2"]
    assert [r["guid"] for r in store.inbox(search="HELLO")] == ["g1"]
    assert [r["guid"] for r in store.inbox(search="100%_")] == ["g1"]  # plain text, not a pattern
    assert [r["guid"] for r in store.inbox(search="%")] == ["g1"]
    assert [r["guid"] for r in store.inbox(search="7700")] == ["g3"]
    assert [r["guid"] for r in store.inbox(status="failed")] == ["g3"]
    assert [r["guid"] for r in store.inbox(via="whatsapp")] == ["g2"]
    found = store.sent_message("g2")
    assert found is not None and found["account"] == "b"
    assert store.sent_message("nope") is None


def test_inbox_received_lists_every_account_newest_first(stores: tuple[SandboxStore, Outbox]) -> None:
    store, _ = stores
    for guid, account, at, text in (("r1", "a", NOW, "first"), ("r2", "b", NOW + 5, "Second one")):
        store.add_received(
            NewReceived(
                guid=guid,
                account=account,
                channel="sms",
                number="+32470000002",
                message=text,
                received_at=at,
                device="sandbox-phone-1",
                kind="text",
                contact="",
            )
        )
    assert [r["guid"] for r in store.inbox_received()] == ["r2", "r1"]
    assert [r["guid"] for r in store.inbox_received(search="second")] == ["r2"]


def test_events_about_a_message(stores: tuple[SandboxStore, Outbox]) -> None:
    _, outbox = stores
    first = outbox.add("c", "sms.failed", {"guid": "g1", "status": "failed"})
    outbox.add("c", "sms.received", {"guid": "other"})
    second = outbox.add("c", "sms.sent", {"guid": "g1", "status": "delivered"})
    assert {e["id"] for e in outbox.about("g1")} == {first, second}
    assert outbox.about("none") == []
