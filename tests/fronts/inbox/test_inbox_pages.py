"""The web inbox and the operator console, server side: pages, access, CSRF, headers, escaping."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

KEY = "sandbox-key-1"
SCRIPT = "<script>alert(1)</script>"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found[1]


def send(client: FlaskClient, text: str = "Hello from the test", to: str = "+32470123456") -> str:
    answer = client.post("/sendsms/", data={"apikey": KEY, "recipients": to, "message": text})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["result"]["id"]


@pytest.fixture
def sandbox(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app("sandbox").test_client()


def test_inbox_lists_a_sent_message_newest_first_with_its_details(sandbox: FlaskClient) -> None:
    first = send(sandbox, "first message")
    second = send(sandbox, "second message", to="+32470999888")
    page = sandbox.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.index(second) < html.index(first)
    assert "+32470999888" in html and "second message" in html and "SMS" in html
    assert "sandbox-phone-1" in html


def test_search_and_filters(sandbox: FlaskClient) -> None:
    keep = send(sandbox, "pizza is ready")
    other = send(sandbox, "your code is 1234")
    html = sandbox.get("/?q=PIZZA").get_data(as_text=True)
    assert keep in html and other not in html
    token = csrf_of(sandbox.get("/").get_data(as_text=True))
    sandbox.post(f"/ui/messages/{other}/fail", data={"csrf": token})
    failed = sandbox.get("/?status=failed").get_data(as_text=True)
    assert other in failed and keep not in failed
    assert keep not in sandbox.get("/?channel=whatsapp").get_data(as_text=True)


def test_pages_send_a_restrictive_policy(sandbox: FlaskClient) -> None:
    for path in ("/", "/console", "/ui/static/inbox.js"):
        with sandbox.get(path) as answer:
            assert answer.status_code == 200, path
            policy = answer.headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "script-src 'self'" in policy
            assert "unsafe-inline" not in policy
            assert answer.headers["X-Frame-Options"] == "DENY"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
    html = sandbox.get("/").get_data(as_text=True)
    assert "<script>" not in html and "style=" not in html  # no inline script or style


def test_message_text_is_escaped_everywhere(sandbox: FlaskClient) -> None:
    guid = send(sandbox, SCRIPT)
    for path in ("/", f"/inbox/messages/{guid}"):
        html = sandbox.get(path).get_data(as_text=True)
        assert SCRIPT not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_unknown_api_paths_stay_json(sandbox: FlaskClient) -> None:
    answer = sandbox.get("/no/such/endpoint")
    assert answer.status_code == 404 and answer.is_json
    assert sandbox.get("/inbox/messages/nope").status_code == 404
    assert "Content-Security-Policy" not in sandbox.get("/no/such/endpoint").headers


def test_a_button_without_its_csrf_token_does_nothing(sandbox: FlaskClient) -> None:
    guid = send(sandbox)
    sandbox.get("/")  # the session cookie
    assert sandbox.post(f"/ui/messages/{guid}/fail", data={"csrf": "forged"}).status_code == 403
    assert sandbox.post(f"/ui/messages/{guid}/fail").status_code == 403
    # A token made for another browser's session is refused too.
    other = sandbox.application.test_client()
    token = csrf_of(other.get("/").get_data(as_text=True))
    assert sandbox.post(f"/ui/messages/{guid}/fail", data={"csrf": token}).status_code == 403
    assert guid not in sandbox.get("/?status=failed").get_data(as_text=True)
    answer = sandbox.post(
        f"/ui/messages/{guid}/fail", data={"csrf": csrf_of(sandbox.get("/").get_data(as_text=True))}
    )
    assert answer.status_code == 303
    assert guid in sandbox.get("/?status=failed").get_data(as_text=True)


def test_fail_then_resend_flow_to_the_dialect(sandbox: FlaskClient) -> None:
    guid = send(sandbox)
    token = csrf_of(sandbox.get("/").get_data(as_text=True))
    refused = sandbox.post("/resend/", data={"apikey": KEY, "guid": guid}).get_json()
    assert refused["result"]["error"] != 0
    assert sandbox.post(f"/ui/messages/{guid}/fail", data={"csrf": token, "next": "/"}).status_code == 303
    log = sandbox.get("/log/sent/sms/", query_string={"apikey": KEY, "guid_message": guid}).get_json()
    assert "failed" in str(log)
    assert sandbox.post(f"/ui/messages/{guid}/resend", data={"csrf": token}).status_code == 303
    html = sandbox.get(f"/inbox/messages/{guid}").get_data(as_text=True)
    assert "resent 1 time" in html


def test_reply_from_the_phone_view_reaches_getsms(sandbox: FlaskClient) -> None:
    send(sandbox, "are you coming?", to="+32470555444")
    html = sandbox.get("/").get_data(as_text=True)
    phone = re.search(r'href="(/inbox/phones/[0-9a-f]+/[^"]+)"', html)
    assert phone, html
    page = sandbox.get(phone[1]).get_data(as_text=True)
    assert "are you coming?" in page
    action = re.search(r'action="(/ui/phones/[^"]+/reply)"', page)
    assert action
    answer = sandbox.post(action[1], data={"csrf": csrf_of(page), "text": "yes, at 8", "next": phone[1]})
    assert answer.status_code == 303
    received = sandbox.get("/getsms/", query_string={"apikey": KEY}).get_json()
    assert "yes, at 8" in str(received) and "+32470555444" in str(received)
    assert "yes, at 8" in sandbox.get(phone[1]).get_data(as_text=True)


def test_live_part_is_the_page_without_its_frame(sandbox: FlaskClient) -> None:
    guid = send(sandbox)
    part = sandbox.get("/", headers={"X-UI-Live": "1"}).get_data(as_text=True)
    assert guid in part and "<html" not in part


def test_the_password_closes_inbox_and_console(make_app: Callable[..., Flask]) -> None:
    client = make_app("sandbox", ui_password="open sesame").test_client()
    guid = send(client, "secret text")
    for path in ("/", "/console", f"/inbox/messages/{guid}"):
        answer = client.get(path)
        assert answer.status_code == 303 and "/ui/login" in answer.headers["Location"], path
    login = client.get("/ui/login?next=/console").get_data(as_text=True)
    assert "secret text" not in login
    wrong = client.post("/ui/login", data={"csrf": csrf_of(login), "password": "nope", "next": "/console"})
    assert wrong.status_code == 401
    right = client.post(
        "/ui/login", data={"csrf": csrf_of(login), "password": "open sesame", "next": "/console"}
    )
    assert right.status_code == 303 and right.headers["Location"].endswith("/console")
    assert "secret text" in client.get("/").get_data(as_text=True)
    # A redirect after signing in stays on this site.
    login = client.get("/ui/login").get_data(as_text=True)
    assert security_next(client, login, "//evil.example/") == "/"


def security_next(client: FlaskClient, login: str, target: str) -> str:
    form = {"csrf": csrf_of(login), "password": "open sesame", "next": target}
    answer = client.post("/ui/login", data=form)
    return answer.headers["Location"].removeprefix("http://localhost")


def test_console_with_a_real_backend_is_off_without_the_password(make_app: Callable[..., Flask]) -> None:
    client = make_app("mobsms").test_client()
    assert client.get("/console").status_code == 404
    assert client.get("/console").is_json
    assert client.get("/").is_json


def test_a_failover_to_a_real_backend_closes_the_console_before_it_is_ever_used(
    make_app: Callable[..., Flask],
) -> None:
    """The sandbox fails over to mobsms, which no send has needed yet: the backends made so far were all
    the sandbox, and the console opened with no password. It counts the backends configured."""
    client = make_app("sandbox", failover_backend="mobsms", failover_key="mobsms-key-1").test_client()
    assert client.get("/console").status_code == 404
    assert client.get("/").status_code == 200  # the sandbox's inbox stays open


def test_the_inbox_is_served_from_the_start_when_the_sandbox_is_the_failover(
    make_app: Callable[..., Flask],
) -> None:
    """mobsms fails over to the sandbox: what a failover sends lands in the sandbox, so its inbox is there
    from the start, not only once a failover has happened (create_app registers it once)."""
    client = make_app("mobsms", failover_backend="sandbox").test_client()
    assert client.get("/").status_code == 200
    assert client.get("/console").status_code == 404


def test_console_with_a_real_backend_masks_numbers_and_shows_no_text(make_app: Callable[..., Flask]) -> None:
    client = make_app("mobsms", ui_password="pw-for-ops").test_client()
    sent = client.post(
        "/sendsms/", data={"apikey": "mobsms-key-1", "recipients": "+32470123456", "message": "private words"}
    )
    assert sent.status_code == 200, sent.get_data(as_text=True)
    login = client.get("/ui/login").get_data(as_text=True)
    client.post("/ui/login", data={"csrf": csrf_of(login), "password": "pw-for-ops"})
    assert client.get("/").headers["Location"].endswith("/console")
    html = client.get("/console").get_data(as_text=True)
    assert "mobsms" in html and "closed" in html
    assert "/sendsms/" in html and "+********456" in html
    assert "+32470123456" not in html and "private words" not in html and "mobsms-key-1" not in html
    assert client.get("/inbox/messages/x").status_code == 404


def test_account_page_shows_calls_and_notifications_escaped(sandbox: FlaskClient) -> None:
    send(sandbox)
    call = sandbox.post(
        "/sandbox/calls", data={"apikey": KEY, "direction": "missed", "number": "+32470777888"}
    )
    assert call.status_code == 200, call.get_data(as_text=True)
    note = sandbox.post("/notification/send/", data={"apikey": KEY, "title": "Alert", "message": SCRIPT})
    assert note.status_code == 200, note.get_data(as_text=True)
    account = re.search(r'href="(/inbox/accounts/[0-9a-f]+)"', sandbox.get("/").get_data(as_text=True))
    assert account
    html = sandbox.get(account[1]).get_data(as_text=True)
    assert "+32470777888" in html and "missed" in html
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- bad input, managed clients' accounts, what one page reads ------------------------------------------


def test_a_nul_character_anywhere_in_the_inbox_input_is_a_400_page(sandbox: FlaskClient) -> None:
    """No store keeps U+0000 (PostgreSQL's text refuses it: a retryable 503 there): refused before the view,
    in the inbox's own error page, whatever the engine."""
    guid = send(sandbox, "are you coming?", to="+32470555444")
    html = sandbox.get("/").get_data(as_text=True)
    token = csrf_of(html)
    phone = re.search(r'href="/inbox/phones/([0-9a-f]+)/([^"]+)"', html)
    assert phone
    account, number = phone[1], phone[2]
    answers = {
        "q": sandbox.get("/?q=pizza%00"),
        "guid": sandbox.get("/inbox/messages/a%00b"),
        "account": sandbox.get(f"/inbox/accounts/{account}%00"),
        "phone account": sandbox.get(f"/inbox/phones/{account}%00/{number}"),
        "number": sandbox.get(f"/inbox/phones/{account}/{number}%00"),
        "reply text": sandbox.post(
            f"/ui/phones/{account}/{number}/reply", data={"csrf": token, "text": "yes\x00no"}
        ),
        "fail error": sandbox.post(f"/ui/messages/{guid}/fail", data={"csrf": token, "error": "bad\x00"}),
        "button guid": sandbox.post(f"/ui/messages/{guid}%00/deliver", data={"csrf": token}),
    }
    for what, answer in answers.items():
        assert answer.status_code == 400, (what, answer.status_code)
        page = answer.get_data(as_text=True)
        assert answer.mimetype == "text/html" and "NUL character" in page, what
    received = sandbox.get("/getsms/", query_string={"apikey": KEY}).get_json()
    assert "yes" not in str(received)  # nothing was stored
    assert guid not in sandbox.get("/?status=failed").get_data(as_text=True)


MANAGED = """
[clients.shop]
key_sha256 = ["{digest}"]
backend = "mobsms"
upstream_key = "mobsms-key-1"
failover_backend = "sandbox"
webhook_url = "http://127.0.0.1:9/hook"
webhook_secret = "hook-secret"
"""


def test_a_managed_clients_sandbox_failover_account_is_named_and_its_events_reach_its_webhook(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    """A client whose sends fail over to the sandbox files them under its failover credential's account
    ("client:<name>" without a failover key): the inbox names the client, and its buttons' events go to the
    client's webhook (they were dropped, addressed to the account's fingerprint, which has no webhook)."""
    clients = tmp_path / "clients.toml"
    clients.write_text(MANAGED.format(digest=hashlib.sha256(b"shop-key").hexdigest()))
    app = make_app("sandbox", clients_file=str(clients), mobsms_url="http://127.0.0.1:9")
    client = app.test_client()
    answer = client.post(
        "/sendsms/", data={"apikey": "shop-key", "recipients": "+32470123456", "message": "Hi"}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    guid = answer.get_json()["result"]["id"]
    html = client.get("/").get_data(as_text=True)
    assert guid in html and "<code>shop</code>" in html
    assert client.post(f"/ui/messages/{guid}/fail", data={"csrf": csrf_of(html)}).status_code == 303
    events = app.extensions["smsbridge"].events.about(guid)
    assert [(e["client"], e["type"]) for e in events] == [("shop", "sms.failed")]


def test_client_names_are_mapped_once_per_clients_file_not_per_row(
    make_app: Callable[..., Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reload_at_once: None
) -> None:
    from app.service import inbox as inbox_module

    clients = tmp_path / "clients.toml"
    clients.write_text(MANAGED.format(digest=hashlib.sha256(b"shop-key").hexdigest()))
    app = make_app("sandbox", clients_file=str(clients), mobsms_url="http://127.0.0.1:9")
    client = app.test_client()
    for n in range(5):
        client.post(
            "/sendsms/", data={"apikey": "shop-key", "recipients": "+32470123456", "message": f"m{n}"}
        )
    digests: list[str] = []
    real = inbox_module.account_of
    monkeypatch.setattr(inbox_module, "account_of", lambda key: digests.append(key) or real(key))
    assert client.get("/").get_data(as_text=True).count("<code>shop</code>") == 5
    assert len(digests) <= 2  # one client: its upstream key's account and its failover's
    client.get("/")
    assert len(digests) <= 2  # the clients file is the same: nothing hashed again
    clients.write_text(
        MANAGED.replace("[clients.shop]", "[clients.boutique]").format(
            digest=hashlib.sha256(b"shop-key").hexdigest()
        )
    )
    html = client.get("/").get_data(as_text=True)
    assert "<code>shop</code>" not in html  # the file changed: the map is made again
    assert 2 < len(digests) <= 4


def test_the_phone_view_reads_each_log_once(sandbox: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.service import Inbox

    send(sandbox, "hello", to="+32470555444")
    account = re.search(r'href="/inbox/phones/([0-9a-f]+)/', sandbox.get("/").get_data(as_text=True))
    assert account
    reads: list[str] = []
    for name in ("sent_log", "received_sms"):
        real = getattr(Inbox, name)
        monkeypatch.setattr(
            Inbox, name, lambda self, acc, real=real, name=name: reads.append(name) or real(self, acc)
        )
    # A number with no conversation: both origins are looked at, each asking for both logs.
    assert sandbox.get(f"/inbox/phones/{account[1]}/+32470000999").status_code == 200
    assert sorted(reads) == ["received_sms", "sent_log"]


def test_the_console_lists_a_page_of_dead_events(sandbox: FlaskClient) -> None:
    from app.service.inbox import DEAD_PAGE

    events = sandbox.application.extensions["smsbridge"].events
    for n in range(DEAD_PAGE + 3):
        events.add("client-a", "sms.received", {}, event_id=f"dead-{n:03}")
        claimed = events.claim()
        assert claimed is not None
        events.failed(claimed, "HTTP 500", 0)
    html = sandbox.get("/console").get_data(as_text=True)
    listed = re.findall(r"/ui/events/(dead-\d+)/replay", html)
    assert listed == [f"dead-{n:03}" for n in range(DEAD_PAGE)]  # the oldest page
    assert f">{DEAD_PAGE + 3}<" in html  # counted whole
