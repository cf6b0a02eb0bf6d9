"""The read-only queries the inbox adds to the sandbox store and the outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask

from app.state.base import Outbox
from app.state.postgres import db as pg
from app.state.postgres import outbox as pg_outbox
from app.state.postgres import sandbox as pg_sandbox
from app.state.postgres.outbox import PostgresOutbox
from app.state.postgres.sandbox import PostgresSandboxStore
from app.state.sandbox import NewReceived, NewSent, SandboxStore
from app.state.sqlite import outbox as sqlite_outbox
from app.state.sqlite import sandbox as sqlite_sandbox
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


# --- the reads the inbox makes often run on indexes (their plans), and search folds Unicode -------------


@pytest.fixture(params=["sqlite", "postgresql"])
def located(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, str, SandboxStore, Outbox]]:
    """An engine's name, where its stores live (a data directory or a URL), and the stores."""
    if request.param == "sqlite":
        location = str(tmp_path)
        made: tuple[SandboxStore, Outbox] = (SqliteSandboxStore(tmp_path), SqliteOutbox(tmp_path))
    else:
        server: PostgresServer = request.getfixturevalue("server")
        location = server.create_database(f"inbox_{next(_databases)}")
        pg.migrate(location)
        made = (PostgresSandboxStore(location), PostgresOutbox(location))
    try:
        yield request.param, location, *made
    finally:
        for store in made:
            store.close()
        pg.close_all()


def plan(engine: str, location: str, file_name: str, query: tuple[str, tuple[object, ...]]) -> str:
    """The engine's plan for `query`, as one text. PostgreSQL is told to avoid sequential scans where it
    can (its tables here are tiny, where a scan costs least): a plan still without an index has none."""
    sql, args = query
    if engine == "sqlite":
        with closing(sqlite3.connect(Path(location) / file_name)) as db:
            db.create_function(sqlite_sandbox.LOWER, 1, sqlite_sandbox.unicode_lower, deterministic=True)
            return "\n".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))
    with psycopg.connect(location) as db:
        db.execute("SET enable_seqscan = off")
        return "\n".join(row[0] for row in db.execute("EXPLAIN " + sql, args))  # type: ignore[arg-type]


def test_a_messages_events_are_read_on_an_index(located: tuple[str, str, SandboxStore, Outbox]) -> None:
    engine, location, _, outbox = located
    added = [outbox.add("c", "sms.sent", {"guid": "g1", "n": n}) for n in range(3)]
    outbox.add("c", "sms.sent", {"guid": 7})  # not a message's guid: named by no query
    outbox.add("c", "sms.received", {"guid": "a\x00b", "message": "a\x00b"})
    assert [e["id"] for e in outbox.about("g1", limit=2)] == added[:2]  # the oldest, `limit` of them
    assert [e["id"] for e in outbox.about("g1")] == added
    assert outbox.about("7") == [] and outbox.about("a\x00b") == []
    if engine == "sqlite":
        found = plan(engine, location, "webhooks.sqlite3", (sqlite_outbox.ABOUT_SQL, ("g1", 50)))
        assert "USING INDEX webhook_events_guid" in found and "TEMP B-TREE" not in found, found
    else:
        found = plan(engine, location, "", (pg_outbox.ABOUT_SQL, ("g1", 50)))
        assert "webhook_events_guid" in found and "Sort" not in found, found


@pytest.mark.parametrize(
    ("search", "status", "via"), [("", None, None), ("émile", None, None), ("", "failed", "whatsapp")]
)
def test_the_inbox_lists_newest_first_on_an_index_of_age(
    located: tuple[str, str, SandboxStore, Outbox], search: str, status: str | None, via: Any
) -> None:
    engine, location, _, _ = located
    module: Any = sqlite_sandbox if engine == "sqlite" else pg_sandbox
    sent_index, received_index = (
        ("sent_sms_recent", "received_sms_recent")
        if engine == "sqlite"
        else ("sandbox_sent_recent", "sandbox_received_recent")
    )
    for query, index in (
        (module.inbox_query(search, status, via, 200), sent_index),
        (module.inbox_received_query(search, 200), received_index),
    ):
        found = plan(engine, location, "sandbox.sqlite3", query)
        assert index in found, found
        assert "TEMP B-TREE" not in found and "Sort" not in found, found  # read in order, never sorted


def test_search_folds_case_beyond_ascii_on_every_engine(stores: tuple[SandboxStore, Outbox]) -> None:
    store, _ = stores
    store.add_sent([sent("g1", "a", "Émile arrive à 8 h", NOW), sent("g2", "a", "emile", NOW + 1)])
    store.add_received(
        NewReceived(
            guid="r1",
            account="a",
            channel="sms",
            number="+32470000002",
            message="Merci ÉMILE",
            received_at=NOW,
            device="sandbox-phone-1",
            kind="text",
            contact="",
        )
    )
    assert [r["guid"] for r in store.inbox(search="émile")] == ["g1"]
    assert [r["guid"] for r in store.inbox(search="ÉMILE")] == ["g1"]
    assert [r["guid"] for r in store.inbox(search="À 8")] == ["g1"]
    assert [r["guid"] for r in store.inbox_received(search="émile")] == ["r1"]


def test_a_nul_character_in_the_inbox_is_refused_as_bad_input_on_postgresql(
    server: PostgresServer, make_app: Callable[..., Flask]
) -> None:
    """PostgreSQL's text cannot hold U+0000: a search or a reply holding one was a retryable 503."""
    url = server.create_database(f"inbox_{next(_databases)}")
    client = make_app("sandbox", state_url=url, token_secret="t" * 32).test_client()
    try:
        sent_answer = client.post(
            "/sendsms/", data={"apikey": "sandbox-key-1", "recipients": "+32470123456", "message": "hi"}
        )
        guid = sent_answer.get_json()["result"]["id"]
        page = client.get("/").get_data(as_text=True)
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token, page
        for answer in (
            client.get("/?q=a%00b"),
            client.get("/inbox/messages/a%00b"),
            client.post(f"/ui/messages/{guid}/fail", data={"csrf": token[1], "error": "a\x00b"}),
        ):
            assert answer.status_code == 400, answer.get_data(as_text=True)
            assert answer.mimetype == "text/html" and "NUL" in answer.get_data(as_text=True)
        assert client.get("/?q=hi").status_code == 200
    finally:
        pg.close_all()
