"""The upstream client (app/upstream.py): kept-alive connections, TLS verified, answers as they came.

Each test runs a fake mobsms of its own on 127.0.0.1 that keeps every connection it accepted
(`Counted`), so that what the pool does is seen from the upstream's side: how many connections were
made, and which are still open. Sends go end to end, through the REST front with the mobsms backend,
except where the test is about `UpstreamHttp` itself. TLS uses a self-signed certificate for the IP
address 127.0.0.1, made with the openssl command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import os
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
from app.config import ConfigError, Settings
from app.errors import BackendConnectionLost, BackendTimeout, BackendUnreachable
from app.state.sqlite.outbox import SqliteOutbox as EventStore
from app.upstream import UpstreamHttp
from app.webhooks.delivery import Deliverer, Target, UnsafeTarget, _refuse_private
from tests.harness.bridge import GOOD_KEY
from tests.harness.fakes.forward_proxy import ForwardProxy
from tests.harness.fakes.mobsms import FakeMobsms
from tests.harness.fakes.raw_http import AnswerFn, RawUpstream, answer_with, trickle
from tests.harness.fakes.server import Received, Reply

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
    counted: Callable[..., Counted], make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """Five sends at once need five connections; with a pool of 2, only two stay open, and are used again."""
    caplog.set_level(logging.WARNING)
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
    assert "pool is full" not in caplog.text, "a warning for each send over the pool's size"


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


# --- strict framing: nothing of one answer reaches the next caller, no lax length ----------------------


@pytest.fixture
def raw() -> Iterator[Callable[..., RawUpstream]]:
    """Start `RawUpstream`s; each is stopped (and its trickles ended) at the end of the test."""
    servers: list[RawUpstream] = []

    def start(answer: AnswerFn, tls: ssl.SSLContext | None = None) -> RawUpstream:
        servers.append(RawUpstream(answer, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def numbered(extra: bytes, *, apart: bool) -> AnswerFn:
    """Answer request N with "answerN"; after the first answer, write `extra` (at once, or 50 ms later)."""

    def answer(connection: socket.socket, number: int, head: bytes) -> bool:
        body = f"answer{number}".encode()
        first = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        if number == 1 and not apart:
            connection.sendall(first + extra)
        else:
            connection.sendall(first)
            if number == 1:
                time.sleep(0.05)
                connection.sendall(extra)
        return True

    return answer


@pytest.mark.parametrize("apart", [False, True], ids=["in-one-write", "written-after"])
def test_bytes_past_content_length_never_reach_the_next_caller(
    raw: Callable[..., RawUpstream], apart: bool
) -> None:
    """An upstream writes a second, unasked answer after the first: the next call gets its own answer."""
    foreign = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nforeign"
    server = raw(numbered(foreign, apart=apart))
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms")
    assert http.request("GET", server.url + "/first").content == b"answer1"
    time.sleep(0.15)
    second = http.request("GET", server.url + "/second")
    assert second.content == b"answer2", (
        "the second caller got bytes the upstream wrote after the first answer"
    )
    assert len(server.heads) == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5 \r\nhello\r\n0x0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5_0\r\n\r\n" + b"x" * 50,
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nuntil the connection closes",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    ],
    ids=["chunk+5", "chunk0x5", "chunk1_0", "chunk-5", "last-chunk0x0", "length+5", "length5_0", "length-1",
         "two-lengths", "a-length-twice"],
)  # fmt: skip
def test_a_chunk_size_or_length_that_is_not_plain_digits_is_a_broken_answer(
    raw: Callable[..., RawUpstream], answer: bytes
) -> None:
    """Python's int() reads "+5", "0x5", "1_0", "-5"; HTTP says digits only: the answer is refused."""
    server = raw(answer_with(answer, keep=False))
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms")
    with pytest.raises(BackendConnectionLost, match="may have been sent"):
        http.request("GET", server.url + "/x")
    assert len(server.heads) == 1


def test_plain_lengths_and_chunk_extensions_are_read(
    raw: Callable[..., RawUpstream],
) -> None:
    """What HTTP does allow still reads: spaces around a length, upper-case hex, a chunk extension."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length:  5 \r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n",
    ]

    def answer(connection: socket.socket, number: int, head: bytes) -> bool:
        connection.sendall(answers[number - 1])
        return True

    server = raw(answer)
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms")
    assert http.request("GET", server.url + "/a").content == b"hello"
    assert http.request("GET", server.url + "/b").content == b"0123456789"


# --- an early answer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("close", ["close", "shutdown-then-close"])
def test_an_early_error_answer_is_returned_as_that_answer(
    raw: Callable[..., RawUpstream], close: str
) -> None:
    """The upstream answers 413 and closes while the body is still being written: the 413 comes back."""

    def refuse(connection: socket.socket, number: int, head: bytes) -> bool:
        connection.sendall(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b'Content-Length: 19\r\nConnection: close\r\n\r\n{"error":"too big"}'
        )
        if close == "shutdown-then-close":
            connection.shutdown(socket.SHUT_WR)
            time.sleep(0.2)
        return False

    server = raw(refuse)
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms")
    answer = http.request("POST", server.url + "/api/sms", data=b"x" * (16 * 1024 * 1024))
    assert (answer.status_code, answer.json()) == (413, {"error": "too big"})


# --- the total deadline --------------------------------------------------------------------------------

#: the deadline of these tests' calls: connect 0.5 s + read 1 s; trickles come every 0.25 s, well
#: inside the read timeout, so only a total deadline ends them
FAST = Settings(connect_timeout=0.5, read_timeout=1.0)
DEADLINE = 1.5


def trickling(prefix: bytes, drip: bytes, piece: int, stopping: threading.Event) -> AnswerFn:
    """Write `prefix` at once, then `drip` `piece` bytes every 0.25 s (for 30 s at most)."""

    def answer(connection: socket.socket, number: int, head: bytes) -> bool:
        connection.sendall(prefix)
        trickle(stopping, connection, drip, 0.25, piece)
        return False

    return answer


@pytest.fixture
def stopping() -> Iterator[threading.Event]:
    """Set at the end of the test: ends the trickles."""
    event = threading.Event()
    yield event
    event.set()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    ("scheme", "prefix", "drip", "piece"),
    [
        ("http", b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 120, 1),
        ("http", b"HTTP/1.1 200 OK\r\nContent-Length: 120\r\n\r\n", b"b" * 120, 1),
        ("https", b"HTTP/1.1 200 OK\r\nContent-Length: 120\r\n\r\n", b"b" * 120, 1),
        ("http", b"", CONTINUE * 120, len(CONTINUE)),
    ],
    ids=["trickling-header", "trickling-body", "trickling-body-tls", "endless-100-continue"],
)
@pytest.mark.parametrize("through", ["request", "requests-session"])
def test_an_upstream_that_trickles_is_cut_at_the_total_deadline(
    through: str,
    raw: Callable[..., RawUpstream],
    stopping: threading.Event,
    tls_server: ssl.SSLContext,
    certificate: tuple[Path, Path],
    scheme: str,
    prefix: bytes,
    drip: bytes,
    piece: int,
) -> None:
    """Whatever the upstream trickles, a call ends at connect + read timeout, as may have been sent."""
    server = raw(trickling(prefix, drip, piece, stopping), tls_server if scheme == "https" else None)
    settings = dataclasses.replace(FAST, upstream_ca_bundle=str(certificate[0]))
    http = UpstreamHttp(settings, "mobsms")
    started = time.monotonic()
    with pytest.raises(BackendTimeout, match="may have been sent"):
        if through == "request":
            http.request("POST", server.url + "/api/sms", json={"to": TO})
        else:  # requests' API on the same pools, as the webhook deliverer calls it
            http.session().post(server.url + "/api/sms", json={"to": TO}, allow_redirects=False)
    elapsed = time.monotonic() - started
    # Per socket operation, the read timeout (1 s) would never fire: each byte comes within 0.25 s.
    assert DEADLINE - 0.05 < elapsed < DEADLINE + 0.5, (
        f"cut after {elapsed:.2f} s, the deadline is {DEADLINE} s"
    )
    assert len(server.heads) == 1


def test_the_deadline_does_not_cut_a_call_that_ended_nor_the_next_on_its_connection(
    raw: Callable[..., RawUpstream],
) -> None:
    """A finished call's deadline passing later does nothing to the kept-alive connection it used."""
    server = raw(answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    http = UpstreamHttp(Settings(connect_timeout=0.2, read_timeout=0.3), "mobsms")
    for _ in range(3):
        assert http.request("GET", server.url + "/x").content == b"ok"
        time.sleep(0.6)  # past the call's deadline (0.5 s), within IDLE_SECONDS
    assert server.connections == 1, "a finished call's deadline shut its connection down"


def test_the_total_deadline_also_holds_in_a_gevent_patched_process(tmp_path: Path) -> None:
    """gunicorn's gevent worker: the watchdog is a greenlet, and a cut wakes the greenlet reading."""
    script = tmp_path / "gevent_deadline.py"
    script.write_text(GEVENT_SCRIPT)
    # PYTHONPATH: this tree's `app`, whatever the virtual environment has installed.
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=environment
    )
    assert done.returncode == 0, done.stdout + done.stderr
    elapsed, other = map(float, done.stdout.split())
    assert DEADLINE - 0.05 < elapsed < DEADLINE + 0.5, f"cut after {elapsed:.2f} s under gevent"
    assert other < 0.5, f"another greenlet's call waited {other:.2f} s: the hub was blocked"


ROOT = Path(__file__).resolve().parents[1]
GEVENT_SCRIPT = """\
from gevent import monkey

monkey.patch_all()

import socket, threading, time
import gevent
from app.config import Settings
from app.errors import BackendTimeout
from app.upstream import UpstreamHttp

listener = socket.create_server(("127.0.0.1", 0))
url = "http://127.0.0.1:%d" % listener.getsockname()[1]


def serve():
    while True:
        connection, _ = listener.accept()
        gevent.spawn(answer, connection)


def answer(connection):
    head = connection.recv(65536)
    if b"/fast" in head:
        connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        return
    connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\n")
    for _ in range(100):
        gevent.sleep(0.25)
        connection.sendall(b"b")


gevent.spawn(serve)
http = UpstreamHttp(Settings(connect_timeout=0.5, read_timeout=1.0), "mobsms")


def slow():
    started = time.monotonic()
    try:
        http.request("GET", url + "/slow")
    except BackendTimeout:
        return time.monotonic() - started
    raise SystemExit("no BackendTimeout")


def fast():
    gevent.sleep(0.2)
    started = time.monotonic()
    assert http.request("GET", url + "/fast").content == b"ok"
    return time.monotonic() - started


slow_call, fast_call = gevent.spawn(slow), gevent.spawn(fast)
gevent.joinall([slow_call, fast_call], raise_error=True)
print(slow_call.value, fast_call.value)
"""


# --- egress proxies ------------------------------------------------------------------------------------


@pytest.fixture
def proxies() -> Iterator[Callable[..., ForwardProxy]]:
    """Start forward proxies on 127.0.0.1, stopped at the end of the test."""
    started: list[ForwardProxy] = []

    def start(credentials: str | None = None) -> ForwardProxy:
        started.append(ForwardProxy(credentials))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Clear the proxy variables of the environment the tests run in."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_smsbridge_upstream_proxy_carries_plain_sends_with_its_credentials_never_logged(
    counted: Callable[..., Counted],
    proxies: Callable[..., ForwardProxy],
    no_proxy_env: pytest.MonkeyPatch,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """http through SMSBRIDGE_UPSTREAM_PROXY: absolute-form, Proxy-Authorization, no password in logs."""
    fake = counted()
    proxy = proxies("smsbridge:s3cr@t")
    # A dead proxy in the environment: the setting overrides it.
    no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    setting = f"http://smsbridge:s3cr%40t@127.0.0.1:{proxy.port}"
    caplog.set_level(logging.DEBUG)
    client = make_app("mobsms", mobsms_url=fake.url, upstream_proxy=setting).test_client()
    check_sent(send(client))
    check_sent(send(client))
    assert [(seen.method, seen.target) for seen in proxy.seen] == [("POST", fake.url + "/api/sms")] * 2
    assert {seen.proxy_authorization for seen in proxy.seen} == {proxy.expected}
    assert [(r.method, r.path) for r in fake.received] == [("POST", "/api/sms")] * 2
    assert all("proxy-authorization" not in r.headers for r in fake.received)
    assert "s3cr" not in caplog.text, "the proxy's password reached a log"


def test_smsbridge_upstream_proxy_tunnels_https_with_connect(
    counted: Callable[..., Counted],
    proxies: Callable[..., ForwardProxy],
    no_proxy_env: pytest.MonkeyPatch,
    tls_server: ssl.SSLContext,
    certificate: tuple[Path, Path],
    make_app: Callable[..., Flask],
) -> None:
    """An https upstream through the proxy: one CONNECT, then TLS to the upstream, verified, kept alive."""
    fake = counted(tls=tls_server)
    proxy = proxies()
    client = make_app(
        "mobsms", mobsms_url=fake.url, upstream_proxy=proxy.url, upstream_ca_bundle=str(certificate[0])
    ).test_client()
    check_sent(send(client))
    check_sent(send(client))
    authority = fake.url.removeprefix("https://")
    assert [(seen.method, seen.target) for seen in proxy.seen] == [("CONNECT", authority)]
    assert [(r.method, r.path) for r in fake.received] == [("POST", "/api/sms")] * 2
    assert len(fake.accepted) == 1 and isinstance(fake.accepted[0], ssl.SSLSocket)


@pytest.mark.parametrize("case", ["upper", "lower"])
def test_https_proxy_and_http_proxy_from_the_environment_are_honoured(
    counted: Callable[..., Counted],
    proxies: Callable[..., ForwardProxy],
    no_proxy_env: pytest.MonkeyPatch,
    tls_server: ssl.SSLContext,
    certificate: tuple[Path, Path],
    case: str,
) -> None:
    """HTTP_PROXY for http upstreams, HTTPS_PROXY (CONNECT) for https ones, in either case of name."""
    plain, tls = counted(), counted(tls=tls_server)
    plain_proxy, tls_proxy = proxies(), proxies()
    name = str.upper if case == "upper" else str.lower
    no_proxy_env.setenv(name("HTTP_PROXY"), plain_proxy.url)
    no_proxy_env.setenv(name("HTTPS_PROXY"), tls_proxy.url.removeprefix("http://"))  # no scheme: http
    http = UpstreamHttp(
        Settings(connect_timeout=2.0, read_timeout=5.0, upstream_ca_bundle=str(certificate[0])), "mobsms"
    )
    assert http.request("GET", plain.url + "/api/sms").status_code in (200, 401)
    assert http.request("GET", tls.url + "/api/sms").status_code in (200, 401)
    assert [(s.method, s.target) for s in plain_proxy.seen] == [("GET", plain.url + "/api/sms")]
    assert [(s.method, s.target) for s in tls_proxy.seen] == [("CONNECT", tls.url.removeprefix("https://"))]
    assert len(plain.received) == len(tls.received) == 1


def test_no_proxy_sends_the_named_hosts_direct(
    counted: Callable[..., Counted], proxies: Callable[..., ForwardProxy], no_proxy_env: pytest.MonkeyPatch
) -> None:
    """NO_PROXY naming the upstream's host: the call goes direct, the proxy sees nothing."""
    fake, proxy = counted(), proxies()
    no_proxy_env.setenv("HTTP_PROXY", proxy.url)
    no_proxy_env.setenv("NO_PROXY", "example.org,127.0.0.1")
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms")
    http.request("GET", fake.url + "/api/sms")
    assert proxy.seen == []
    assert len(fake.received) == 1


def test_a_proxy_refusing_the_tunnel_means_nothing_was_sent(
    counted: Callable[..., Counted],
    proxies: Callable[..., ForwardProxy],
    no_proxy_env: pytest.MonkeyPatch,
    tls_server: ssl.SSLContext,
    certificate: tuple[Path, Path],
) -> None:
    """A 407 to CONNECT (wrong credentials): BackendUnreachable, nothing reached the upstream."""
    fake, proxy = counted(tls=tls_server), proxies("smsbridge:right")
    settings = Settings(
        connect_timeout=2.0,
        read_timeout=5.0,
        upstream_ca_bundle=str(certificate[0]),
        upstream_proxy=f"http://smsbridge:wrong@127.0.0.1:{proxy.port}",
    )
    with pytest.raises(BackendUnreachable, match="nothing was sent"):
        UpstreamHttp(settings, "mobsms").request("POST", fake.url + "/api/sms", json={"to": TO})
    assert [s.method for s in proxy.seen] == ["CONNECT"]
    assert fake.received == []


@pytest.mark.parametrize(
    "value", ["egress.internal:3128", "socks5://egress.internal:1080", "ftp://egress", "http://h:port"]
)
def test_smsbridge_upstream_proxy_must_be_an_http_url_with_a_host(value: str) -> None:
    """A proxy the bridge cannot use stops start-up, naming the variable but never echoing the value."""
    with pytest.raises(ConfigError, match="SMSBRIDGE_UPSTREAM_PROXY") as refused:
        Settings(upstream_proxy=value).validate()
    assert value not in str(refused.value)


# --- redirects --------------------------------------------------------------------------------------------


def test_a_redirect_is_returned_as_it_came_not_followed(raw: Callable[..., RawUpstream]) -> None:
    """A 302 comes back with its Location: the bridge never sends the SMS somewhere else on its own."""
    server = raw(
        answer_with(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\n\r\n"
        )
    )
    answer = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "mobsms").request(
        "POST", server.url + "/api/sms", json={"to": TO}
    )
    assert (answer.status_code, answer.headers["location"]) == (302, "http://127.0.0.1:9/elsewhere")
    assert len(server.heads) == 1


# --- the address connected to ------------------------------------------------------------------------


def test_the_peer_check_sees_the_address_connected_to_and_can_refuse_it_before_a_byte_is_written(
    raw: Callable[..., RawUpstream],
) -> None:
    """The webhook deliverer's check of private addresses runs on the connection made, not on a lookup."""
    server = raw(answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    seen: list[str] = []
    http = UpstreamHttp(Settings(connect_timeout=2.0, read_timeout=5.0), "webhook", peer_check=seen.append)
    assert http.request("POST", server.url.replace("127.0.0.1", "localhost") + "/hook").content == b"ok"
    assert seen in (["127.0.0.1"], ["::1"])

    guarded = UpstreamHttp(
        Settings(connect_timeout=2.0, read_timeout=5.0), "webhook", peer_check=_refuse_private
    )
    with pytest.raises(UnsafeTarget, match="private, loopback"):
        guarded.request("POST", server.url + "/hook", data=b"{}")
    assert len(server.heads) == 1, "a request was written on a connection the check refused"


def test_webhook_delivery_goes_through_the_same_client_and_egress_proxy(
    raw: Callable[..., RawUpstream],
    proxies: Callable[..., ForwardProxy],
    no_proxy_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """One HTTP stack: a webhook is delivered by UpstreamHttp, through SMSBRIDGE_UPSTREAM_PROXY too."""
    receiver = raw(answer_with(b"HTTP/1.1 204 No Content\r\n\r\n"))
    proxy = proxies()
    store = EventStore(tmp_path)
    deliverer = Deliverer(
        store,
        timeout=2.0,
        retry_window=3600,
        allow_private=True,
        settings=Settings(upstream_proxy=proxy.url),
        targets={"acme": Target(receiver.url + "/hook", "v2", "s" * 32)}.get,
    )
    store.add("acme", "sms.sent", {"message_id": "m1"})
    assert deliverer.deliver_due() == 1
    assert [(seen.method, seen.target) for seen in proxy.seen] == [("POST", receiver.url + "/hook")]
    [head] = receiver.heads
    assert head.startswith(b"POST /hook HTTP/1.1\r\n")
    assert b"\r\nuser-agent: smsbridge" in head.lower()
    assert store.counts() == {}, store.counts()  # neither pending nor dead: delivered
    store.close()


def test_a_call_past_its_deadline_before_it_has_a_socket_is_cut_when_it_gets_one() -> None:
    """A slow name lookup or unanswered addresses pass the deadline before any socket exists."""
    call = upstream._Call(time.monotonic() + 0.1, None)
    upstream._watchdog.watch(call)
    time.sleep(0.4)
    assert call.cut, "the deadline passed: the call is cut even with no socket yet"
    mine, theirs = socket.socketpair()
    token = upstream._current_call.set(call)
    try:
        upstream._watch(mine)  # the socket the late connect finally made
    finally:
        upstream._current_call.reset(token)
        upstream._watchdog.finish(call)
    with mine, theirs:
        mine.settimeout(1.0)
        assert mine.recv(1) == b"", "shut down at once, not left to wait per recv"


def test_a_chunk_size_line_that_never_ends_is_refused_without_waiting(
    raw: Callable[..., RawUpstream], stopping: threading.Event
) -> None:
    """Hex digits with no line end are a broken answer after 64 KiB, not read until the deadline."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    def answer(connection: socket.socket, number: int, request: bytes) -> bool:
        connection.sendall(head + b"f" * 200_000)
        stopping.wait(30)
        return False

    server = raw(answer)
    started = time.monotonic()
    with pytest.raises(BackendConnectionLost):
        UpstreamHttp(FAST, "mobsms").request("POST", server.url + "/api/sms", json={"to": TO})
    assert time.monotonic() - started < DEADLINE - 0.5
