"""The upstream client (app/upstream.py): kept-alive connections, TLS verified, answers as they came.

Each test runs a fake mobsms of its own on 127.0.0.1 that keeps every connection it accepted
(`Counted`), so that what the pool does is seen from the upstream's side: how many connections were
made, and which are still open. Sends go end to end, through the REST front with the mobsms backend,
except where the test is about `UpstreamHttp` itself. TLS uses a self-signed certificate for the IP
address 127.0.0.1, made with the openssl command.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import upstream
from app.config import Settings
from app.errors import BackendConnectionLost
from app.upstream import UpstreamHttp
from tests.conftest import GOOD_KEY
from tests.fakes.mobsms import FakeMobsms
from tests.fakes.server import Received, Reply

TO = "+32470000001"

#: openssl's request configuration: a certificate for the IP address 127.0.0.1, not for a host name
CERTIFICATE_CONFIG = """\
[req]
distinguished_name = subject
x509_extensions = extensions
prompt = no
[subject]
CN = smsbridge test upstream
[extensions]
subjectAltName = IP:127.0.0.1
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth
"""


class Counted(FakeMobsms):
    """The fake mobsms, keeping each connection it accepted; over TLS with `tls`; answering `reply` if set."""

    def __init__(self, tls: ssl.SSLContext | None = None, reply: Reply | None = None) -> None:
        super().__init__()
        self.reply = reply
        #: every connection accepted, in order, TLS ones once their handshake succeeded
        self.accepted: list[socket.socket] = []
        #: connections whose TLS handshake failed
        self.failed_handshakes = 0
        accept = self.server.get_request
        report = self.server.handle_error

        def get_request() -> tuple[socket.socket, object]:
            connection, address = accept()
            # The fake writes the headers and the body of an answer apart: without this, Nagle's
            # algorithm and the client's delayed ACK hold the body back 40 ms on a kept-alive connection.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                connection.settimeout(2)
                try:
                    connection = tls.wrap_socket(connection, server_side=True)
                except OSError:
                    connection.close()
                    with self._lock:
                        self.failed_handshakes += 1
                    raise  # the server drops the connection quietly
                connection.settimeout(None)
            with self._lock:
                self.accepted.append(connection)
            return connection, address

        def handle_error(request: object, address: object) -> None:
            # A connection closed under a handler (by `drop`, or by the client) is expected here.
            if not isinstance(sys.exc_info()[1], OSError):
                report(request, address)

        # Before any client connects: the serving thread looks these up on each connection.
        self.server.get_request = get_request
        self.server.handle_error = handle_error
        if tls is not None:
            self.url = self.url.replace("http://", "https://")

    def handle(self, received: Received) -> Reply:
        return self.reply if self.reply is not None else super().handle(received)

    def open_connections(self) -> list[socket.socket]:
        """The accepted connections the fake has not closed yet (it closes one when the client does)."""
        with self._lock:
            return [connection for connection in self.accepted if connection.fileno() != -1]

    @staticmethod
    def drop(connection: socket.socket) -> None:
        """Close `connection` from the upstream's side, without a word to the client (a FIN, no answer)."""
        with contextlib.suppress(OSError):  # closed already
            connection.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        with self._lock:
            accepted = list(self.accepted)
        for connection in accepted:
            self.drop(connection)
        # The server looks for a stop request twice a second, or when a connection comes: knock until it
        # has stopped, rather than wait half a second for each fake.
        stopping = threading.Thread(target=super().stop)
        stopping.start()
        while stopping.is_alive():
            with contextlib.suppress(OSError):  # closed already
                socket.create_connection(self.server.server_address, timeout=1).close()
            stopping.join(0.01)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    config, cert, key = folder / "request.cnf", folder / "cert.pem", folder / "key.pem"
    config.write_text(CERTIFICATE_CONFIG)
    subprocess.run(
        ["openssl", "req", "-x509", "-config", str(config), "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side TLS context with the certificate for 127.0.0.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def counted() -> Iterator[Callable[..., Counted]]:
    """Start `Counted` fakes; each is stopped, and its connections closed, at the end of the test."""
    fakes: list[Counted] = []

    def start(**options: object) -> Counted:
        fake = Counted(**options)  # type: ignore[arg-type]
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.stop()


def send(client: FlaskClient) -> TestResponse:
    """Send "Hi" to TO through the REST front with the mobsms key."""
    return client.post("/sendsms/", data={"apikey": GOOD_KEY["mobsms"], "recipients": TO, "message": "Hi"})


def check_sent(response: TestResponse) -> None:
    """Check that the bridge says the SMS was sent."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"]["sent"] == "1", response.get_json()


def eventually(check: Callable[[], bool], seconds: float = 2.0) -> bool:
    """Return True as soon as `check()` is, False if it still is not after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# --- TLS --------------------------------------------------------------------------------------------------


def test_over_tls_with_the_ca_bundle_sends_go_through_on_one_connection(
    counted: Callable[..., Counted],
    tls_server: ssl.SSLContext,
    certificate: tuple[Path, Path],
    make_app: Callable[..., Flask],
) -> None:
    """SMSBRIDGE_UPSTREAM_CA_BUNDLE is trusted; the verified TLS connection is kept for the next sends."""
    fake = counted(tls=tls_server)
    assert fake.url.startswith("https://127.0.0.1:")
    client = make_app("mobsms", mobsms_url=fake.url, upstream_ca_bundle=str(certificate[0])).test_client()
    for _ in range(3):
        check_sent(send(client))
    assert [(r.method, r.path) for r in fake.received] == [("POST", "/api/sms")] * 3
    assert len(fake.accepted) == 1, f"{len(fake.accepted)} TLS connections for 3 sends, expected 1"
    assert isinstance(fake.accepted[0], ssl.SSLSocket)
    assert fake.failed_handshakes == 0


def test_over_tls_without_the_ca_bundle_the_handshake_fails_and_nothing_is_sent(
    counted: Callable[..., Counted], tls_server: ssl.SSLContext, make_app: Callable[..., Flask]
) -> None:
    """A certificate the system's CAs do not vouch for is refused: backend_tls_failure, nothing sent."""
    fake = counted(tls=tls_server)
    client = make_app("mobsms", mobsms_url=fake.url).test_client()
    response = send(client)
    assert response.status_code == 502, response.get_data(as_text=True)
    result = response.get_json()["result"]
    assert (result["error"], result["error_code"], result["sent"]) == (38, "backend_tls_failure", "0")
    assert result["note"].endswith("nothing was sent"), result["note"]
    assert eventually(lambda: fake.failed_handshakes == 1), "the fake saw no failed handshake"
    assert fake.accepted == []
    assert fake.received == []


# --- keep-alive -------------------------------------------------------------------------------------------


def test_sequential_sends_share_one_kept_alive_connection(
    counted: Callable[..., Counted], make_app: Callable[..., Flask]
) -> None:
    """Five sends in a row make one connection, left open for the next one."""
    fake = counted()
    client = make_app("mobsms", mobsms_url=fake.url).test_client()
    for _ in range(5):
        check_sent(send(client))
    assert len(fake.received) == 5
    assert len(fake.accepted) == 1, f"{len(fake.accepted)} connections for 5 sends, expected 1"
    assert fake.open_connections() == fake.accepted, "the bridge did not keep the connection alive"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_connection_the_upstream_closed_while_idle_is_not_used_again(
    scheme: str,
    counted: Callable[..., Counted],
    tls_server: ssl.SSLContext,
    certificate: tuple[Path, Path],
    make_app: Callable[..., Flask],
) -> None:
    """The upstream closed the idle connection: the next send goes on a new one, once, and goes through."""
    fake = counted(tls=tls_server if scheme == "https" else None)
    client = make_app("mobsms", mobsms_url=fake.url, upstream_ca_bundle=str(certificate[0])).test_client()
    check_sent(send(client))
    [first] = fake.accepted
    fake.drop(first)
    assert eventually(lambda: fake.open_connections() == []), "the fake did not close the connection"

    check_sent(send(client))
    assert len(fake.accepted) == 2, f"{len(fake.accepted)} connections: the closed one was not replaced"
    assert [(r.method, r.path) for r in fake.received] == [("POST", "/api/sms")] * 2, (
        "the second send was lost or sent twice"
    )


def test_a_connection_idle_longer_than_idle_seconds_is_closed_not_used(
    counted: Callable[..., Counted], make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within IDLE_SECONDS the connection is used again; after, the bridge closes it and opens another."""
    monkeypatch.setattr(upstream, "IDLE_SECONDS", 0.2)
    fake = counted()
    client = make_app("mobsms", mobsms_url=fake.url).test_client()
    check_sent(send(client))
    check_sent(send(client))
    assert len(fake.accepted) == 1, "a connection idle for less than IDLE_SECONDS was not used again"
    time.sleep(0.3)
    check_sent(send(client))
    assert len(fake.accepted) == 2, "a connection idle for longer than IDLE_SECONDS was used again"
    second = fake.accepted[1]
    assert eventually(lambda: fake.open_connections() == [second]), "the bridge left the idle one open"
    assert len(fake.received) == 3


def test_concurrent_sends_leave_at_most_pool_size_connections_open(
    counted: Callable[..., Counted], make_app: Callable[..., Flask]
) -> None:
    """Five sends at once need five connections; with a pool of 2, only two stay open, and are used again."""
    fake = counted()
    app = make_app("mobsms", mobsms_url=fake.url, upstream_pool_size=2)
    # Each answer takes 0.3 s, so that the five sends overlap and each needs a connection of its own.
    fake.misbehave("slow", seconds=0.3, always=True)
    start = threading.Barrier(5)

    def send_at_once() -> TestResponse:
        client = app.test_client()
        start.wait(timeout=5)
        return send(client)

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: send_at_once(), range(5)))
    fake.behave()
    for response in responses:
        check_sent(response)
    assert len(fake.received) == 5
    assert len(fake.accepted) == 5, f"{len(fake.accepted)} connections for 5 overlapping sends"
    assert eventually(lambda: len(fake.open_connections()) == 2), (
        f"{len(fake.open_connections())} connections left open, expected the pool's 2"
    )

    client = app.test_client()
    check_sent(send(client))
    check_sent(send(client))
    assert len(fake.accepted) == 5, "the pooled connections were not used again"
    assert len(fake.received) == 7


# --- what goes out and what comes back --------------------------------------------------------------------


def test_the_answer_comes_back_byte_for_byte_and_no_compression_is_asked_for(
    counted: Callable[..., Counted],
) -> None:
    """A gzip body with Content-Encoding: gzip is handed over as it came, not decompressed."""
    body = gzip.compress(b'{"success": true, "data": {"id": 101}}', mtime=0)
    fake = counted(reply=Reply(200, body, headers={"Content-Encoding": "gzip", "X-Upstream-Note": "as is"}))
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms")
    answer = http.request("GET", fake.url + "/api/sms", params={"status": "sent", "note": "a b&c"})

    assert answer.status_code == 200
    assert answer.content == body, "the answer's body was changed on the way"
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["X-Upstream-Note"] == "as is"
    [got] = fake.received
    assert (got.method, got.path, got.query) == ("GET", "/api/sms", [("status", "sent"), ("note", "a b&c")])
    assert got.headers["user-agent"] == "smsbridge"
    assert "accept-encoding" not in got.headers, got.headers["accept-encoding"]


def test_a_send_says_who_it_is_and_asks_for_no_compression(
    counted: Callable[..., Counted], make_app: Callable[..., Flask]
) -> None:
    """End to end: the send to mobsms carries User-Agent smsbridge and accepts no compressed answer."""
    fake = counted()
    check_sent(send(make_app("mobsms", mobsms_url=fake.url).test_client()))
    [got] = fake.received
    assert got.headers["user-agent"] == "smsbridge"
    assert "accept-encoding" not in got.headers, got.headers["accept-encoding"]


# --- answers in every shape HTTP/1.1 allows, from a server that writes them byte by byte -----------------


class Canned:
    """A server on 127.0.0.1 that reads one request per connection and writes `answer` as it is."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                with connection:
                    self.requests.append(connection.recv(65536))
                    connection.sendall(self.answer)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in the thread
        self.listener.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()


@pytest.fixture
def canned() -> Iterator[Callable[[bytes], Canned]]:
    servers: list[Canned] = []

    def start(answer: bytes) -> Canned:
        servers.append(Canned(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def call(url: str) -> upstream.Answer:
    return UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms").request("GET", url + "/x")


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello"),
        (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            201,
            b"abcde",
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the connection closes", 200, b"until the connection closes"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok", 202, b"ok"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 204, b""),
    ],
    ids=["content-length", "chunked", "read-to-close", "100-continue-first", "no-content"],
)
def test_answers_are_read_in_every_framing(
    canned: Callable[[bytes], Canned], answer: bytes, status: int, body: bytes
) -> None:
    got = call(canned(answer).url)
    assert (got.status_code, got.content) == (status, body)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64,
    ],
    ids=["body-cut-short", "chunk-cut-short", "bad-length", "not-http", "closed-at-once", "too-large"],
)
def test_a_broken_answer_is_a_lost_connection_that_may_have_sent(
    canned: Callable[[bytes], Canned], answer: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever breaks after the request was written says the message may have been sent."""
    monkeypatch.setattr(upstream, "MAX_ANSWER_BYTES", 32)
    server = canned(answer)
    with pytest.raises(BackendConnectionLost, match="may have been sent"):
        call(server.url)
    assert len(server.requests) == 1, "the request was not written exactly once"


def test_a_control_character_never_reaches_the_request_head(canned: Callable[[bytes], Canned]) -> None:
    """A line break in a path never starts a header line; a header value with one is refused."""
    server = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "smsmobileapi")
    http.request("GET", server.url + "/a b\r\nX-Injected: 1")
    [request] = server.requests
    # urlsplit drops line breaks from a URL (as WHATWG says); the space is %-encoded.
    assert request.startswith(b"GET /a%20bX-Injected:%201 HTTP/1.1\r\n"), request[:80]
    assert b"\r\nX-Injected" not in request
    with pytest.raises(ValueError, match="control character"):
        http.request("GET", server.url + "/", headers={"X-Note": "a\r\nX-Injected: 1"})
    assert len(server.requests) == 1
