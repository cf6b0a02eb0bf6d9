"""The web inbox and the console in a real headless Chromium, against the bridge under real gunicorn.

Each test drives the pages as a person would (no reload unless it says so) and checks what the rest of
the bridge saw: the dialect's answers (/getsms/, /resend/) and the webhook receiver's events.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Locator, Page, expect

from app.state.sqlite.outbox import SqliteOutbox
from tests.harness.browser import Browser, screenshot
from tests.harness.gunicorn import Gunicorn, start_bridge
from tests.harness.net import port_of, stop_quickly
from tests.harness.webhooks import SECRET, V2Receiver, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium")

KEY = "sandbox-key-browser"
SCRIPT = "<script>alert(1)</script>"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def receiver() -> Iterator[V2Receiver]:
    made = V2Receiver(SECRET)
    yield made
    stop_quickly(made.stop, port_of(made.url))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inbox") / "gunicorn-data"


@pytest.fixture(scope="module")
def dead_event(data_dir: Path) -> str:
    """An event that exhausted its retries before the bridge started (as `smsbridge webhooks dead` shows)."""
    with closing(SqliteOutbox(data_dir)) as store:
        data = {"guid": "dead-1", "from": "+15550000001", "message": "x"}
        event_id = store.add("default", "sms.received", data)
        claimed = store.claim()
        assert claimed is not None
        store.failed(claimed, "HTTP 503", retry_window=0.0)
    return event_id


@pytest.fixture(scope="module")
def bridge(data_dir: Path, receiver: V2Receiver, dead_event: str) -> Iterator[Gunicorn]:
    served = start_bridge(
        data_dir.parent,
        {
            "SMSBRIDGE_WEBHOOK_URL": receiver.url + "/hook",
            "SMSBRIDGE_WEBHOOK_SECRET": SECRET,
            "SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        },
    )
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as started:
        yield started
        assert started.blocked == []  # nothing tried to leave 127.0.0.1


@pytest.fixture
def page(browser: Browser) -> Page:
    opened = browser.new_page(viewport={"width": 1360, "height": 860})
    opened.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    return opened


def send(bridge: Gunicorn, text: str, to: str = "+32470123456") -> str:
    answer = requests.post(
        bridge.url + "/sendsms/", data={"apikey": KEY, "recipients": to, "message": text}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]["id"]


def row(page: Page, guid: str) -> Locator:
    return page.locator(f'tr[data-guid="{guid}"]')


def test_a_message_sent_over_rest_appears_without_a_reload(bridge: Gunicorn, page: Page) -> None:
    page.goto(bridge.url + "/")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    guid = send(bridge, "Your table for 4 is booked at 19:30", to="+32470111222")
    expect(row(page, guid)).to_contain_text("Your table for 4 is booked at 19:30")
    expect(row(page, guid)).to_contain_text("+32470111222")
    expect(row(page, guid)).to_contain_text("sent")
    assert page.evaluate("window.notReloaded") is True
    second = send(bridge, "Code 482913 — valid 10 minutes", to="+447700900123")
    expect(row(page, second)).to_contain_text("Code 482913")
    screenshot(page, "inbox")


def test_a_script_in_a_message_is_shown_as_text(bridge: Gunicorn, page: Page) -> None:
    page.goto(bridge.url + "/")
    guid = send(bridge, SCRIPT)
    cell = row(page, guid).locator("td.text")
    expect(cell).to_have_text(SCRIPT)  # arrived live, through the script's swap
    page.reload()
    expect(row(page, guid).locator("td.text")).to_have_text(SCRIPT)
    assert page.evaluate("typeof window.alert") == "function"
    screenshot(page, "inbox-script-as-text")


def test_a_reply_from_the_phone_view_reaches_getsms_and_the_webhook(
    bridge: Gunicorn, page: Page, receiver: V2Receiver
) -> None:
    number = "+32470333444"
    send(bridge, "Are you coming tonight?", to=number)
    page.goto(bridge.url + "/")
    page.get_by_role("link", name=number).first.click()
    expect(page.get_by_role("heading", name=f"Phone {number}")).to_be_visible()
    reply = f"Yes, see you at 8 ({uuid.uuid4().hex[:6]})"
    page.get_by_label(f"Reply as {number}").fill(reply)
    page.get_by_role("button", name="Reply").click()
    expect(page.locator(".bubble.incoming").last).to_contain_text(reply)
    screenshot(page, "phone-view")

    received = requests.get(bridge.url + "/getsms/", params={"apikey": KEY}, timeout=10).json()
    assert reply in json.dumps(received, ensure_ascii=False)
    event = wait_for(
        lambda: next((e for e in receiver.envelopes() if e["data"].get("message") == reply), None),
        "the sms.received webhook",
        timeout=15,
    )
    assert event["type"] == "sms.received" and event["data"]["from"] == number


def test_failing_a_message_makes_resend_work(bridge: Gunicorn, page: Page, receiver: V2Receiver) -> None:
    guid = send(bridge, "Parcel 77 is out for delivery")
    refused = requests.post(bridge.url + "/resend/", data={"apikey": KEY, "guid": guid}, timeout=10).json()
    assert refused["result"]["error"] != 0, refused
    page.goto(f"{bridge.url}/inbox/messages/{guid}")
    page.get_by_role("button", name="Mark failed").click()
    expect(page.locator("#live .status").first).to_have_text("failed")
    wait_for(
        lambda: any(
            e["data"].get("guid") == guid and e["type"] == "sms.failed" for e in receiver.envelopes()
        ),
        "the sms.failed webhook",
        timeout=15,
    )
    resent = requests.post(bridge.url + "/resend/", data={"apikey": KEY, "guid": guid}, timeout=10).json()
    assert str(resent["result"]["error"]) == "0", resent
    # The page follows without a reload: the status, the resend, the delivery of the failure's webhook.
    expect(page.locator("#live")).to_contain_text("resent 1 time")
    expect(page.locator("#live table")).to_contain_text("delivered")
    screenshot(page, "message-page")


def test_mark_delivered(bridge: Gunicorn, page: Page, receiver: V2Receiver) -> None:
    guid = send(bridge, "Your order shipped")
    page.goto(bridge.url + "/")
    row(page, guid).get_by_role("button", name="Mark delivered").click()
    expect(row(page, guid)).to_contain_text("delivered")
    wait_for(
        lambda: any(
            e["data"] == {"guid": guid, "to": "+32470123456", "status": "delivered"}
            for e in receiver.envelopes()
        ),
        "the delivery webhook",
        timeout=15,
    )
    # What a new user sees after trying each button: the README's picture (docs/inbox.png).
    inbound = requests.post(
        bridge.url + "/sandbox/inbound",
        data={"apikey": KEY, "number": "+447700900123", "message": "Thanks, got the code"},
        timeout=10,
    )
    assert inbound.status_code == 200, inbound.text
    page.goto(bridge.url + "/")
    expect(row(page, guid)).to_contain_text("delivered")
    expect(page.locator("table").nth(1)).to_contain_text("Thanks, got the code")
    screenshot(page, "inbox-readme")


def test_replaying_a_dead_event_delivers_it(
    bridge: Gunicorn, page: Page, receiver: V2Receiver, dead_event: str
) -> None:
    page.goto(bridge.url + "/console")
    expect(page.locator("#dead-count")).to_have_text("1")
    page.locator(f'tr[data-event="{dead_event}"]').get_by_role("button", name="Replay").click()
    wait_for(lambda: receiver.ids_accepted()[dead_event] == 1, "the replayed event", timeout=15)
    expect(page.locator("#dead-count")).to_have_text("0")
    expect(page.get_by_role("link", name="/metrics").first).to_be_visible()
    screenshot(page, "console")


def test_the_password_closes_the_inbox(browser: Browser, tmp_path: Path) -> None:
    closed = start_bridge(tmp_path, {"SMSBRIDGE_UI_PASSWORD": PASSWORD}, name="closed")
    try:
        send(closed, "only for signed-in eyes")
        page = browser.new_page()
        page.goto(closed.url + "/")
        expect(page.get_by_label("Password (SMSBRIDGE_UI_PASSWORD)")).to_be_visible()
        assert "only for signed-in eyes" not in page.content()
        assert requests.get(closed.url + "/console", allow_redirects=False, timeout=10).status_code == 303
        screenshot(page, "login")
        page.get_by_label("Password (SMSBRIDGE_UI_PASSWORD)").fill("not it")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong password.")
        page.get_by_label("Password (SMSBRIDGE_UI_PASSWORD)").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("td.text").first).to_have_text("only for signed-in eyes")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Password (SMSBRIDGE_UI_PASSWORD)")).to_be_visible()
    finally:
        closed.stop()
