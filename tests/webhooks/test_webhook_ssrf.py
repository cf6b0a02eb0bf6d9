"""Webhook targets cannot be turned against the bridge's own network (server-side request forgery).

A target is parsed once, by the HTTP client's own parser, and refused when another reader could take it
for another place; the name is resolved once, every address checked, and the connection goes to the
address checked. Listeners on loopback addresses stand for the services an attacker would reach: they
must get no connection at all, not merely no request.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import app.webhooks.delivery
from app.access.resolution import hash_key, parse_clients_file
from app.config import ConfigError, Settings
from app.errors import BackendTlsFailure
from app.state.sqlite.outbox import SqliteOutbox as EventStore
from app.upstream import UpstreamHttp
from app.webhooks.delivery import Deliverer, Target, UnsafeTarget, _refuse_private
from tests.harness.bridge import LiveBridge
from tests.harness.fakes.listener import Listener
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.webhooks import (
    RECEIVED_AT,
    SECRET,
    SENDER,
    V2Receiver,
    data_dir_of,
    events_in,
    mobsms_post,
    urls_of,
    wait_for,
)

#: a port nothing listens on: the forms below are refused before any port matters
PORT = 9


def differential_forms(port: int) -> list[str]:
    """URLs that one parser reads as a public host and another as loopback, or that are odd otherwise."""
    return [
        f"http://127.0.0.1:{port}\\@8.8.8.8/hook",  # urllib3: 127.0.0.1, path /%5C@8.8.8.8/hook
        f"http://[::1]:{port}\\@8.8.8.8/hook",
        f"http://8.8.8.8\\@127.0.0.1:{port}/hook",
        f"http://127.0.0.1:{port}\\.8.8.8.8/hook",
        f"http://user:pass@127.0.0.1:{port}/hook",
        f"http://8.8.8.8@127.0.0.1:{port}/hook",
        f"http://127.0.0.1:{port}#@8.8.8.8/hook",
        f"http://127.0.0.1:{port}/ho ok",
        f"http://127.0.0.1:{port}/hook\r\nX: y",
        f"http://127.0.0.1:{port}\t/hook",
        f"http://\u00e9xample.com:{port}/hook",
        f"http://[::1%25lo]:{port}/hook",
        f"http://127.1:{port}/hook",
        f"http://2130706433:{port}/hook",
        f"http://0x7f.0.0.1:{port}/hook",
        f"http://0177.0.0.1:{port}/hook",
        f"http://example.com.:{port}/hook",
        f"http://ex%61mple.com:{port}/hook",
        f"http://:{port}/hook",
        "http:///hook",
        f"http://127.0.0.1:{port}:80/hook",
        "http://127.0.0.1:0/hook",
        f"ftp://127.0.0.1:{port}/hook",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{port}/_GET",
        f"//127.0.0.1:{port}/hook",
    ]


@pytest.mark.parametrize("url", differential_forms(PORT))
def test_a_target_another_reader_could_take_elsewhere_is_refused_at_configuration(
    url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="SMSBRIDGE_WEBHOOK_URL"):
        Settings.from_env(
            environ={}, overrides={"webhook_url": url, "webhook_secret": SECRET, "data_dir": tmp_path}
        )
    clients = f"""
[clients.acme]
key_sha256 = ["{hash_key("acme-key")}"]
backend = "sandbox"
webhook_url = {json.dumps(url)}
webhook_secret = "{SECRET}"
"""
    with pytest.raises(ConfigError, match=r"\[clients.acme\]: the webhook URL"):
        parse_clients_file(clients.encode(), tmp_path / "clients.toml")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/sms?tenant=7&x=%2F",
        "http://receiver.internal-host.example:8080/webhook.php",
        "http://93.184.216.34/hook",
        "https://[2001:db8::1]:8443/hook",
        "HTTPS://Hooks.Example.COM/Path",
        "https://xn--mnchen-3ya.de/hook",
    ],
)
def test_plain_targets_are_accepted_as_the_client_reads_them(url: str, tmp_path: Path) -> None:
    settings = Settings.from_env(
        environ={}, overrides={"webhook_url": url, "webhook_secret": SECRET, "data_dir": tmp_path}
    )
    assert settings.webhook_url == url
    endpoint = app.webhooks.delivery.parse_target(url)
    assert endpoint.scheme in ("http", "https")
    assert endpoint.host == endpoint.host.lower()


def test_a_differential_target_is_refused_at_delivery_and_no_listener_gets_a_connection(
    loopback_listeners: list[Listener], tmp_path: Path
) -> None:
    """A target that got past configuration (an older bridge's file, say) is refused again at delivery."""
    port = loopback_listeners[0].port
    forms = differential_forms(port)
    store = EventStore(tmp_path)
    ids = {
        store.add(f"client-{n}", "sms.sent", {"guid": f"g{n}", "to": SENDER}): url
        for n, url in enumerate(forms)
    }
    by_client = {f"client-{n}": Target(url, "v2", SECRET) for n, url in enumerate(forms)}
    deliverer = Deliverer(store, timeout=2.0, retry_window=3600, allow_private=False, targets=by_client.get)

    assert deliverer.deliver_due() == 0  # no attempt made: each refused before one could start

    assert [listener.connections for listener in loopback_listeners] == [0] * len(loopback_listeners)
    events = events_in(tmp_path)
    for event_id in ids:
        assert events[event_id]["status"] == "dead", events[event_id]
        assert events[event_id]["last_error"].startswith("refused: the webhook URL"), events[event_id]
    store.close()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata services
        "100.64.0.1",  # carrier-grade NAT: not private, not public either
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "64:ff9b::7f00:1",
    ],
)
def test_an_address_that_is_not_global_unicast_is_refused(address: str) -> None:
    with pytest.raises(UnsafeTarget, match="SMSBRIDGE_WEBHOOK_ALLOW_PRIVATE"):
        _refuse_private(address, "receiver.example")


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_a_global_address_passes(address: str) -> None:
    _refuse_private(address, "receiver.example")


# --- DNS rebinding ---------------------------------------------------------------------------------------

REBINDING = "receiver.rebind.test"
MIXED = "mixed.rebind.test"
#: the address the test treats as public: loopback too (tests reach 127.0.0.0/8 only), allowed by the check
PUBLIC = "127.0.0.2"


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A resolver whose REBINDING answers PUBLIC and 127.0.0.1 in turn, MIXED both at once.

    The address check lets PUBLIC through as if it were public; every other address is checked as
    the bridge checks it. Returns the names looked up, in order.
    """
    real_getaddrinfo = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list:
        if host not in (REBINDING, MIXED):
            return real_getaddrinfo(host, port, *args, **kwargs)
        asked.append(host)
        number = int(port or 0)
        answer = [PUBLIC] if host == REBINDING and len(asked) % 2 else ["127.0.0.1"]
        if host == MIXED:
            answer = [PUBLIC, "127.0.0.1"]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, number)) for a in answer]

    real_check = app.webhooks.delivery._refuse_private

    def check(address: str, host: str | None = None) -> None:
        if address != PUBLIC:
            real_check(address, host)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(app.webhooks.delivery, "_refuse_private", check)
    return asked


def test_a_name_answering_public_then_loopback_never_reaches_the_loopback_listener(
    serve: Callable[..., LiveBridge],
    receivers: Callable[..., Any],
    fake_mobsms: FakeMobsms,
    rebinding_dns: list[str],
    fast_retries: None,
) -> None:
    public: V2Receiver = receivers(V2Receiver, SECRET)
    port = int(public.url.rsplit(":", 1)[1])
    public.close_port()
    public.reopen_port(PUBLIC)
    loopback = Listener("127.0.0.1", port)
    try:
        bridge = serve(
            webhook_url=f"http://{REBINDING}:{port}/hook",
            webhook_secret=SECRET,
            webhook_allow_private=False,
        )
        ids = []
        for n in range(6):
            inbound = fake_mobsms.add_inbound(SENDER, f"rebinding {n}", RECEIVED_AT)
            answer = mobsms_post(urls_of(bridge)["mobsms"], "incoming", inbound)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["id"])

        wait_for(
            lambda: len(public.envelopes()) == 6 or loopback.connections,
            "the six events at the checked address",
            timeout=15,
        )

        assert loopback.connections == 0, f"the loopback listener got {loopback.received}"
        assert sorted(e["id"] for e in public.envelopes()) == sorted(ids)
        # Connected to the address, the name kept for the receiver.
        assert {r.headers["host"] for _, r, _ in public.log} == {f"{REBINDING}:{port}"}
        assert len(rebinding_dns) >= 6
    finally:
        loopback.close()


def test_a_name_with_any_private_address_is_refused_without_connecting(
    serve: Callable[..., LiveBridge],
    receivers: Callable[..., Any],
    fake_mobsms: FakeMobsms,
    rebinding_dns: list[str],
) -> None:
    public: V2Receiver = receivers(V2Receiver, SECRET)
    port = int(public.url.rsplit(":", 1)[1])
    public.close_port()
    public.reopen_port(PUBLIC)
    loopback = Listener("127.0.0.1", port)
    try:
        bridge = serve(
            webhook_url=f"http://{MIXED}:{port}/hook", webhook_secret=SECRET, webhook_allow_private=False
        )
        inbound = fake_mobsms.add_inbound(SENDER, "mixed", RECEIVED_AT)
        event_id = mobsms_post(urls_of(bridge)["mobsms"], "incoming", inbound).json()["id"]

        row = wait_for(
            lambda: (r := events_in(data_dir_of(bridge))[event_id])["last_error"] and r, "a refused attempt"
        )
        assert row["status"] == "pending"
        assert "private" in row["last_error"]
        assert loopback.connections == 0
        assert public.connections == 0
    finally:
        loopback.close()


# --- TLS to a pinned address -----------------------------------------------------------------------------


class TlsReceiver:
    """An HTTPS server on 127.0.0.1 with a certificate for `name` only; records SNI and Host of each call."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(self.cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        self.seen: list[tuple[str | None, str | None]] = []
        self._sni: list[str | None] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        context.sni_callback = lambda sock, server_name, ctx: self._sni.append(server_name)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.seen.append((receiver._sni[-1] if receiver._sni else None, self.headers["Host"]))
                self.send_response(204)
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_pinned_address_keeps_the_name_for_host_sni_and_the_certificate(tmp_path: Path) -> None:
    """The address checked is connected to; the name still is what TLS and the receiver see."""
    receiver = TlsReceiver(tmp_path, "receiver.test")
    try:
        settings = Settings(upstream_ca_bundle=str(receiver.cert), connect_timeout=2.0, read_timeout=5.0)
        http = UpstreamHttp(settings, "webhook")
        url = f"https://receiver.test:{receiver.port}/hook"

        # receiver.test resolves nowhere: only the pinned address can have been connected to.
        answer = http.request("POST", url, data=b"{}", connect_to="127.0.0.1")

        assert answer.status_code == 204
        assert receiver.seen == [("receiver.test", f"receiver.test:{receiver.port}")]
        # Another name on the same address: the certificate does not match it, nothing is sent.
        with pytest.raises(BackendTlsFailure):
            http.request(
                "POST", f"https://other.test:{receiver.port}/hook", data=b"{}", connect_to="127.0.0.1"
            )
        assert len(receiver.seen) == 1
    finally:
        receiver.close()
