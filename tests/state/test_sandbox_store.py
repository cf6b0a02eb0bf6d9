"""The SandboxStore interface (app/state/sandbox.py) holds the same on SQLite and on PostgreSQL.

Each test runs against both engines: a SQLite file in tmp_path, and a fresh database per test in one
throwaway PostgreSQL cluster per module (tests/harness/postgres.py). The races two workers or two hosts
can run (first use of an account, two resends of one failed message) run in separate processes that start
together: exactly one wins. The sandbox backend itself runs on each store too.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest

from app.backends.sandbox import FIRST_DEVICE, SandboxBackend, account_of
from app.config import Settings
from app.errors import NotResendable, StorageUnavailable
from app.state.postgres import MIGRATIONS
from app.state.postgres.db import PostgresDatabase
from app.state.postgres.sandbox import PostgresSandboxStore
from app.state.sandbox import NewCall, NewEmail, NewNotification, NewReceived, NewSent, SandboxStore
from app.state.sqlite.sandbox import SqliteSandboxStore
from app.vocabulary import Credential, CredentialSource, EmailDraft, SendRequest
from tests.harness.postgres import PostgresServer

#: processes racing for one claim
RACERS = 4
NOW = 1_800_000_000
_databases = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


#: how a process opens the store under test: ("sqlite", data_dir) or ("postgresql", url)
Where = tuple[str, str]


def open_store(where: Where) -> tuple[SandboxStore, Callable[[], None]]:
    """Open the store at `where`; return it and what closes it (its connections, its pool)."""
    engine, place = where
    if engine == "sqlite":
        sqlite = SqliteSandboxStore(Path(place))
        return sqlite, sqlite.close
    database = PostgresDatabase(place, MIGRATIONS)
    return PostgresSandboxStore(place, database), database.close


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path))
    server: PostgresServer = request.getfixturevalue("server")
    return ("postgresql", server.create_database(f"sandbox_{next(_databases)}"))


@pytest.fixture
def store(where: Where) -> Iterator[SandboxStore]:
    opened, close = open_store(where)
    try:
        yield opened
    finally:
        close()


def sent_row(guid: str, account: str = "acc", **changes: Any) -> NewSent:
    row = NewSent(
        guid=guid,
        account=account,
        recipient="+32470000001",
        message="hello",
        port="",
        sidentifiant="",
        via_sms=1,
        via_whatsapp=0,
        encrypted=0,
        shorturl=0,
        url_media="",
        schedule_timestamp=None,
        created_at=NOW,
        status="sent",
        sent_at=NOW,
    )
    row.update(changes)  # type: ignore[typeddict-item]
    return row


def received_row(guid: str, account: str = "acc", **changes: Any) -> NewReceived:
    row = NewReceived(
        guid=guid,
        account=account,
        channel="sms",
        number="+32470000002",
        message="hi",
        received_at=NOW,
        device=FIRST_DEVICE[0],
        kind="text",
        contact="",
    )
    row.update(changes)  # type: ignore[typeddict-item]
    return row


# --- accounts and WhatsApp --------------------------------------------------------------------------------


def test_an_account_is_made_once_with_its_first_phone(store: SandboxStore) -> None:
    assert store.account("acc") is None
    assert store.create_account("acc", FIRST_DEVICE, NOW) is True
    assert store.create_account("acc", ("another", "Another", "+10000000002"), NOW + 1) is False
    record = store.account("acc")
    assert record is not None
    assert (record["whatsapp_active"], record["whatsapp_sync_expires"]) == (1, 0)
    assert [(d["sid"], d["label"], d["phone_number"], d["last_seen"]) for d in store.devices("acc")] == [
        (*FIRST_DEVICE, NOW)
    ]
    assert store.devices("someone else") == []


def test_whatsapp_is_switched_toggled_and_synchronised(store: SandboxStore) -> None:
    store.create_account("acc", FIRST_DEVICE, NOW)

    def active() -> int:
        record = store.account("acc")
        assert record is not None
        return int(record["whatsapp_active"])

    store.set_whatsapp_active("acc", None)
    assert active() == 0
    store.set_whatsapp_active("acc", None)
    assert active() == 1
    store.set_whatsapp_active("acc", False)
    store.set_whatsapp_active("acc", False)
    assert active() == 0
    store.set_whatsapp_active("acc", True)
    assert active() == 1
    store.open_whatsapp_sync("acc", NOW + 600)
    record = store.account("acc")
    assert record is not None and record["whatsapp_sync_expires"] == NOW + 600


# --- phones -----------------------------------------------------------------------------------------------


def test_phones_are_added_replaced_changed_and_removed_with_what_they_received(store: SandboxStore) -> None:
    store.create_account("acc", FIRST_DEVICE, NOW)
    store.put_device("acc", "b-phone", "B", "+10000000002", NOW)
    store.put_device("acc", "b-phone", "B again", "+10000000003", NOW + 5)
    assert [(d["sid"], d["label"], d["phone_number"], d["last_seen"]) for d in store.devices("acc")] == [
        ("b-phone", "B again", "+10000000003", NOW + 5),
        (*FIRST_DEVICE, NOW),
    ]
    assert store.update_device("acc", "b-phone", "renamed", None) is True
    assert store.update_device("acc", FIRST_DEVICE[0], "first", "+10000000009") is True
    assert store.update_device("acc", "nope", "x", None) is False
    assert store.update_device("other", "b-phone", "x", None) is False
    assert [(d["label"], d["phone_number"]) for d in store.devices("acc")] == [
        ("renamed", "+10000000003"),
        ("first", "+10000000009"),
    ]
    store.add_received(received_row("on-b", device="b-phone"))
    store.add_received(received_row("on-first"))
    assert store.delete_device("acc", "b-phone") is True
    assert store.delete_device("acc", "b-phone") is False
    assert [d["sid"] for d in store.devices("acc")] == [FIRST_DEVICE[0]]
    assert [r["guid"] for r in store.received("acc", "sms")] == ["on-first"]


# --- sent -------------------------------------------------------------------------------------------------


def test_the_sent_log_is_newest_first_by_channel_and_by_guid(store: SandboxStore) -> None:
    store.add_sent([sent_row("a1"), sent_row("a2", via_whatsapp=1)])
    store.add_sent([sent_row("b1", created_at=NOW + 1, via_sms=0, via_whatsapp=1, status="pending")])
    store.add_sent([sent_row("other", account="other")])
    assert [r["guid"] for r in store.sent("acc")] == ["b1", "a2", "a1"]
    assert [r["guid"] for r in store.sent("acc", oldest_first=True)] == ["a1", "a2", "b1"]
    assert [r["guid"] for r in store.sent("acc", via="sms")] == ["a2", "a1"]
    assert [r["guid"] for r in store.sent("acc", via="whatsapp")] == ["b1", "a2"]
    assert [r["guid"] for r in store.sent("acc", via="sms", guid="b1")] == []
    [record] = store.sent("acc", guid="b1")
    assert {key: record[key] for key in NewSent.__annotations__} == sent_row(
        "b1", created_at=NOW + 1, via_sms=0, via_whatsapp=1, status="pending"
    )
    assert (record["error_api"], record["error_mobile"], record["attempts"]) == ("", "", 0)
    assert store.delete_sent("acc", ["a1", "other", "nope", "a1"]) == 1
    assert [r["guid"] for r in store.sent("acc")] == ["b1", "a2"]
    assert [r["guid"] for r in store.sent("other")] == ["other"]


def test_a_send_is_stored_whole_or_not_at_all(store: SandboxStore) -> None:
    store.add_sent([sent_row("taken")])
    # Ids are random (never taken twice): a taken one is the engine's error, raised as it comes.
    with pytest.raises((StorageUnavailable, sqlite3.IntegrityError)):
        store.add_sent([sent_row("fresh"), sent_row("taken")])
    assert [r["guid"] for r in store.sent("acc")] == ["taken"]


def test_a_failed_message_is_resent_once_per_failure(store: SandboxStore) -> None:
    store.add_sent([sent_row("m1")])
    assert store.resend("acc", "m1", NOW + 1) is None  # not failed
    assert store.fail_sent("acc", "m1", "no signal", "mobile") is True
    assert store.fail_sent("acc", "nope", "x", "api") is False
    assert store.fail_sent("other", "m1", "x", "api") is False
    [failed] = store.sent("acc", guid="m1")
    assert (failed["status"], failed["sent_at"], failed["error_mobile"], failed["error_api"]) == (
        "failed",
        None,
        "no signal",
        "",
    )
    assert store.resend("acc", "m1", NOW + 2) == 1
    assert store.resend("acc", "m1", NOW + 3) is None
    [resent] = store.sent("acc", guid="m1")
    assert (resent["status"], resent["sent_at"], resent["error_mobile"], resent["attempts"]) == (
        "sent",
        NOW + 2,
        "",
        1,
    )
    store.fail_sent("acc", "m1", "refused", "api")
    assert store.resend("acc", "m1", NOW + 4) == 2


# --- received ---------------------------------------------------------------------------------------------


def test_received_messages_are_newest_first_by_channel_and_keep_flags(store: SandboxStore) -> None:
    first = store.add_received(received_row("r1"))
    second = store.add_received(received_row("r2"))
    store.add_received(received_row("w1", channel="whatsapp", kind="audio", contact="Ann"))
    assert second["id"] > first["id"]
    assert (first["guid"], first["read"], first["alias"], first["message"]) == ("r1", 0, None, "hi")
    assert [r["guid"] for r in store.received("acc", "sms")] == ["r2", "r1"]
    [whatsapp] = store.received("acc", "whatsapp")
    assert (whatsapp["kind"], whatsapp["contact"]) == ("audio", "Ann")
    assert store.mark_read("acc", "r1") is True
    assert store.set_alias("acc", "r2", "boss") is True
    assert store.mark_read("other", "r1") is False
    assert store.set_alias("acc", "nope", "x") is False
    assert [(r["read"], r["alias"]) for r in store.received("acc", "sms")] == [(0, "boss"), (1, None)]
    store.set_alias("acc", "r2", None)
    assert store.received("acc", "sms")[0]["alias"] is None


# --- races between processes ------------------------------------------------------------------------------

_start: Barrier | None = None


def _ready(barrier: Barrier) -> None:
    global _start
    _start = barrier


def _race(where: Where, claim: str) -> object:
    """In a racing process: open the store, wait for the others, make the claim once."""
    store, close = open_store(where)
    try:
        store.account("warm-up")  # connections and schema ready before the start
        assert _start is not None
        _start.wait(timeout=60)
        if claim == "account":
            return store.create_account("raced", FIRST_DEVICE, NOW)
        return store.resend("acc", "m1", NOW + 1)
    finally:
        close()


def race(where: Where, claim: str) -> list[object]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    with ProcessPoolExecutor(RACERS, mp_context=context, initializer=_ready, initargs=(barrier,)) as pool:
        return list(pool.map(_race, [where] * RACERS, [claim] * RACERS))


def test_of_first_uses_of_an_account_at_once_one_makes_it(where: Where, store: SandboxStore) -> None:
    assert sorted(race(where, "account"), key=str) == [False] * (RACERS - 1) + [True]
    assert [d["sid"] for d in store.devices("raced")] == [FIRST_DEVICE[0]]


def test_of_resends_at_once_one_resends(where: Where, store: SandboxStore) -> None:
    store.add_sent([sent_row("m1", status="failed", sent_at=None)])
    assert sorted(race(where, "resend"), key=str) == [1] + [None] * (RACERS - 1)
    [resent] = store.sent("acc", guid="m1")
    assert (resent["status"], resent["attempts"]) == ("sent", 1)


# --- the backend on each store ----------------------------------------------------------------------------


def test_the_sandbox_backend_keeps_its_rules_on_each_store(store: SandboxStore, tmp_path: Path) -> None:
    settings = Settings.from_env({}, {"backend": "sandbox", "data_dir": tmp_path}, parse_urls=False)
    backend = SandboxBackend(settings, store)
    credential = Credential("sandbox-key", CredentialSource.QUERY)
    receipt = backend.send(SendRequest(credential, ("+32470000001", "+32470000002"), "hello"))
    assert [sms.guid for sms in backend.sent_log(credential)] == list(reversed(receipt.message_ids))
    assert [row["recipient"] for row in backend.sent("sandbox-key")] == ["+32470000001", "+32470000002"]
    assert store.account(account_of("sandbox-key")) is not None
    guid = receipt.message_ids[0]
    with pytest.raises(NotResendable):
        backend.resend(credential, guid)
    backend.simulate_failure(credential, guid, "no signal")
    assert backend.resend(credential, guid).attempt == 1
    inbound = backend.simulate_inbound(credential, "+32470000009", "hi")
    assert [m.guid for m in backend.received(credential)] == [inbound.guid]
    assert backend.whatsapp_active(credential, "x") == "0"


# --- PostgreSQL stopped, then back -------------------------------------------------------------------------


def test_a_stopped_postgresql_is_storage_unavailable_until_it_is_back(server: PostgresServer) -> None:
    url = server.create_database("sandbox_stopped")
    store, close = open_store(("postgresql", url))
    try:
        store.add_sent([sent_row("m1")])
        server.stop()
        try:
            with pytest.raises(StorageUnavailable) as raised:
                store.sent("acc")
            assert "nothing was sent or changed" in raised.value.note
        finally:
            server.start()
        deadline = time.monotonic() + 30  # the pool replaces its connections in the background
        while True:
            try:
                assert [r["guid"] for r in store.sent("acc")] == ["m1"]
                break
            except StorageUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        close()


# --- delivery reports, calls, notifications, e-mail -------------------------------------------------------


def test_only_a_sent_message_is_marked_delivered(store: SandboxStore) -> None:
    store.add_sent([sent_row("m1"), sent_row("m2", status="pending", sent_at=None), sent_row("m3")])
    store.fail_sent("acc", "m3", "no signal", "mobile")
    assert store.deliver_sent("acc", "m1", NOW + 5) is True
    assert store.deliver_sent("acc", "m1", NOW + 6) is False  # delivered already
    assert store.deliver_sent("acc", "m2", NOW + 5) is False
    assert store.deliver_sent("acc", "m3", NOW + 5) is False
    assert store.deliver_sent("other", "m1", NOW + 5) is False
    records = {r["guid"]: r for r in store.sent("acc")}
    assert (records["m1"]["status"], records["m1"]["delivered_at"], records["m1"]["sent_at"]) == (
        "delivered",
        NOW + 5,
        NOW,
    )
    assert records["m2"]["delivered_at"] is None


def call_row(guid: str, direction: str = "missed", at: int = NOW, account: str = "acc") -> NewCall:
    return NewCall(
        guid=guid,
        account=account,
        direction=direction,
        number="+15557654321",
        name=None,
        device=FIRST_DEVICE[0],
        at=at,
        duration=0,
    )


def test_calls_are_kept_by_direction_newest_first(store: SandboxStore) -> None:
    made = store.add_call({**call_row("c1"), "name": "Morgan"})  # type: ignore[typeddict-item]
    store.add_call(call_row("c2", at=NOW + 10))
    store.add_call(call_row("c3", "incoming", at=NOW + 5))
    store.add_call(call_row("c4", account="other"))
    assert isinstance(made["id"], int)
    assert (made["guid"], made["name"], made["direction"], made["at"]) == ("c1", "Morgan", "missed", NOW)
    assert [r["guid"] for r in store.calls("acc", "missed")] == ["c2", "c1"]
    assert [r["guid"] for r in store.calls("acc", "incoming")] == ["c3"]
    assert store.calls("acc", "outgoing") == []


def test_notifications_are_kept_per_account_newest_first(store: SandboxStore) -> None:
    row = NewNotification(
        account="acc", sid="p1", title="T", message="M", type="notification", distributed=1, created_at=NOW
    )
    first = store.add_notification(row)
    second = store.add_notification({**row, "created_at": NOW + 1, "title": "T2"})  # type: ignore[typeddict-item]
    store.add_notification({**row, "account": "other"})  # type: ignore[typeddict-item]
    assert second["id"] > first["id"]
    assert [(r["title"], r["sid"], r["distributed"]) for r in store.notifications("acc")] == [
        ("T2", "p1", 1),
        ("T", "p1", 1),
    ]


def test_emails_are_kept_per_mailbox_and_folder_newest_first(store: SandboxStore) -> None:
    row = NewEmail(
        account="acc",
        mailbox="",
        folder="INBOX",
        sender_name="A",
        sender_email="a@example.test",
        recipient_email="b@example.test",
        subject="s1",
        body="b",
        at=NOW,
        attachment_name="",
        attachment_size=0,
    )
    made = store.add_email(row)
    store.add_email({**row, "subject": "s2", "at": NOW + 1})  # type: ignore[typeddict-item]
    store.add_email({**row, "folder": "Sent", "subject": "sent"})  # type: ignore[typeddict-item]
    store.add_email({**row, "mailbox": "box", "subject": "boxed"})  # type: ignore[typeddict-item]
    assert (made["subject"], made["attachment_size"]) == ("s1", 0)
    assert [r["subject"] for r in store.emails("acc", "", "INBOX")] == ["s2", "s1"]
    assert [r["subject"] for r in store.emails("acc", "", "Sent")] == ["sent"]
    assert [r["subject"] for r in store.emails("acc", "box", "INBOX")] == ["boxed"]
    assert store.emails("other", "", "INBOX") == []


def test_the_sandbox_backend_keeps_calls_notifications_and_email_on_each_store(
    store: SandboxStore, tmp_path: Path
) -> None:
    settings = Settings.from_env({}, {"backend": "sandbox", "data_dir": tmp_path}, parse_urls=False)
    backend = SandboxBackend(settings, store)
    credential = Credential("sandbox-key", CredentialSource.QUERY)
    missed = backend.simulate_call(credential, "missed", "+15557654321", name="Morgan")
    assert [c.guid for c in backend.calls(credential, "missed")] == [missed.guid]
    assert missed.device == FIRST_DEVICE[0]
    notification = backend.send_notification(credential, "", "Title", "Hello")
    assert [n.id for n in backend.notifications(credential)] == [notification.id]
    draft = EmailDraft("A", "a@example.test", "b@example.test", "Subject", "Body", mailbox_key="secret-box")
    sent = backend.send_email(credential, draft)
    assert [e.id for e in backend.emails(credential, "secret-box", "Sent")] == [sent.id]
    assert backend.emails(credential, "secret-box", "INBOX") == []
    arrived = backend.simulate_email(credential, draft)
    assert [e.id for e in backend.emails(credential, "secret-box", "inbox")] == [arrived.id]
    guid = backend.send(SendRequest(credential, ("+32470000001",), "hello")).message_ids[0]
    assert backend.simulate_delivery(credential, guid).status == "delivered"
