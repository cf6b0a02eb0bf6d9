"""Rate limits through the real runtime: gunicorn in a child process and, for several workers, a real Redis.

What `app/fronts/rate_limits.py` promises, checked from outside as a client sees it:

- one count per client across REST and SOAP; past the limit REST answers 429 with `Retry-After` and the
  dialect's error body, SOAP a `Client.RateLimited` fault; health checks and the WSDL are never limited;
- a managed client has the limit the clients file gives it, else the file's `[defaults]`;
- sqlite:// (the default) is one exact count for every worker of a host, redis:// for several hosts,
  memory:// for one worker only: gunicorn refuses to start several workers on memory://;
- when Redis cannot be reached, answers stay fast (100 ms Redis timeouts) and limits go on in each
  worker's memory, at most the limit per worker, never switched off; when Redis answers again the
  workers count there again.

Every request is sent on a new TCP connection (`Connection: close`, no `requests.Session`), so which
worker answers never depends on keep-alive. Tests that need to know which worker answered override
gunicorn's access log format through GUNICORN_CMD_ARGS (which gunicorn applies over gunicorn.conf.py):
each line then starts with the worker's pid and the request's `X-Probe` header.

redis-server must be installed (`scripts/setup --test` installs it). Each Redis started here listens on
a free port of 127.0.0.1, keeps nothing on disk, and is stopped at the end of the module.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import limits.storage.memory
import limits.strategies
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.test import TestResponse

from app.config import ConfigError, Settings
from app.state import limits as limit_storages
from tests.harness.gunicorn import (
    GUNICORN,
    ROOT,
    Gunicorn,
    gunicorn_env,
    ready_workers,
    served_by,
    start_bridge,
)
from tests.harness.net import free_port
from tests.harness.redis import RedisServer, fingerprint
from tests.harness.soap import envelope, fault_of

TO = "+32470000001"
#: how long one answer may take while Redis is down or frozen (the bridge waits 100 ms for Redis)
FAST = 1.0


# --- a real Redis -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the module."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The module's Redis, running (even if a test before stopped it) and empty."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.thaw()
    redis_server.client.flushall()
    return redis_server


# --- talking to the bridge --------------------------------------------------------------------------------


def key_tag() -> str:
    return uuid.uuid4().hex[:12]


def new_key() -> str:
    return f"key-{key_tag()}"


def send(bridge: Gunicorn, key: str, probe: str = "-") -> requests.Response:
    """Send one SMS over REST on a new connection."""
    return requests.get(
        bridge.url + "/sendsms/",
        params={"apikey": key, "recipients": TO, "message": "Hi"},
        headers={"Connection": "close", "X-Probe": probe},
        timeout=10,
    )


def soap_send(bridge: Gunicorn, key: str) -> requests.Response:
    """Send one SMS over SOAP on a new connection."""
    return requests.post(
        bridge.url + "/sendsms/soap/",
        data=envelope(key=key).encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "Connection": "close"},
        timeout=10,
    )


def get(bridge: Gunicorn, path: str) -> requests.Response:
    return requests.get(bridge.url + path, headers={"Connection": "close"}, timeout=10)


def assert_rate_limited(response: requests.Response, limit: str) -> None:
    """Check a REST 429 in the dialect: Retry-After in whole seconds, error 29, a note naming `limit`."""
    assert response.status_code == 429, response.text
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit(), response.headers
    assert 1 <= int(retry_after) <= 61
    body = response.json()
    assert body["result"]["error"] == 29
    assert body["result"]["error_code"] == "rate_limited"
    assert body["result"]["sent"] == "0"
    assert limit in body["result"]["note"], body
    assert body["error"] == 29


def statuses_of(bridge: Gunicorn, key: str, count: int, probe: str) -> list[int]:
    """Send `count` REST sends for `key`, each under probe `<probe>-<n>`, and return their statuses."""
    return [send(bridge, key, f"{probe}-{n}").status_code for n in range(count)]


# --- the default runtime: a worker per core, sqlite:// ------------------------------------------------------


@pytest.fixture(scope="module")
def default_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """The default runtime (a worker per core, counting in sqlite://) with a limit of 3 a minute."""
    bridge = start_bridge(tmp_path_factory.mktemp("memory"), {"SMSBRIDGE_RATE_LIMIT": "3/minute"})
    yield bridge
    bridge.stop()


def test_a_key_gets_its_limit_over_rest_and_soap_and_other_keys_do_not_pay_for_it(
    default_bridge: Gunicorn,
) -> None:
    """3 sends pass; the 4th REST send is a dialect 429; the key's SOAP send is then a RateLimited fault.

    The count is one per client across fronts: SOAP reads the key from the envelope and lands on the
    same count as REST. Another key has a count of its own.
    """
    key = new_key()
    for _ in range(3):
        response = send(default_bridge, key)
        assert response.status_code == 200, response.text
        assert response.json()["result"]["sent"] == "1"

    assert_rate_limited(send(default_bridge, key), "3 per 1 minute")

    soap = soap_send(default_bridge, key)
    assert soap.headers["Content-Type"].startswith("text/xml")
    code, string = fault_of(soap)
    assert code == "soap11env:Client.RateLimited"
    assert "3 per 1 minute" in string

    other = send(default_bridge, new_key())
    assert other.status_code == 200, other.text
    assert other.json()["result"]["sent"] == "1"


def test_soap_sends_count_against_the_same_limit_as_rest(default_bridge: Gunicorn) -> None:
    """SOAP first: 3 SOAP sends pass, then the same key's REST send is refused with 429."""
    key = new_key()
    for _ in range(3):
        response = soap_send(default_bridge, key)
        assert response.status_code == 200, response.text
        assert b"Fault" not in response.content
    assert_rate_limited(send(default_bridge, key), "3 per 1 minute")


def test_health_checks_and_the_wsdl_are_never_limited(default_bridge: Gunicorn) -> None:
    """Far more than 3 health checks and WSDL fetches all pass, and they cost the caller's address nothing.

    A request without a key is counted by address: after them, one still gets its own answer (400
    missing_parameter), not a 429.
    """
    for _ in range(6):
        assert get(default_bridge, "/healthz").status_code == 200
        wsdl = get(default_bridge, "/sendsms/wsdl/sendsms.wsdl")
        assert wsdl.status_code == 200
        assert b"definitions" in wsdl.content
    keyless = get(default_bridge, "/sendsms/?recipients=%2B32470000001&message=Hi")
    assert keyless.status_code == 400, keyless.text
    assert keyless.json()["result"]["error_code"] == "missing_parameter"


# --- managed mode: limits from the clients file -----------------------------------------------------------


def test_managed_clients_get_the_limit_of_the_clients_file(tmp_path: Path) -> None:
    """A client with `rate_limit = "2/minute"` gets 2; a client without one gets `[defaults]`'s 5.

    SMSBRIDGE_RATE_LIMIT is 3/minute here: the file's `[defaults]` is what a client without a limit of
    its own gets, not the variable. Keys the bridge does not know are counted by address, so guessing
    keys is limited too: different unknown keys from one address share one count, refused (403) until
    the limit and then 429. Which default that count has (the variable's 3 or `[defaults]`' 5) is not
    asserted: README and app/fronts/rate_limits.py leave it open.
    """
    slow_key, busy_key = new_key(), new_key()
    clients = tmp_path / "clients.toml"
    clients.write_text(
        '[defaults]\nrate_limit = "5/minute"\n\n'
        f'[clients.slow-shop]\nkey_sha256 = ["{hashlib.sha256(slow_key.encode()).hexdigest()}"]\n'
        'backend = "sandbox"\nrate_limit = "2/minute"\n\n'
        f'[clients.busy-shop]\nkey_sha256 = ["{hashlib.sha256(busy_key.encode()).hexdigest()}"]\n'
        'backend = "sandbox"\n'
    )
    bridge = start_bridge(
        tmp_path, {"SMSBRIDGE_CLIENTS_FILE": str(clients), "SMSBRIDGE_RATE_LIMIT": "3/minute"}
    )
    try:
        assert statuses_of(bridge, slow_key, 2, "slow") == [200, 200]
        assert_rate_limited(send(bridge, slow_key), "2 per 1 minute")

        assert statuses_of(bridge, busy_key, 5, "busy") == [200] * 5
        assert_rate_limited(send(bridge, busy_key), "5 per 1 minute")

        guesses = [send(bridge, new_key()) for _ in range(6)]
        refused = [g.status_code for g in guesses]
        assert 429 in refused, refused
        # Unknown keys count against their address with the file's default, like any client without its own.
        assert refused == [403] * 5 + [429], refused
        assert guesses[0].json()["result"]["error_code"] == "key_refused"
        assert_rate_limited(guesses[-1], "5 per 1 minute")
    finally:
        bridge.stop()


# --- several workers: one count in Redis ------------------------------------------------------------------


def test_two_workers_share_one_exact_count_in_redis(fresh_redis: RedisServer, tmp_path: Path) -> None:
    """With 2 workers on redis://, a key with 5/minute gets exactly 5 of 12 sends, whichever worker answers.

    Redis holds the count: 12.
    """
    bridge = start_bridge(
        tmp_path,
        {
            "SMSBRIDGE_WORKERS": "2",
            "SMSBRIDGE_RATELIMIT_STORAGE": fresh_redis.url,
            "SMSBRIDGE_RATE_LIMIT": "5/minute",
        },
    )
    try:
        key = assert_two_workers_share_one_count(bridge)
        assert fresh_redis.count_of(key) == 12
        assert_rate_limited(send(bridge, key), "5 per 1 minute")
    finally:
        bridge.stop()


def test_two_workers_share_one_exact_count_in_sqlite_by_default(tmp_path: Path) -> None:
    """The default storage, sqlite://, is one exact count for the workers of a host, with no server."""
    bridge = start_bridge(tmp_path, {"SMSBRIDGE_WORKERS": "2", "SMSBRIDGE_RATE_LIMIT": "5/minute"})
    try:
        key = assert_two_workers_share_one_count(bridge)
        assert_rate_limited(send(bridge, key), "5 per 1 minute")
    finally:
        bridge.stop()
    database = tmp_path / "gunicorn-data" / "ratelimits.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db:
        [(count,)] = db.execute("SELECT count FROM windows WHERE key LIKE ?", (f"%{fingerprint(key)}%",))
    assert count == 13  # 12, and the one assert_rate_limited sent


def assert_two_workers_share_one_count(bridge: Gunicorn) -> str:
    """Send 12 times with a new key (5/minute) until both workers answered some; return that key.

    Exactly 5 pass whichever worker answers. The access log shows the pid of the worker that answered
    each send: only a round in which both workers answered counts (the kernel chooses; a round where one
    worker took them all is sent again with a new key).
    """
    workers = ready_workers(bridge)
    for attempt in range(10):
        key = new_key()
        statuses = statuses_of(bridge, key, 12, f"shared{attempt}")
        assert statuses == [200] * 5 + [429] * 7
        served = served_by(bridge, [f"shared{attempt}-{n}" for n in range(12)])
        assert [status for _, status in served.values()] == statuses
        assert {pid for pid, _ in served.values()} <= workers
        if len({pid for pid, _ in served.values()}) == 2:
            break
    else:
        pytest.fail("in 10 rounds of 12 sends, one worker answered every send of each round")
    return key


def test_two_workers_are_refused_with_memory_storage(tmp_path: Path) -> None:
    """memory:// with SMSBRIDGE_WORKERS=2 would multiply every limit by 2: gunicorn does not start."""
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        done = subprocess.run(
            GUNICORN,
            cwd=ROOT,
            env=gunicorn_env(
                free_port(),
                SMSBRIDGE_DATA_DIR=str(tmp_path),
                SMSBRIDGE_WORKERS="2",
                SMSBRIDGE_RATELIMIT_STORAGE="memory://",
                SMSBRIDGE_RATE_LIMIT="5/minute",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    output = log.read_text()
    assert done.returncode != 0, output
    assert "SMSBRIDGE_WORKERS=2" in output
    assert "redis://" in output
    assert "Booting worker" not in output


# --- Redis down, frozen, and back -------------------------------------------------------------------------


def _per_worker(served: dict[str, tuple[int, int]]) -> dict[int, list[int]]:
    """Return each worker's statuses, in the order its sends were made."""
    by_worker: dict[int, list[int]] = {}
    for pid, status in served.values():
        by_worker.setdefault(pid, []).append(status)
    return by_worker


def _timed_sends(bridge: Gunicorn, key: str, count: int, probe: str) -> list[requests.Response]:
    answers = []
    for n in range(count):
        started = time.monotonic()
        response = send(bridge, key, f"{probe}-{n}")
        elapsed = time.monotonic() - started
        assert elapsed < FAST, f"send {n} took {elapsed:.2f} s while Redis was unreachable"
        answers.append(response)
    return answers


def _assert_limited_per_worker(bridge: Gunicorn, answers: list[requests.Response], probe: str) -> None:
    """Each worker let through at most 5 and refused every send beyond its 5th, in the dialect."""
    served = served_by(bridge, [f"{probe}-{n}" for n in range(len(answers))])
    assert [status for _, status in served.values()] == [a.status_code for a in answers]
    for pid, statuses in _per_worker(served).items():
        allowed = min(len(statuses), 5)
        assert statuses == [200] * allowed + [429] * (len(statuses) - allowed), (pid, statuses)
    refused = [a for a in answers if a.status_code == 429]
    # 15 sends over 2 workers: one of them answered at least 8, so limits show.
    assert refused, "no send was refused while Redis was unreachable: limits were switched off"
    assert_rate_limited(refused[0], "5 per 1 minute")
    assert sum(a.status_code == 200 for a in answers) <= 10


def _wait_until_every_worker_counts_in_redis(
    bridge: Gunicorn, server: RedisServer, workers: set[int]
) -> None:
    """Send one send per fresh key until each worker has answered one that Redis counted."""
    back: set[int] = set()
    deadline = time.monotonic() + 20
    while not workers <= back:
        assert time.monotonic() < deadline, f"workers {workers - back} never counted in Redis again"
        key, probe = new_key(), f"back-{key_tag()}"
        assert send(bridge, key, probe).status_code == 200
        if server.count_of(key) == 1:
            back.add(served_by(bridge, [probe])[probe][0])
        time.sleep(0.05)


def _assert_one_count_across_workers(bridge: Gunicorn, server: RedisServer, name: str) -> None:
    """A fresh key's 6th send is refused, with both workers answering some of its sends.

    The 8 sends of a round go at once, on 8 connections: one after another, the kernel may hand every
    new connection to the same worker, and the round would show nothing about sharing.
    """
    for attempt in range(10):
        key = new_key()
        probe = f"{name}{attempt}"
        probes = [f"{probe}-{n}" for n in range(8)]
        with ThreadPoolExecutor(8) as pool:
            statuses = [a.status_code for a in pool.map(send, [bridge] * 8, [key] * 8, probes)]
        assert sorted(statuses) == [200] * 5 + [429] * 3
        assert server.count_of(key) == 8
        served = served_by(bridge, [f"{probe}-{n}" for n in range(8)])
        if len({pid for pid, _ in served.values()}) == 2:
            return
    pytest.fail("in 10 rounds of 8 sends, one worker answered every send of each round")


@pytest.fixture
def redis_bridge(fresh_redis: RedisServer, tmp_path: Path) -> Iterator[Gunicorn]:
    """Two workers counting in the module's Redis, 5 sends a minute per key."""
    bridge = start_bridge(
        tmp_path,
        {
            "SMSBRIDGE_WORKERS": "2",
            "SMSBRIDGE_RATELIMIT_STORAGE": fresh_redis.url,
            "SMSBRIDGE_RATE_LIMIT": "5/minute",
        },
    )
    yield bridge
    bridge.stop()


def test_a_stopped_redis_keeps_answers_fast_and_limits_on_then_is_used_again(
    redis_bridge: Gunicorn, fresh_redis: RedisServer
) -> None:
    """Redis stops: every send is answered in under 1 s and each worker applies the limit in its memory.

    app/fronts/rate_limits.py promises that a dead Redis costs one short timeout (100 ms) rather than seconds
    per request, and never switches limits off: a client gets at most its limit per worker. So, for a
    fresh key, each worker answers 200 up to 5 times and 429 after, which the access log's pids show.
    Health checks still answer. Redis then starts again on the same port (empty: no persistence):
    each worker goes back to counting there, which a fresh key's count appearing in Redis shows, and
    again a key's 6th send is refused whichever worker answers. A worker counting in memory looks at
    Redis again once a second, so each is back within about a second; the test waits up to 20 s.
    """
    workers = ready_workers(redis_bridge)
    warm = new_key()
    assert send(redis_bridge, warm).status_code == 200
    assert fresh_redis.count_of(warm) == 1

    fresh_redis.stop()
    answers = _timed_sends(redis_bridge, new_key(), 15, "down")
    assert {a.status_code for a in answers} <= {200, 429}, [a.text for a in answers]
    _assert_limited_per_worker(redis_bridge, answers, "down")
    assert get(redis_bridge, "/healthz").status_code == 200

    fresh_redis.start()
    _wait_until_every_worker_counts_in_redis(redis_bridge, fresh_redis, workers)
    _assert_one_count_across_workers(redis_bridge, fresh_redis, "after")


def test_a_frozen_redis_costs_a_short_timeout_not_seconds(
    redis_bridge: Gunicorn, fresh_redis: RedisServer
) -> None:
    """Redis stops answering but keeps its port open (SIGSTOP): sends still answer in under 1 s each.

    This is the case the 100 ms socket timeouts are for: connections succeed and replies never come. The
    limit goes on per worker as when Redis is down, and once Redis runs again the workers count there.
    """
    workers = ready_workers(redis_bridge)
    assert send(redis_bridge, new_key()).status_code == 200

    fresh_redis.freeze()
    try:
        answers = _timed_sends(redis_bridge, new_key(), 15, "frozen")
        assert {a.status_code for a in answers} <= {200, 429}, [a.text for a in answers]
        _assert_limited_per_worker(redis_bridge, answers, "frozen")
    finally:
        fresh_redis.thaw()

    _wait_until_every_worker_counts_in_redis(redis_bridge, fresh_redis, workers)
    _assert_one_count_across_workers(redis_bridge, fresh_redis, "thawed")


# --- the SOAP caller's key, read from the parsed envelope -------------------------------------------------


def soap_post(bridge: Gunicorn, body: str) -> requests.Response:
    """Post a SOAP envelope on a new connection."""
    return requests.post(
        bridge.url + "/sendsms/soap/",
        data=body.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "Connection": "close"},
        timeout=10,
    )


def test_one_key_however_the_envelope_spells_it_is_one_count(default_bridge: Gunicorn) -> None:
    """Character references, one escaped letter, CDATA and a decoy key in a comment: one client, one count.

    The XML parser reads each as the same apikey, and so does spyne: 3 sends pass (3/minute), the 4th is
    a Client.RateLimited fault and the key's REST send is then a 429. A regex over the raw bytes read
    four different keys here, and let all four through.
    """
    key = new_key()
    spellings = [
        envelope(key="".join(f"&#x{ord(c):X};" for c in key)),
        envelope(key=f"{key[0]}&#x{ord(key[1]):X};{key[2:]}"),
        envelope(key=f"<![CDATA[{key}]]>"),
        envelope(key=key).replace("<apikey>", "<!-- <apikey>decoy-key</apikey> --><apikey>", 1),
    ]
    answers = [soap_post(default_bridge, body) for body in spellings]
    for answer in answers[:3]:
        assert answer.status_code == 200, answer.text
        assert b"Fault" not in answer.content
    code, string = fault_of(answers[3])
    assert code == "soap11env:Client.RateLimited", string
    assert "3 per 1 minute" in string
    assert answers[3].headers["Retry-After"].isdigit()
    assert_rate_limited(send(default_bridge, key), "3 per 1 minute")


# --- headers, and the key prefix ---------------------------------------------------------------------------


def _rest_send(client: FlaskClient, key: str) -> TestResponse:
    return client.get("/sendsms/", query_string={"apikey": key, "recipients": TO, "message": "Hi"})


def test_the_inbox_pages_and_polls_are_not_counted_but_its_sign_in_is(make_app: Callable[..., Flask]) -> None:
    """A tab polls the inbox every 2 s: counted by address, four tabs used up the default 120/minute and
    the buttons answered 429. Pages and polls go uncounted; sign-in (password guesses) stays counted."""
    client = make_app("sandbox", rate_limit="3/minute", ui_password="open-sesame-123").test_client()
    for _ in range(10):
        assert client.get("/ui/login").status_code == 200
        assert client.get("/", headers={"X-UI-Live": "1"}).status_code in (200, 303)
    guesses = [client.post("/ui/login", data={"password": "wrong"}).status_code for _ in range(5)]
    assert guesses[:3] != [429] * 3 and guesses[-1] == 429, guesses


def test_answers_carry_the_limit_the_remaining_and_the_reset(make_app: Callable[..., Flask]) -> None:
    """X-RateLimit-Limit, -Remaining and -Reset on every limited answer; Retry-After only on a refusal."""
    client = make_app("sandbox", rate_limit="2/minute").test_client()
    key = new_key()
    started = time.time()
    first, second, third = (_rest_send(client, key) for _ in range(3))
    soap = client.post("/sendsms/soap/", data=envelope(key=key).encode(), content_type="text/xml")

    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert [a.headers["X-RateLimit-Limit"] for a in (first, second, third, soap)] == ["2"] * 4
    assert [a.headers["X-RateLimit-Remaining"] for a in (first, second, third, soap)] == ["1", "0", "0", "0"]
    for answer in (first, second, third, soap):
        assert started + 59 <= int(answer.headers["X-RateLimit-Reset"]) <= time.time() + 61
    assert "Retry-After" not in first.headers and "Retry-After" not in second.headers
    assert 59 <= int(third.headers["Retry-After"]) <= 61
    assert fault_of(soap)[0] == "soap11env:Client.RateLimited"
    assert 59 <= int(soap.headers["Retry-After"]) <= 61
    assert "X-RateLimit-Limit" not in client.get("/healthz").headers  # never limited


def test_bridges_sharing_a_redis_share_counts_only_when_they_share_the_prefix(
    fresh_redis: RedisServer, make_app: Callable[..., Flask]
) -> None:
    """Two bridges on one Redis with prefixes "shop-a" and "shop-b" count apart; a second "shop-a" shares."""

    def bridge(prefix: str) -> FlaskClient:
        app = make_app(
            "sandbox", ratelimit_storage=fresh_redis.url, rate_limit="2/minute", ratelimit_key_prefix=prefix
        )
        return app.test_client()

    shop_a, shop_b, shop_a_again = bridge("shop-a"), bridge("shop-b"), bridge("shop-a")
    key = new_key()
    assert [_rest_send(shop_a, key).status_code for _ in range(3)] == [200, 200, 429]
    assert _rest_send(shop_b, key).status_code == 200
    assert _rest_send(shop_a_again, key).status_code == 429
    names = fresh_redis.client.keys(f"*{fingerprint(key)}*")
    assert len(names) == 2, names
    assert [int(fresh_redis.client.get(name)) for name in sorted(names)] == [4, 1]  # shop-a's, shop-b's
    assert "shop-a" in sorted(names)[0] and "shop-b" in sorted(names)[1]


@pytest.mark.parametrize("prefix", ["", "a/b", "x" * 65])
def test_a_key_prefix_that_could_mix_counts_stops_the_start(
    prefix: str, make_app: Callable[..., Flask]
) -> None:
    with pytest.raises(ConfigError, match="SMSBRIDGE_RATELIMIT_KEY_PREFIX"):
        make_app("sandbox", ratelimit_key_prefix=prefix)


@pytest.mark.parametrize(
    "storage", ["sqlite:///elsewhere.db", "memcached://127.0.0.1:11211", "redis://", "memory"]
)
def test_a_storage_the_bridge_does_not_count_in_stops_the_start(
    storage: str, make_app: Callable[..., Flask]
) -> None:
    with pytest.raises(ConfigError, match="SMSBRIDGE_RATELIMIT_STORAGE"):
        make_app("sandbox", ratelimit_storage=storage, workers=1)


# --- the storages: limits' own strategies on them ----------------------------------------------------------


def test_the_storage_schemes_are_the_bridges_own_not_ones_limits_ships(tmp_path: Path) -> None:
    """`limits` alone knows neither sqlite:// nor fallback+*://; with app.state.limits, they are ours."""
    schemes = [*limit_storages.SqliteStorage.STORAGE_SCHEME, *limit_storages.FallbackStorage.STORAGE_SCHEME]
    probe = (
        "import sys, limits.storage, limits.aio.storage\n"
        "from limits._storage_scheme import SCHEMES\n"
        "print(','.join(s for s in sys.argv[1:] if s in SCHEMES))\n"
    )
    shipped = subprocess.run(
        [sys.executable, "-c", probe, *schemes], capture_output=True, text=True, check=True, timeout=60
    )
    assert shipped.stdout.strip() == ""
    assert isinstance(
        storage_from_string(limit_storages.sqlite_uri(tmp_path / "x.db")), limit_storages.SqliteStorage
    )
    assert isinstance(storage_from_string("fallback+redis://127.0.0.1:9"), limit_storages.FallbackStorage)


@pytest.mark.parametrize("storage", ["sqlite://", "memory://"])
def test_local_windows_are_exact_and_start_again_when_they_end(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:// and memory:// under limits' fixed-window strategy: the limit per window, then a new window.

    The clock is moved by hand, so the test says exactly where a window ends and needs no sleeping.
    """
    now = [1_000_000.0]
    # limits' own clock (its memory storage and its strategies read `time` in their modules), and the
    # SQLite storage's, given as a storage option: the process's clock stays as it is.
    clock = SimpleNamespace(time=lambda: now[0], monotonic=time.monotonic)
    monkeypatch.setattr(limits.storage.memory, "time", clock)
    monkeypatch.setattr(limits.strategies, "time", clock)
    settings = Settings(ratelimit_storage=storage, data_dir=tmp_path, workers=1)
    uri, options = limit_storages.limiter_storage(settings)
    if storage == "sqlite://":
        options["clock"] = lambda: now[0]
    counts = storage_from_string(uri, **options)
    windows = FixedWindowRateLimiter(counts)
    [two] = parse_many("2/minute")

    assert [windows.hit(two, "p", "key:a") for _ in range(3)] == [True, True, False]
    assert windows.hit(two, "p", "key:b")  # another client, another count
    assert windows.hit(two, "other-prefix", "key:a")  # another prefix, another count
    now[0] += 30
    assert not windows.hit(two, "p", "key:a")
    assert windows.get_window_stats(two, "p", "key:a") == (1_000_060.0, 0)
    now[0] += 30  # the window that began with the first request ends
    assert windows.get_window_stats(two, "p", "key:a") == (now[0], 2)
    assert [windows.hit(two, "p", "key:a") for _ in range(3)] == [True, True, False]
    assert counts.check()
    counts.reset()
    assert windows.get_window_stats(two, "p", "key:a") == (now[0], 2)


def test_sqlite_drops_ended_windows_once_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    counts = limit_storages.SqliteStorage(
        limit_storages.sqlite_uri(tmp_path / "counts.sqlite3"), clock=lambda: now[0]
    )
    for n in range(1000):
        assert counts.incr(f"key:{n}", 5) == 1
    now[0] += limit_storages.SWEEP_SECONDS
    assert counts.incr("key:new", 5) == 1
    [(rows,)] = counts.connections.get().execute("SELECT count(*) FROM windows")
    assert rows == 1  # the 1000 ended windows were dropped; the file does not grow


def test_a_dead_redis_costs_one_short_timeout_a_second_and_is_used_again_within_a_second(
    fresh_redis: RedisServer,
) -> None:
    """The fallback storage: exact counts in memory while Redis hangs, Redis again about a second after.

    Redis is frozen (its port open, no answer) for 4 s, with a call every 0.1 s: about one call a second
    waits for Redis (100 ms), none longer, the others count in memory at once. flask-limiter's own
    fallback tries its storage again after 1, 2, 4, 8... s, so it would still be in memory when Redis
    answers again here.
    """
    counts = storage_from_string(
        "fallback+" + fresh_redis.url,
        socket_connect_timeout=limit_storages.REDIS_TIMEOUT_SECONDS,
        socket_timeout=limit_storages.REDIS_TIMEOUT_SECONDS,
    )
    windows = FixedWindowRateLimiter(counts)
    [five] = parse_many("5/minute")
    assert windows.hit(five, "p", "key:warm")
    assert fresh_redis.client.get("LIMITS:" + five.key_for("p", "key:warm")) == "1"

    fresh_redis.freeze()
    slow, hits = 0, []
    down_until = time.monotonic() + 4
    while time.monotonic() < down_until:
        started = time.monotonic()
        hits.append(windows.hit(five, "p", "key:down"))
        elapsed = time.monotonic() - started
        assert elapsed < 0.5, elapsed
        slow += elapsed > 0.09
        time.sleep(0.1)
    assert hits[:5] == [True] * 5 and not any(hits[5:])  # limits stay on, exact, in memory
    assert 1 <= slow <= 6, slow  # one try a second, not one per call
    assert not counts.check()

    fresh_redis.thaw()
    time.sleep(limit_storages.PROBE_SECONDS + 0.1)
    assert windows.hit(five, "p", "key:back")
    assert fresh_redis.client.get("LIMITS:" + five.key_for("p", "key:back")) == "1"
    assert counts.check()
