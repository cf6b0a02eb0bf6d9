"""All outbound HTTP (upstream calls, webhook delivery and registration) on urllib3: one stack, one place.

A send is never retried here: once a request may have been written, repeating it could send an SMS
twice. Redirects are not followed: a redirect's answer is returned as it came. Transport failures
become the bridge's own errors, split by whether anything can have reached the upstream
(`BackendUnreachable` and its kinds: nothing did) or not (`BackendTimeout`, `BackendConnectionLost`).

Why urllib3 and not requests on the send path: the bridge makes one upstream call per SMS. CPU per
call, 5,000 POSTs in a tight loop to a local server (2026-11-30, 2 cores): `requests.Session`
(trust_env off) about 430 us, this client about 230 us (urllib3's bare pool 175 us of it), the former
hand-written client about 95 us. `UpstreamHttp.session()` gives requests' API on these same pools
(`BridgeAdapter`), for a caller whose API is worth more than those 200 us; the webhook deliverer now
posts through `request(connect_to=...)`, to the address it checked.

What this module adds on top of urllib3, each for a reason named where it is done:

- one pool per origin per process: pools are made lazily and dropped when the process id changes, so a
  forked worker never writes on its parent's sockets;
- kept-alive connections idle for over IDLE_SECONDS are closed rather than reused (`_Pool._get_conn`);
  urllib3 itself already drops a connection that is readable while idle (closed, or holding bytes past
  the previous answer), and bytes that came with an answer past its end go with that answer's buffered
  reader, so a stale or dirty connection never carries a send or hands one caller another's answer;
- a total deadline per call, connect timeout + read timeout, whatever the upstream trickles: urllib3's
  timeouts are per socket operation, so one watchdog thread per process shuts a late call's socket down
  (`_Watchdog`); no thread or timer per call;
- strict framing: a Content-Length or chunk size that is not plain digits (hex digits for chunks) is a
  broken answer, never read as a length (`_check_length`, `_StrictResponse`);
- egress proxies: SMSBRIDGE_UPSTREAM_PROXY, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the
  environment, resolved once per origin; https origins go through CONNECT.

Answers are never decompressed and no Accept-Encoding is sent, so an upstream's answer is passed on
exactly as it came. An answer over MAX_ANSWER_BYTES is not read: the call counts as broken off, as a
body cut short does.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import heapq
import itertools
import json as jsonlib
import logging
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote, unquote, urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidChunkLength,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import BaseHTTPResponse, HTTPResponse
from urllib3.util import SKIP_HEADER, Timeout, make_headers

from app.config import Settings
from app.errors import (
    BackendConnectionLost,
    BackendConnectTimeout,
    BackendDnsFailure,
    BackendError,
    BackendTimeout,
    BackendTlsFailure,
    BackendUnreachable,
)

log = logging.getLogger(__name__)

#: what is told of every upstream call: its backend, its status (None when no answer came) and its
#: seconds. create_app registers app/fronts/request_log.py here (for the log line and the metrics): this
#: module knows nothing of Flask's request state.
_call_observers: list[Callable[[str, int | None, float], None]] = []


def on_call(observer: Callable[[str, int | None, float], None]) -> None:
    """Call `observer` after each upstream call with its backend, its status and its seconds."""
    if observer not in _call_observers:
        _call_observers.append(observer)


def _note_call(backend: str, status: int | None, seconds: float) -> None:
    for observer in _call_observers:
        observer(backend, status, seconds)


#: a kept-alive connection idle for longer is closed rather than reused: upstreams close idle
#: connections after a few seconds (Apache's default is 5 s), and a request written on a connection
#: the upstream is closing at that moment is lost in a way that cannot tell whether it was sent
IDLE_SECONDS = 4.0
#: the largest answer body read: far above any answer of the APIs spoken to, far below a worker's memory
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: how much of a body is read at a time when its length is not known in advance
_READ_BYTES = 64 * 1024

#: what stays as it is in an upstream URL's path and query (requests' `requote_uri` keeps the same)
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]{1,16}")
#: the longest chunk-size line read (urllib3's own bound): 16 hex digits and chunk extensions
_MAX_CHUNK_LINE = 64 * 1024


class Headers(dict):
    """An answer's headers, by name in any case (repeated headers joined with ", ")."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class Answer:
    """An upstream's answer: what the backends read of it."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        #: case-insensitive: `headers.get("retry-after")`, `"Content-Type" in headers`
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """Return the body as JSON; raise ValueError when it is not JSON."""
        return jsonlib.loads(self.content)


class _BrokenAnswer(ProtocolError):
    """The upstream's answer is not HTTP/1.x as it should be, too large, or stops short."""


# --- the total deadline -------------------------------------------------------------------------------


class _Call:
    """One upstream call in flight: its deadline, the socket it uses now, and how far it got."""

    __slots__ = ("cut", "deadline", "done", "peer_check", "sock", "written")

    def __init__(self, deadline: float, peer_check: Callable[[str], None] | None) -> None:
        self.deadline = deadline
        #: called with the address each new direct connection reached, before anything is written
        self.peer_check = peer_check
        self.sock: socket.socket | None = None
        #: the request's first byte was handed to the socket: the upstream may act on it
        self.written = False
        #: the watchdog shut the socket down at the deadline
        self.cut = False
        self.done = False


#: the call this thread (or greenlet: greenlet keeps a context per greenlet) is making
_current_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("upstream_call", default=None)


def _watch(sock: Any) -> None:
    """Let the watchdog cut `sock` if the current call passes its deadline (at once if it has)."""
    call = _current_call.get()
    if call is not None:
        _watchdog.attach(call, sock)


class _Watchdog:
    """One thread per process that shuts down the socket of any call still running at its deadline.

    A heap of deadlines and one Condition: registering a call is a push (and a notify only when it is
    the earliest), finishing it is a flag; finished calls leave the heap when their deadline comes.
    Under gevent's monkey-patching the thread and the Condition are a greenlet and its Condition, and a
    shut-down socket wakes the greenlet waiting on it, so the same code serves gunicorn's gevent worker.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._order = itertools.count()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._heap: list[tuple[float, int, _Call]] = []
        self._condition = threading.Condition(threading.Lock())
        threading.Thread(target=self._run, name="upstream-deadlines", daemon=True).start()

    def watch(self, call: _Call) -> None:
        """Cut `call` at its deadline unless `finish(call)` comes first."""
        if self._pid != os.getpid():
            self._start()  # first call in this process, or the first after a fork: threads do not fork
        with self._condition:
            heapq.heappush(self._heap, (call.deadline, next(self._order), call))
            if self._heap[0][2] is call:
                self._condition.notify()

    def attach(self, call: _Call, sock: Any) -> None:
        """Make `sock` the one to cut for `call`; cut it at once if the deadline has passed already.

        A call can pass its deadline before it has a socket (a slow name lookup, addresses that do not
        answer): the socket it gets afterwards is shut down as soon as it has one.
        """
        with self._condition:
            call.sock = sock
            if call.cut:
                _shut_down(sock)

    def finish(self, call: _Call) -> None:
        """Take `call` off the watch; after this its socket is never touched (it may serve the next call)."""
        with self._condition:
            call.done = True

    def _run(self) -> None:
        condition, heap = self._condition, self._heap
        while True:
            with condition:
                while not heap or heap[0][0] > (now := time.monotonic()):
                    condition.wait(heap[0][0] - now if heap else None)
                _, _, call = heapq.heappop(heap)
                if call.done:
                    continue
                call.cut = True
                if call.sock is not None:
                    # Under the lock: `finish` cannot hand the socket to another call meanwhile.
                    _shut_down(call.sock)


def _shut_down(sock: Any) -> None:
    """Wake whatever waits on `sock` with end-of-file or an error, from another thread or greenlet."""
    # socket.socket's own method, looked up now (gevent's once patched): SSLSocket.shutdown would drop
    # its TLS state under the thread reading it. OSError: closed already.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_watchdog = _Watchdog()


# --- connections, pools, answers ------------------------------------------------------------------------


class _StrictResponse(HTTPResponse):
    """urllib3's answer, refusing chunk sizes that are not plain hex digits.

    urllib3 (2.8) and http.client read a chunk size with `int(line, 16)`, which takes "-5", "0x10",
    "1_0" and "+5" (open upstream: urllib3 PR #5083, CPython gh-150751). A chunk size is 1*HEXDIG
    (RFC 9112, 7.1); anything else is a broken answer here, never a length.
    """

    def _update_chunk_length(self) -> None:
        if self.chunk_left is not None:
            return
        line = self._fp.fp.readline(_MAX_CHUNK_LINE + 1)  # type: ignore[union-attr]
        if len(line) > _MAX_CHUNK_LINE:
            self.close()
            raise ProtocolError("a chunk size line longer than any valid one")
        size = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not _HEX_DIGITS.fullmatch(size):
            self.close()
            if line:
                raise InvalidChunkLength(self, line)
            raise ProtocolError("Response ended prematurely")
        self.chunk_left = int(size, 16)


class _WatchedConnection(HTTPConnection):
    """A connection whose sockets the watchdog can cut, and which tells when the request is written."""

    #: when this connection went back to its pool (monotonic seconds)
    idle_since = 0.0

    @property
    def is_connected(self) -> bool:
        """Tell whether an idle connection can carry a request: open, and nothing waiting to be read.

        urllib3 asks before every reuse (a connection the upstream closed, or holding bytes past the
        last answer, is dropped). Its answer comes from select.poll with no wait; under gevent that is
        gevent's poll, which sets up a watcher and a greenlet switch for a question the kernel answers
        at once: about 60 us of a send's CPU. The C poll, asked with a zero timeout, never blocks.
        """
        if self.sock is None:
            return False
        poller = _c_poll()()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)  # a proxy's CONNECT, and a TLS handshake's first reads, happen on this socket
        call = _current_call.get()
        if call is not None and call.peer_check is not None and self.proxy is None:
            # The address connected to, not one resolved earlier: a name that resolves anew to
            # another address (DNS rebinding) is checked where it leads.
            try:
                call.peer_check(sock.getpeername()[0])
            except BaseException:
                sock.close()
                raise
        return sock

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        if self.sock is None:
            self.connect()  # here rather than inside the first send: connecting writes nothing upstream
        call = _current_call.get()
        if call is not None:
            _watchdog.attach(call, self.sock)
            if call.cut:
                raise TimeoutError("the call passed its deadline before anything was written")
            call.written = True
        super().request(method, url, *args, **kwargs)

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        response = super().getresponse()
        # urllib3 2.x builds the answer from its own class here (the pool's ResponseCls is not used), and
        # nothing of the body is read yet (preload_content=False): give it the strict chunk reader.
        response.__class__ = _StrictResponse
        return response


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    """The same over TLS."""


class _Pool(HTTPConnectionPool):
    """urllib3's pool, closing connections idle for over IDLE_SECONDS instead of reusing them."""

    ConnectionCls = _WatchedConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        # Every connection of this pool is a ConnectionCls: urllib3 annotates its base class.
        conn = cast(_WatchedConnection, super()._get_conn(timeout))
        if conn.sock is not None and time.monotonic() - conn.idle_since > IDLE_SECONDS:
            conn.close()  # urllib3 connects it again before use
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.idle_since = time.monotonic()
            if self.pool is not None and self.pool.full():
                # More sends at once than the pool keeps: this connection goes, as urllib3 would do,
                # without its warning on every such send.
                conn.close()
                return
        super()._put_conn(conn)


class _TlsPool(_Pool, HTTPSConnectionPool):
    """The same over TLS."""

    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _Pool, "https": _TlsPool}


@functools.cache
def _c_poll() -> Callable[[], Any]:
    """Return select.poll as the C library gives it, even once gevent has patched select (see above)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("select"):
        return monkey.get_original("select", "poll")
    return select.poll


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Return a verifying TLS context whose sockets register with the watchdog during their handshake."""
    # Certificates and host names are always verified: against the system's CAs, or the bundle.
    context = ssl.create_default_context(cafile=ca_bundle)
    base = context.sslsocket_class  # gevent's SSLSocket once gevent has patched ssl

    def do_handshake(self: Any, *args: Any) -> None:
        _watch(self)  # the plain socket under it is detached by now: cut this one
        base.do_handshake(self, *args)

    context.sslsocket_class = type("_WatchedSSLSocket", (base,), {"do_handshake": do_handshake})
    return context


def _check_length(response: BaseHTTPResponse) -> int | None:
    """Return the answer's Content-Length, None without one; raise if it is not plain digits.

    http.client and urllib3 read it with `int()`, which takes "+5" and "5_0", and treat "-1" as no
    length at all (read to close); a length is 1*DIGIT (RFC 9110, 8.6). A list, even of one value
    repeated, is refused (8.6 allows that), as http.client cannot read it as a length.
    """
    raw = response.headers.get("content-length")
    if raw is None or response.chunked:
        return None
    value = raw.strip().encode("latin-1")
    if not _DIGITS.fullmatch(value):
        raise _BrokenAnswer(f"Content-Length {raw[:40]!r}")
    return int(value)


def _read_body(response: BaseHTTPResponse, limit: int | None) -> bytes:
    """Read the answer's body as it came, raising if it is over MAX_ANSWER_BYTES (or cutting at `limit`)."""
    length = _check_length(response)
    most = MAX_ANSWER_BYTES if limit is None else limit
    if length is not None and length <= most:
        return response.read(decode_content=False)
    parts: list[bytes] = []
    received = 0
    for part in response.stream(_READ_BYTES, decode_content=False):
        received += len(part)
        parts.append(part)
        if received > most:
            break
    if received > most:
        if limit is None:
            raise _BrokenAnswer(f"an answer of over {MAX_ANSWER_BYTES} bytes")
        response.close()  # the rest is not wanted: the connection goes, not the call
        return b"".join(parts)[:limit]
    return b"".join(parts)


# --- proxies ----------------------------------------------------------------------------------------------

_Origin = tuple[str, str, int]
#: the most origins whose route is remembered (as many as each pool manager keeps pools for)
_MAX_ROUTES = 64


def _proxy_for(origin: _Origin, configured: str | None) -> str | None:
    """Return the proxy URL for `origin`: SMSBRIDGE_UPSTREAM_PROXY, else the environment's, else None."""
    if configured:
        return configured
    scheme, host, port = origin
    proxies = urllib.request.getproxies_environment()  # lower-case names first, as curl and requests
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy:
        return None
    # urllib.request has proxy_bypass_environment, undocumented and so not in typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(host, proxies) or bypass(f"{host}:{port}", proxies):
        return None  # NO_PROXY names the host (or the host and port)
    return proxy if "://" in proxy else "http://" + proxy


def _proxy_manager(proxy: str, **pool_options: Any) -> urllib3.ProxyManager:
    """Return a ProxyManager for `proxy`, its credentials (if any) sent as Proxy-Authorization only."""
    parts = urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Never the URL itself in the message: it can hold the proxy's password.
        raise ValueError("the egress proxy must be an http:// or https:// URL with a host")
    headers = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers = make_headers(proxy_basic_auth=credentials)
    bare = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    manager = urllib3.ProxyManager(bare, proxy_headers=headers, **pool_options)
    manager.pool_classes_by_scheme = _POOL_CLASSES
    return manager


# --- the client -------------------------------------------------------------------------------------------


class UpstreamHttp:
    """Make HTTP calls on behalf of `backend` (a backend's name, or "webhook")."""

    def __init__(
        self,
        settings: Settings,
        backend: str,
        *,
        timeout: tuple[float, float] | None = None,
        trust_ca_bundle: bool = True,
        peer_check: Callable[[str], None] | None = None,
    ) -> None:
        """Take timeouts, CA bundle, pool size and proxy from `settings`; `timeout` overrides the timeouts.

        With `trust_ca_bundle=False` the system's CAs are trusted whatever SMSBRIDGE_UPSTREAM_CA_BUNDLE
        says: webhook receivers are not the upstream the bundle is for. `peer_check(address)` is called
        with the IP address of each new direct connection (not through a proxy) before anything is
        written, and may raise to refuse it (the webhook deliverer refuses private addresses).
        """
        self.backend = backend
        self.timeout = timeout or (settings.connect_timeout, settings.read_timeout)
        self._urllib3_timeout = Timeout(connect=self.timeout[0], read=self.timeout[1])
        self._ca_bundle = settings.upstream_ca_bundle if trust_ca_bundle else None
        self._pool_size = settings.upstream_pool_size
        self._proxy = settings.upstream_proxy
        self._peer_check = peer_check
        self._pid = -1
        self._lock = threading.Lock()
        #: a pool manager per proxy (None: direct)
        self._managers: dict[str | None, urllib3.PoolManager] = {}
        #: the manager for each origin, its proxy chosen once, and the origin's pool
        self._routes: dict[
            tuple[str, str, int, str | None], tuple[urllib3.PoolManager, HTTPConnectionPool | None]
        ] = {}
        # Kept-alive connections are closed when their client goes away, not left to the collector.
        weakref.finalize(self, _close_pools, self._managers)

    def session(self, *, answer_limit: int | None = None) -> requests.Session:
        """Return a requests.Session whose every call goes through this client's pools (BridgeAdapter).

        It reads no proxy or .netrc from the environment (the pools have chosen the proxy), sends no
        Accept-Encoding and follows no redirect unless asked.
        """
        session = requests.Session()
        session.trust_env = False
        session.headers["Accept-Encoding"] = None  # type: ignore[assignment]
        session.headers["User-Agent"] = "smsbridge"
        adapter = BridgeAdapter(self, answer_limit)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: bytes | str | None = None,
        json: object = None,
        headers: Mapping[str, str] | None = None,
        answer_limit: int | None = None,
        connect_to: str | None = None,
    ) -> Answer:
        """Send one request and return its answer whatever its status; raise on transport failure.

        With `answer_limit`, at most that many bytes of the body are kept and a longer answer is cut
        there, not refused (for callers that only want the status). With `connect_to` (an IP address
        the caller resolved and checked), a direct connection goes to that address and nowhere else,
        while the URL's host stays the Host header, the TLS SNI and the name the certificate must
        match; through an egress proxy the proxy resolves the name (the address is not used).
        """
        started = time.perf_counter()
        status = None
        try:
            answer = self._exchange(method, url, params, data, json, headers, answer_limit, connect_to)
            status = answer.status_code
            return answer
        finally:
            seconds = time.perf_counter() - started
            _note_call(self.backend, status, seconds)
            if log.isEnabledFor(logging.DEBUG):
                # Never the query string: it can hold a key or the message text.
                log.debug(
                    "%s %s %s -> %s in %.1f ms",
                    self.backend,
                    method,
                    url.partition("?")[0],
                    status or "no answer",
                    seconds * 1000,
                )

    def _exchange(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        data: bytes | str | None,
        json: object,
        headers: Mapping[str, str] | None,
        answer_limit: int | None,
        connect_to: str | None = None,
    ) -> Answer:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        # As requests did: characters a URL may not hold are %-encoded, what is already encoded stays.
        target = quote(parts.path or "/", safe=_URL_SAFE)
        query = parts.query
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        if query:
            target += "?" + quote(query, safe=_URL_SAFE)
        sent = {"User-Agent": "smsbridge", "Accept": "*/*", "Accept-Encoding": SKIP_HEADER}
        body = data
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent["Content-Type"] = "application/json"
        if isinstance(body, str):
            body = body.encode()
        if connect_to is not None:
            sent["Host"] = parts.netloc.rpartition("@")[2]  # the name, not the address connected to
        if headers:
            sent.update(headers)
        if _CONTROL.search(target) or any(_CONTROL.search(f"{n}{v}") for n, v in sent.items()):
            # A line break in a value would end the header early and add lines of the caller's choosing.
            raise ValueError("an upstream request's header or path holds a control character")
        if scheme not in ("http", "https") or not host:
            raise ValueError("an upstream URL must be http:// or https:// with a host")

        manager, pool = self._route((scheme, host, port), connect_to)
        options: dict[str, Any] = {
            "body": body,
            "headers": sent,
            "retries": False,
            "redirect": False,
            "timeout": self._urllib3_timeout,
            "preload_content": False,
            "decode_content": False,
        }
        with self.watched() as call:
            if pool is not None:
                # The origin's own pool (direct, or a CONNECT tunnel), kept from the first call: what
                # PoolManager.urlopen would find again by parsing the URL and hashing a pool key each time.
                response = pool.urlopen(method, target, assert_same_host=False, **options)
            else:
                # Through a forwarding proxy: ProxyManager writes the absolute URL and the proxy's headers.
                url = f"{scheme}://{parts.netloc.rpartition('@')[2]}{target}"
                response = manager.urlopen(method, url, **options)
            with _answer_of(response):
                content = _read_body(response, answer_limit)
                _whole(call)
                return Answer(response.status, _headers(response), content)
        raise AssertionError("unreachable")  # pragma: no cover (watched() re-raises every failure)

    @contextlib.contextmanager
    def watched(self) -> Iterator[_Call]:
        """Run a call under the total deadline; turn its transport failures into the bridge's errors."""
        call = _Call(time.monotonic() + self.timeout[0] + self.timeout[1], self._peer_check)
        _watchdog.watch(call)
        token = _current_call.set(call)
        try:
            yield call
        except Exception as exc:
            failure = self._failure(_transport_error(exc), call)
            if failure is None:
                raise
            raise failure from exc
        finally:
            _current_call.reset(token)
            _watchdog.finish(call)

    def _failure(self, exc: BaseException, call: _Call) -> BackendError | None:
        """Return the bridge's error for a transport failure, split by whether the request was written."""
        if isinstance(exc, ProxyError) and isinstance(exc.original_error, Exception):
            exc = exc.original_error  # the proxy refused or failed before anything reached the upstream
        name, connect, read = self.backend, self.timeout[0], self.timeout[1]
        if call.cut and call.written:
            return BackendTimeout(
                f"the {name} backend did not answer in full within {connect + read:g} s; "
                "the message may have been sent: check before sending it again"
            )
        if isinstance(exc, NameResolutionError):
            return BackendDnsFailure(
                f"the {name} backend's host name could not be resolved; nothing was sent"
            )
        if isinstance(exc, NewConnectionError):  # a subclass of ConnectTimeoutError in urllib3 2.x
            return BackendUnreachable(f"the {name} backend refused the connection; nothing was sent")
        if call.cut or isinstance(exc, ConnectTimeoutError):
            return BackendConnectTimeout(
                f"the {name} backend did not accept a connection within {connect:g} s; nothing was sent"
            )
        if not call.written:
            if isinstance(exc, (SSLError, ssl.SSLError)):
                return BackendTlsFailure(f"the {name} backend failed the TLS handshake; nothing was sent")
            if isinstance(exc, (OSError, urllib3.exceptions.HTTPError)):
                return BackendUnreachable(f"the {name} backend could not be reached; nothing was sent")
            return None
        if isinstance(exc, (ReadTimeoutError, TimeoutError)):
            return BackendTimeout(
                f"the {name} backend did not answer within {read:g} s; "
                "the message may have been sent: check before sending it again"
            )
        if isinstance(exc, (OSError, urllib3.exceptions.HTTPError)):
            # Reset, closed before or while answering, a body cut short, a garbled status line: the
            # request was written, so the upstream may have acted on it.
            return BackendConnectionLost(
                f"the connection to the {name} backend broke before it answered in full; "
                "the message may have been sent: check before sending it again"
            )
        return None

    # --- pools ---------------------------------------------------------------------------------------------

    def _route(
        self, origin: _Origin, connect_to: str | None = None
    ) -> tuple[urllib3.PoolManager, HTTPConnectionPool | None]:
        """Return the manager for `origin` (direct, or through the proxy chosen for it once) and its pool.

        The pool is None through a forwarding proxy (plain http): those calls go through the manager.
        With `connect_to`, a direct pool connects to that address only, its TLS SNI and certificate
        check kept on the origin's host name.
        """
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    # A forked worker must never share its parent's sockets: start with no pools at all
                    # (closing them here only closes this process's copies: no FIN reaches the upstream).
                    _close_pools(self._managers)
                    self._routes.clear()
                    self._pid = os.getpid()
        key = (*origin, connect_to)
        route = self._routes.get(key)
        if route is None or (route[1] is not None and route[1].pool is None):  # new, or its pool closed
            scheme, host, port = origin
            proxy = _proxy_for(origin, self._proxy)
            with self._lock:
                manager = self._managers.get(proxy)
                if manager is None:
                    manager = self._new_manager(proxy)
                    self._managers[proxy] = manager
                if proxy and scheme == "http":
                    pool = None
                elif connect_to is not None and not proxy:
                    # Connected to the address checked, never to whatever the name resolves to next.
                    tls = {"server_hostname": host} if scheme == "https" else None
                    pool = manager.connection_from_host(connect_to, port, scheme, pool_kwargs=tls)
                else:
                    pool = manager.connection_from_host(host, port, scheme)
                if len(self._routes) >= _MAX_ROUTES:
                    self._routes.clear()  # webhook receivers are many origins: remember the recent ones
                route = self._routes[key] = (manager, pool)
        return route

    def _new_manager(self, proxy: str | None) -> urllib3.PoolManager:
        options: dict[str, Any] = {
            "num_pools": _MAX_ROUTES,
            "maxsize": self._pool_size,
            "block": False,
            "retries": False,
            "timeout": self._urllib3_timeout,
            "ssl_context": _tls_context(self._ca_bundle),
        }
        if proxy is None:
            manager = urllib3.PoolManager(**options)
            manager.pool_classes_by_scheme = _POOL_CLASSES
            return manager
        try:
            return _proxy_manager(proxy, **options)
        except ValueError as exc:
            raise BackendUnreachable(
                f"the egress proxy for the {self.backend} backend is not usable ({exc}); nothing was sent"
            ) from None


# --- requests, on the same pools ------------------------------------------------------------------------


class BridgeAdapter(HTTPAdapter):
    """requests' transport on an UpstreamHttp's pools, so that a requests.Session keeps its guarantees.

    The total deadline, strict framing, idle limit, egress proxy and peer check hold for calls made
    through the Session as for `UpstreamHttp.request`; transport failures are raised as the bridge's own
    errors (nothing sent, or may have been sent), never as requests' exceptions, whose messages hold the
    URL. The body is read here, under the deadline, up to `answer_limit` bytes (a longer one is cut), and
    never decompressed. requests itself is what the webhook deliverer writes against: its API for a
    call whose CPU does not matter; sends use `UpstreamHttp.request` directly (about 200 us less a call).
    """

    def __init__(self, http: UpstreamHttp, answer_limit: int | None = None) -> None:
        self._http = http
        self._answer_limit = answer_limit
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Make no pool manager of requests' own: the UpstreamHttp's serve every origin."""
        self.poolmanager = None

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Leave TLS to the pool's own context, which always verifies (requests would load certifi's CAs)."""

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        """Return the origin's pool as UpstreamHttp routes it (its proxy chosen once)."""
        manager, pool = self._http._route(_origin_of(request.url or ""))
        return pool if pool is not None else manager.connection_from_url(request.url or "")

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        """Return the path, or the absolute URL through a forwarding (plain http) proxy."""
        _, pool = self._http._route(_origin_of(request.url or ""))
        return request.path_url if pool is not None else request.url or ""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        """Send `request` under the total deadline and read its answer; raise BackendError on failure."""
        http = self._http
        if _CONTROL.search(request.url or "") or any(
            _CONTROL.search(f"{name}{value}") for name, value in request.headers.items()
        ):
            raise ValueError("a request's header or URL holds a control character")
        kwargs.update(stream=True, timeout=http._urllib3_timeout)
        started = time.perf_counter()
        status = None
        try:
            with http.watched() as call:
                response = super().send(request, *args, **kwargs)
                with _answer_of(response.raw):
                    content = _read_body(response.raw, self._answer_limit)
                    _whole(call)
                    # What Response.content sets once it has read the body (private, not in types-requests).
                    response._content, response._content_consumed = content, True  # type: ignore[attr-defined]
                    status = response.status_code
                    return response
            raise AssertionError("unreachable")  # pragma: no cover (watched() re-raises every failure)
        finally:
            _note_call(http.backend, status, time.perf_counter() - started)


@contextlib.contextmanager
def _answer_of(response: BaseHTTPResponse) -> Iterator[None]:
    """Give the connection back once the answer is read; close it if reading it failed part way."""
    try:
        yield
    except BaseException:
        response.close()  # the connection holds an answer read in part: it cannot serve another
        response.release_conn()
        raise
    response.release_conn()


def _whole(call: _Call) -> None:
    """Raise if the deadline cut `call`: what was read may stop short without looking so."""
    _watchdog.finish(call)
    if call.cut:
        # A header line read up to the cut, a body read to the "close": none of it is the answer.
        raise _BrokenAnswer("cut at the deadline")


def _origin_of(url: str) -> _Origin:
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise ValueError("an outbound URL must be http:// or https:// with a host")
    return scheme, host, parts.port or (443 if scheme == "https" else 80)


def _transport_error(exc: BaseException) -> BaseException:
    """Return the urllib3 or socket error under one of requests' exceptions (requests wraps them)."""
    while isinstance(exc, requests.RequestException) and exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return exc.reason
    return exc


def _close_pools(managers: dict[str | None, urllib3.PoolManager]) -> None:
    for manager in managers.values():
        manager.clear()
    managers.clear()


def _headers(response: BaseHTTPResponse) -> Headers:
    headers = Headers()
    for name, value in response.headers.itermerged():
        dict.__setitem__(headers, name.lower(), value)
    return headers
