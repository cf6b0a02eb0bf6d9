"""A fast fake mobsms for benchmarks: asyncio HTTP/1.1 keep-alive, `POST /api/sms` answered 201 from a can.

It parses only what it needs (request line, Content-Length, Connection, Authorization), so that it stays
far faster than the bridge in front of it; `bench/run` measures its ceiling as the "direct" row.
`--latency-ms` delays every answer, as a slow real upstream would, without holding anything but a timer.

    .venv/bin/python bench/fake_upstream.py --port 0 [--latency-ms 100]

prints `listening on 127.0.0.1:PORT` once it accepts connections. `GET /_stats` answers
`{"sms": N}`, the number of `POST /api/sms` it has answered 201, so that a benchmark can check that every
request through the bridge really reached the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import uuid

HOST = "127.0.0.1"
MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024

#: the answer mobsms documents for a queued SMS; `id` and `message_id` change with every answer
QUEUED = (
    b'{"success":true,"message":"SMS queued for sending","data":{"id":%d,"message_id":"%s",'
    b'"recipient_number":"+32470000001","status":"pending","price":100,"is_charged":false,'
    b'"direction":"outbound"}}'
)
UNAUTHENTICATED = b'{"success":false,"message":"Unauthenticated."}'
NOT_FOUND = b'{"message":"Not found"}'
BAD_REQUEST = b'{"message":"Bad request"}'
RESPONSE = (
    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s"
)
REASONS = {200: b"OK", 201: b"Created", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}


class Counters:
    """What the fake has answered, for `GET /_stats`."""

    def __init__(self) -> None:
        self.ids = itertools.count(101)
        self.sms = 0


def answer(status: int, body: bytes, keep_alive: bool) -> bytes:
    """Return a whole HTTP/1.1 response with a JSON body."""
    connection = b"keep-alive" if keep_alive else b"close"
    return RESPONSE % (status, REASONS[status], len(body), connection, body)


class FakeMobsmsProtocol(asyncio.Protocol):
    """One client connection: parse requests as they arrive and answer them in order."""

    def __init__(self, counters: Counters, latency: float) -> None:
        self.counters = counters
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        #: when the last answer scheduled on this connection goes out, so that answers keep their order
        self.last_due = 0.0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.closing:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.send(answer(400, BAD_REQUEST, False), close=True)
                return
            head = self.buffer[:head_end]
            length, keep_alive, authorized = 0, True, False
            lines = head.split(b"\r\n")
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or b"0")
                elif name == b"connection":
                    keep_alive = value.strip().lower() != b"close"
                elif name == b"authorization":
                    authorized = value.strip()[:7].lower() == b"bearer " and len(value.strip()) > 7
            if length > MAX_BODY:
                self.send(answer(400, BAD_REQUEST, False), close=True)
                return
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            method, _, rest = lines[0].partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if lines[0].endswith(b"HTTP/1.0"):
                keep_alive = False
            self.send(self.respond(method, path, authorized, keep_alive), close=not keep_alive)

    def respond(self, method: bytes, path: bytes, authorized: bool, keep_alive: bool) -> bytes:
        """Return the answer to one request."""
        if method == b"GET" and path == b"/_stats":
            return answer(200, b'{"sms":%d}' % self.counters.sms, keep_alive)
        if not (method == b"POST" and path == b"/api/sms"):
            return answer(404, NOT_FOUND, keep_alive)
        if not authorized:
            return answer(401, UNAUTHENTICATED, keep_alive)
        self.counters.sms += 1
        body = QUEUED % (next(self.counters.ids), str(uuid.uuid4()).encode())
        return answer(201, body, keep_alive)

    def send(self, response: bytes, close: bool) -> None:
        """Write `response` now, or after the latency, never ahead of an earlier answer."""
        if close:
            self.closing = True
        if self.latency <= 0:
            self.write(response, close)
            return
        due = max(self.loop.time() + self.latency, self.last_due)
        self.last_due = due
        self.loop.call_at(due, self.write, response, close)

    def write(self, response: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(response)
        if close:
            self.transport.close()


async def serve(port: int, latency_ms: float) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = await loop.create_server(
        lambda: FakeMobsmsProtocol(counters, latency_ms / 1000.0),
        HOST,
        port,
        backlog=4096,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {HOST}:{bound}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay every answer this long")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.latency_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
