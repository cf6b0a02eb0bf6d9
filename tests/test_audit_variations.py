"""The outside audit's variations (issue 12, items 1, 2, 6, 17), kept: forms the other tests do not list.

Each probe asserts the safe behaviour. Webhook targets in every spelling of a loopback or private address,
redirects, an egress proxy; pass-through answers that quote the operator's key in any encoding, compressed
oddly, in any header; paths with `..;`, bytes that are not UTF-8, case variants, relative Locations.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import json
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask

import app.webhooks.delivery
from app.config import Settings
from app.state.sqlite.outbox import SqliteOutbox as EventStore
from app.webhooks.delivery import Deliverer, Target
from tests.harness.fakes.forward_proxy import ForwardProxy
from tests.harness.fakes.listener import Listener
from tests.harness.fakes.server import Reply
from tests.harness.fakes.smsmobileapi import FakeSmsMobileApi
from tests.harness.gunicorn import Gunicorn
from tests.harness.passthrough import CLIENT_KEY, OPERATOR_KEY, managed_vendor_app
from tests.harness.webhooks import SECRET, SENDER, events_in

# --- webhooks: target forms -----------------------------------------------------------------------------


def webhook_forms(port: int) -> list[str]:
    return [
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://[0:0:0:0:0:ffff:7f00:1]:{port}/hook",
        f"http://[::ffff:7f00:1]:{port}/hook",
        f"http://[::127.0.0.1]:{port}/hook",
        f"http://[::]:{port}/hook",
        f"http://[::1]:{port}/hook",
        f"http://[0::1]:{port}/hook",
        f"http://0.0.0.0:{port}/hook",
        f"http://0:{port}/hook",
        f"HTTP://127.0.0.1:{port}/hook",
        f"HtTp://LocalHost:{port}/hook",
        f"http://localhost:{port}/hook",
        f"http://127.000.000.001:{port}/hook",
        f"http://0177.0.0.1:{port}/hook",
        f"http://0x7f.0x0.0x0.0x1:{port}/hook",
        f"http://0x7F000001:{port}/hook",
        f"http://127.0.1:{port}/hook",
        f"http://127.0.0.1.:{port}/hook",
        f"http://127\u30020\u30020\u30021:{port}/hook",  # ideographic full stops
        f"http://127\uff0e0\uff0e0\uff0e1:{port}/hook",  # fullwidth full stops
        f"http://%31%32%37.0.0.1:{port}/hook",
        f"http://127.0.0.1%2f@8.8.8.8:{port}/hook",
        f"http:/127.0.0.1:{port}/hook",
        f"http:127.0.0.1:{port}/hook",
        f"http:\\\\127.0.0.1:{port}/hook",
        f"http://127.0.0.1:{port}\t/hook",
        f"http://127.0.0.1\n:{port}/hook",
        f" http://127.0.0.1:{port}/hook",
        f"http://127.0.0.1:{port}?@8.8.8.8/hook",
        f"http://127.0.0.1:{port};@8.8.8.8/hook",
        f"http://[::ffff:127.0.0.1%25lo]:{port}/hook",
        f"http://127.0.0.1:0{port}/hook",
        f"http://127.0.0.1:+{port}/hook",
    ]


def test_probe_webhook_forms_reach_no_loopback_listener(
    loopback_listeners: list[Listener],
    tmp_path: Path,
) -> None:
    port = loopback_listeners[0].port
    forms = webhook_forms(port)
    store = EventStore(tmp_path)
    by_client = {f"c{n}": Target(url, "v2", SECRET) for n, url in enumerate(forms)}
    ids = {
        store.add(f"c{n}", "sms.sent", {"guid": f"g{n}", "to": SENDER}): url for n, url in enumerate(forms)
    }
    deliverer = Deliverer(store, timeout=2.0, retry_window=3600, allow_private=False, targets=by_client.get)
    deliverer.deliver_due()
    store.close()
    assert [listener.connections for listener in loopback_listeners] == [0] * len(loopback_listeners)
    events = events_in(tmp_path)
    for event_id, url in ids.items():
        row = events[event_id]
        assert row["status"] in ("dead", "pending") and row["last_error"], (url, dict(row))
        assert "refused" in row["last_error"] or "private" in row["last_error"], (url, row["last_error"])


#: forms that name a private address plainly: accepted at configuration by design (the address check is
#: at delivery, where SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE applies); the delivery probe above shows them refused
PLAIN_PRIVATE = {
    "http://[::ffff:127.0.0.1]:9/hook", "http://[0:0:0:0:0:ffff:7f00:1]:9/hook", "http://[::ffff:7f00:1]:9/hook",
    "http://[::127.0.0.1]:9/hook", "http://[::]:9/hook", "http://[::1]:9/hook", "http://[0::1]:9/hook",
    "http://0.0.0.0:9/hook", "HTTP://127.0.0.1:9/hook", "HtTp://LocalHost:9/hook", "http://localhost:9/hook",
    "http://127.0.0.1:9?@8.8.8.8/hook", "http://127.0.0.1:09/hook",
}  # fmt: skip


@pytest.mark.parametrize("url", [u for u in webhook_forms(9) if u not in PLAIN_PRIVATE])
def test_probe_odd_webhook_forms_are_refused_at_configuration(url: str, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="SMSBRIDGE_WEBHOOK_URL"):
        Settings.from_env(
            environ={}, overrides={"webhook_url": url, "webhook_secret": SECRET, "data_dir": tmp_path}
        )


# --- webhooks: a redirect to loopback ---------------------------------------------------------------------

PUBLIC = "127.0.0.2"


class Redirector:
    """An HTTP server on PUBLIC that answers every POST with `status` and Location `location`."""

    def __init__(self, status: int, location: str) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.hits += 1
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((PUBLIC, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def public_is_127_0_0_2(monkeypatch: pytest.MonkeyPatch) -> None:
    real = app.webhooks.delivery._refuse_private

    def check(address: str, host: str | None = None) -> None:
        if address != PUBLIC:
            real(address, host)

    monkeypatch.setattr(app.webhooks.delivery, "_refuse_private", check)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_probe_webhook_redirect_to_loopback_is_not_followed(
    status: int, public_is_127_0_0_2: None, tmp_path: Path
) -> None:
    loopback = Listener("127.0.0.1")
    redirector = Redirector(status, f"http://127.0.0.1:{loopback.port}/internal")
    try:
        store = EventStore(tmp_path)
        event_id = store.add("c", "sms.sent", {"guid": "g", "to": SENDER})
        target = Target(f"http://{PUBLIC}:{redirector.port}/hook", "v2", SECRET)
        deliverer = Deliverer(
            store, timeout=2.0, retry_window=3600, allow_private=False, targets=lambda c: target
        )
        assert deliverer.deliver_due() == 1
        store.close()
        assert redirector.hits == 1
        assert loopback.connections == 0
        row = events_in(tmp_path)[event_id]
        assert (row["status"], row["last_error"]) == ("pending", f"HTTP {status}")
    finally:
        redirector.close()
        loopback.close()


def test_probe_webhook_through_env_proxy_still_refuses_a_loopback_literal(
    monkeypatch: pytest.MonkeyPatch,
    loopback_listeners: list[Listener],
    tmp_path: Path,
) -> None:
    proxy = ForwardProxy()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        port = loopback_listeners[0].port
        store = EventStore(tmp_path)
        urls = [
            f"http://127.0.0.1:{port}/hook",
            f"http://[::ffff:127.0.0.1]:{port}/hook",
            f"http://localhost:{port}/",
        ]
        ids = [store.add(f"c{n}", "sms.sent", {"guid": "g", "to": SENDER}) for n in range(len(urls))]
        by_client = {f"c{n}": Target(url, "v2", SECRET) for n, url in enumerate(urls)}
        deliverer = Deliverer(
            store, timeout=2.0, retry_window=3600, allow_private=False, targets=by_client.get
        )
        deliverer.deliver_due()
        store.close()
        assert proxy.seen == []
        assert loopback_listeners[0].connections == 0
        events = events_in(tmp_path)
        assert all("private" in events[i]["last_error"] for i in ids), [events[i]["last_error"] for i in ids]
    finally:
        proxy.stop()


# --- pass-through: masking the operator's key ------------------------------------------------------------


def _managed(make_app: Callable[..., Flask], tmp_path: Path):
    return managed_vendor_app(make_app, tmp_path).test_client()


def _shown(answer) -> bytes:
    return answer.get_data() + str(answer.headers).encode("utf-8", "replace")


def test_probe_raw_deflate_body_is_not_handed_on_with_the_key(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    """Content-Encoding: deflate as IIS and some PHP stacks write it: raw DEFLATE, no zlib header."""
    body = json.dumps({"apikey": OPERATOR_KEY}).encode()
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw_deflate = packer.compress(body) + packer.flush()
    fake_vendor.next_reply = Reply(200, raw_deflate, headers={"Content-Encoding": "deflate"})
    answer = _managed(make_app, tmp_path).get("/notification/list/", query_string={"apikey": CLIENT_KEY})
    got = answer.get_data()
    recovered = b""
    with contextlib.suppress(zlib.error):
        recovered = zlib.decompress(got, -zlib.MAX_WBITS)
    assert json.dumps(OPERATOR_KEY)[1:-1].encode() not in recovered, (answer.status_code, got, recovered)


def test_probe_gzip_with_a_bad_crc_is_not_handed_on_with_the_key(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    body = json.dumps({"apikey": OPERATOR_KEY}).encode()
    packed = bytearray(gzip.compress(body))
    packed[-8] ^= 0xFF  # CRC32 wrong: the body is whole, its check is not
    fake_vendor.next_reply = Reply(200, bytes(packed), headers={"Content-Encoding": "gzip"})
    answer = _managed(make_app, tmp_path).get("/notification/list/", query_string={"apikey": CLIENT_KEY})
    got = answer.get_data()
    # The caller inflates what it got without checking the CRC (gzip's 10-byte header, then raw DEFLATE).
    recovered = zlib.decompressobj(-zlib.MAX_WBITS).decompress(got[10:]) if got[:2] == b"\x1f\x8b" else got
    assert json.dumps(OPERATOR_KEY)[1:-1].encode() not in recovered, (answer.status_code, got, recovered)


@pytest.mark.parametrize(
    ("name", "form"),
    [
        # PHP json_encode($x, JSON_UNESCAPED_UNICODE): slashes escaped, non-ASCII raw
        ("php-unescaped-unicode", json.dumps(OPERATOR_KEY, ensure_ascii=False)[1:-1].replace("/", "\\/")),
        # upper-case \u escapes (Java, .NET, Go write \u00E9 or \u00e9)
        ("json-upper-u", json.dumps(OPERATOR_KEY)[1:-1].replace("\\u00e9", "\\u00E9")),
        # .NET / Go escape & and " as \u0026 / \u0022
        (
            "json-hex-amp-quot",
            json.dumps(OPERATOR_KEY)[1:-1].replace("&", "\\u0026").replace('\\"', "\\u0022"),
        ),
        # HTML numeric entity for the quote (Go's html.EscapeString writes &#34;)
        ("html-numeric", OPERATOR_KEY.replace("&", "&amp;").replace('"', "&#34;")),
        ("base64", base64.b64encode(OPERATOR_KEY.encode()).decode()),
        ("base64url", base64.urlsafe_b64encode(OPERATOR_KEY.encode()).decode()),
        ("latin1-bytes-in-body", None),
    ],
)
def test_probe_key_forms_in_the_body_are_masked(
    name: str, form: str | None, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    if form is None:
        body = b"key: " + OPERATOR_KEY.encode("latin-1")
        needle = OPERATOR_KEY.encode("latin-1")
    else:
        body = f'{{"echo": "{form}"}}'.encode()
        needle = form.encode()
    fake_vendor.next_reply = Reply(200, body, "text/plain; charset=utf-8")
    answer = _managed(make_app, tmp_path).get("/notification/list/", query_string={"apikey": CLIENT_KEY})
    assert answer.status_code == 200
    assert needle not in _shown(answer), (name, answer.get_data())


def test_probe_utf16_body_is_masked(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    body = ("key: " + OPERATOR_KEY).encode("utf-16-le")
    fake_vendor.next_reply = Reply(200, body, "text/plain; charset=utf-16le")
    answer = _managed(make_app, tmp_path).get("/notification/list/", query_string={"apikey": CLIENT_KEY})
    assert OPERATOR_KEY.encode("utf-16-le") not in answer.get_data()


@pytest.mark.parametrize(
    "header",
    ["WWW-Authenticate", "Link", "Content-Location", "Refresh", "X-Debug-Request", "Content-Disposition"],
)
def test_probe_key_in_other_headers_is_masked(
    header: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    from urllib.parse import quote

    value = f"x apikey={quote(OPERATOR_KEY, safe='')} raw={OPERATOR_KEY.encode().decode('latin-1')}"
    fake_vendor.next_reply = Reply(
        200, b"{}", headers={header: value, "Set-Cookie": f"k={quote(OPERATOR_KEY)}"}
    )
    answer = _managed(make_app, tmp_path).get("/notification/list/", query_string={"apikey": CLIENT_KEY})
    shown = str(answer.headers)
    assert quote(OPERATOR_KEY, safe="") not in shown and OPERATOR_KEY not in shown
    assert "Set-Cookie" not in answer.headers


def test_probe_head_on_a_documented_path_masks_headers(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    fake_vendor.next_reply = Reply(200, b"", headers={"X-Echo": OPERATOR_KEY.encode().decode("latin-1")})
    answer = _managed(make_app, tmp_path).head("/getsms/", query_string={"apikey": CLIENT_KEY})
    assert OPERATOR_KEY not in str(answer.headers)
    assert [r.method for r in fake_vendor.received] in ([], ["HEAD"])


def test_probe_options_is_not_forwarded(
    make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    answer = _managed(make_app, tmp_path).options("/getsms/", query_string={"apikey": CLIENT_KEY})
    assert answer.status_code < 500
    assert fake_vendor.received == []


# --- pass-through: paths a managed client may reach ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/SendSms/",
        "/SENDSMS",
        "/GetSms/",
        "/sendsms;x/",
        "/getsms/;/",
        "/getsms/..;/admin",
        "/oauth2/token",
        "/oauth2/token/",
        "/getsms/%2e",
        "/notification/send/..",
        "/getsms\\..\\admin",
        "/\uff47\uff45\uff54\uff53\uff4d\uff53/",
    ],
)
def test_probe_managed_client_reaches_no_other_path(
    path: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    client = _managed(make_app, tmp_path)
    for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
        answer = client.open(path, method=method, query_string={"apikey": CLIENT_KEY})
        assert answer.status_code in (400, 403, 404, 405), (method, path, answer.status_code)
    assert fake_vendor.received == []


# --- pass-through paths through gunicorn ------------------------------------------------------------------


def raw(url: str, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "target",
    [
        "/x/..;/..;/admin",
        "/x/%2e%2e;/admin",
        "/x/.%2e;x/admin",
        "/x/%c0%ae%c0%ae/admin",
        "/x/%e0%80%ae%e0%80%ae/admin",
        "/x/%ef%bc%8e%ef%bc%8e/admin",
        "/x/%u002e%u002e/admin",
        "//evil.example/x",
        "///evil.example/x",
        "/x//../admin",
        "/x/%2e%2e%2f/admin",
        "/x/.../admin",
        "/x/..%20/admin",
        "/x/..%09/admin",
        "/x/%2e%2E/admin",
    ],
)
def test_probe_unmanaged_paths_through_gunicorn(
    target: str,
    vendor_bridge: Gunicorn,
    fake_vendor: FakeSmsMobileApi,
) -> None:
    fake_vendor.next_reply = Reply(200, b'{"ok": 1}')
    status, headers, body = raw(vendor_bridge.url, "GET", target + "?apikey=vendor-key-1")
    seen = [r.path for r in fake_vendor.received]
    print(target, "->", status, headers.get("Location"), body[:200], seen)
    assert status < 500, body
    assert body.startswith(b"{"), body
    for path in seen:
        assert path.startswith("/base/"), seen
        segments = path.split("/")
        assert not any(s.split(";")[0] in ("..", ".", "%2e%2e", "%2E%2E") for s in segments), seen


def test_probe_a_path_that_is_not_utf8_is_refused_not_rewritten(
    vendor_bridge: Gunicorn,
    fake_vendor: FakeSmsMobileApi,
) -> None:
    """The query's non-UTF-8 values are refused by name; the path's are turned into U+FFFD and sent."""
    fake_vendor.next_reply = Reply(200, b'{"ok": 1}')
    status, _, body = raw(vendor_bridge.url, "GET", "/x/%c0%ae%c0%ae/admin?apikey=vendor-key-1")
    assert [r.path for r in fake_vendor.received] == [], (status, body)
    assert status == 400, body


@pytest.mark.parametrize("location", ["", "#frag", "?", "?page=2", ".", "./", "//"])
def test_probe_a_relative_location_never_carries_the_operators_key(
    location: str, make_app: Callable[..., Flask], fake_vendor: FakeSmsMobileApi, tmp_path: Path
) -> None:
    """urljoin against the URL the bridge called (which holds the operator's key) keeps its query."""
    from urllib.parse import quote, quote_plus

    fake_vendor.next_reply = Reply(302, b"", headers={"Location": location})
    answer = _managed(make_app, tmp_path).get("/getsms/", query_string={"apikey": CLIENT_KEY})
    shown = str(answer.headers)
    for form in (OPERATOR_KEY, quote_plus(OPERATOR_KEY), quote(OPERATOR_KEY, safe="")):
        assert form not in shown, (location, answer.headers.get("Location"))
    print(repr(location), "->", answer.headers.get("Location"))
