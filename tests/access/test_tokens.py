"""Token secrets made once and whole, refused when empty or short, rotated; tokens and tags signed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import Signer, URLSafeTimedSerializer

import app.access.tokens
from app.access.resolution import hash_key
from app.access.tokens import TokenSigner
from app.config import ConfigError
from app.fronts.webhook_sources import source_urls
from tests.harness.clients import KEY_A, KEY_S, write_clients
from tests.harness.gunicorn import GUNICORN, ROOT, gunicorn_env, served_by, start_bridge
from tests.harness.net import free_port
from tests.harness.oauth import CLIENTS, assert_token_refused, bearer, send_with, token_for

SECRET_A = "secret-A-0123456789abcdef0123456789"
SECRET_B = "secret-B-0123456789abcdef0123456789"
#: what start-up says of an empty or short generated secret, after its path
SHORT_FILE_MESSAGE = (
    "holds {size} bytes, fewer than 32 (left half-written by an earlier version?): delete it to have a new "
    "one made (tokens and webhook URLs given out under it stop working), or set SMSBRIDGE_TOKEN_SECRET"
)
MOBSMS_EVENT = json.dumps(
    {
        "event": "sms.status",
        "data": {"message_id": "m-1", "status": "delivered", "recipient_number": "+32470"},
    }
).encode()


@pytest.fixture
def clients_path(tmp_path: Path) -> Path:
    return write_clients(tmp_path / "clients.toml", CLIENTS)


@pytest.fixture
def managed(make_app: Callable[..., Flask], clients_path: Path) -> Callable[..., Flask]:
    """Build a managed bridge (the clients of tests/harness/oauth.py) with `token_secret` and overrides."""

    def build(token_secret: str | None = None, **overrides: object) -> Flask:
        if token_secret is not None:
            overrides["token_secret"] = token_secret
        return make_app("sandbox", clients_file=str(clients_path), **overrides)

    return build


def sandbox_send(client: FlaskClient, token: str) -> int:
    """Send as the sandbox client with `token`; return the HTTP status."""
    return send_with(client, token).status_code


def post_source(client: FlaskClient, url: str) -> int:
    """Post a mobsms delivery event to a source URL the way mobsms does; return the HTTP status."""
    parts = urlsplit(url)
    return client.post(
        parts.path, query_string=parts.query, data=MOBSMS_EVENT, content_type="application/json"
    ).status_code


# --- the generated secret ---------------------------------------------------------------------------------


def test_the_generated_secret_is_made_whole_once_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app.access.tokens.prepare_secret(None, data)
    secret_file = data / "token-secret"
    made = secret_file.read_bytes()
    assert len(made) == 32
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in data.iterdir()) == ["token-secret"]  # no temporary file left
    app.access.tokens.prepare_secret(None, data)
    assert secret_file.read_bytes() == made
    # A configured secret needs no file.
    app.access.tokens.prepare_secret(SECRET_A, tmp_path / "configured")
    assert not (tmp_path / "configured").exists()


def test_callers_making_the_secret_at_once_all_get_the_same_one(tmp_path: Path) -> None:
    """Whoever loses the race reads the winner's whole secret, never a file still being written."""
    for round_ in range(30):
        data = tmp_path / f"round-{round_}"
        barrier = threading.Barrier(8)
        got: list[bytes | Exception] = []

        def make(data: Path = data, barrier: threading.Barrier = barrier, got: list = got) -> None:
            barrier.wait()
            try:
                got.append(app.access.tokens.TokenSigner.from_settings([], data, 60).label("x").encode())
            except Exception as exc:  # reported below, with the others' results
                got.append(exc)

        threads = [threading.Thread(target=make) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(map(repr, got))) == 1, got
        assert len((data / "token-secret").read_bytes()) == 32


@pytest.mark.parametrize("content", [b"", b"x" * 31], ids=["empty", "31 bytes"])
def test_an_empty_or_short_secret_file_stops_the_start(
    content: bytes, managed: Callable[..., Flask], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "token-secret").write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        managed(data_dir=data)
    assert str(caught.value) == (
        f"the token secret {data / 'token-secret'} " + SHORT_FILE_MESSAGE.format(size=len(content))
    )
    # Left for the operator to see: the bridge neither signs with it nor replaces it.
    assert (data / "token-secret").read_bytes() == content


def test_an_empty_secret_file_stops_gunicorn_with_the_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "token-secret").write_bytes(b"")
    done = subprocess.run(
        GUNICORN,
        cwd=ROOT,
        env=gunicorn_env(free_port(), SMSBRIDGE_DATA_DIR=str(data)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"smsbridge: the token secret {data / 'token-secret'} " + SHORT_FILE_MESSAGE.format(size=0) in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert "Booting worker" not in done.stderr


def test_four_workers_cold_starting_agree_on_one_secret(tmp_path: Path) -> None:
    """Tokens issued by each worker of a fresh data directory are accepted by the others."""
    clients = write_clients(tmp_path / "clients.toml", CLIENTS)
    bridge = start_bridge(
        tmp_path,
        {
            "SMSBRIDGE_WORKERS": "4",
            "SMSBRIDGE_CLIENTS_FILE": str(clients),
            "SMSBRIDGE_RATE_LIMIT": "100000/minute",
        },
    )
    calls = 0

    def call(
        path: str, form: dict[str, str], auth: tuple[str, str] | None = None, token: str | None = None
    ) -> tuple[requests.Response, int]:
        """POST on a new connection; return the answer and the worker that served it."""
        nonlocal calls
        calls += 1
        assert calls < 400, f"the workers did not all answer:\n{bridge.log.read_text()}"
        probe = f"probe-{calls}"
        headers = {"Connection": "close", "X-Probe": probe, **(bearer(token) if token else {})}
        answer = requests.post(bridge.url + path, data=form, auth=auth, headers=headers, timeout=10)
        return answer, served_by(bridge, [probe])[probe][0]

    try:
        issued: dict[int, str] = {}
        while len(issued) < 4:
            answer, worker = call(
                "/oauth2/token", {"grant_type": "client_credentials"}, auth=("shop-s", KEY_S)
            )
            assert answer.status_code == 200, answer.text
            issued.setdefault(worker, answer.json()["access_token"])
        # Each token, used until a worker other than its issuer accepted it; every worker accepts some.
        accepted_elsewhere: set[int] = set()
        acceptors: set[int] = set()
        while accepted_elsewhere != set(issued) or len(acceptors) < 4:
            for issuer, token in issued.items():
                answer, worker = call(
                    "/sendsms/", {"recipients": "+32470000001", "message": "Hi"}, token=token
                )
                assert answer.status_code == 200, (issuer, worker, answer.text)
                if worker != issuer:
                    accepted_elsewhere.add(issuer)
                    acceptors.add(worker)
    finally:
        bridge.stop()
    data = tmp_path / "gunicorn-data"
    assert len((data / "token-secret").read_bytes()) == 32
    assert not [p.name for p in data.iterdir() if p.name.startswith(".token-secret")]


# --- configured secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"{SECRET_A},", "secret 2 of 2 is empty"),
        (f"{SECRET_A},,{SECRET_B}", "secret 2 of 3 is empty"),
        (f" , {SECRET_A}", "secret 1 of 2 is empty"),
        (f"{SECRET_A},{'x' * 31}", "secret 2 of 2 is 31 bytes: each must be at least 32"),
        ("é" * 15 + "x", "secret 1 of 1 is 31 bytes: each must be at least 32"),
    ],
)
def test_an_empty_or_short_configured_secret_stops_the_start(
    value: str, message: str, managed: Callable[..., Flask]
) -> None:
    with pytest.raises(ConfigError) as caught:
        managed(value)
    assert str(caught.value).startswith(f"SMSBRIDGE_TOKEN_SECRET: {message}")
    assert SECRET_A not in str(caught.value)


def test_the_signer_refuses_an_empty_or_short_key() -> None:
    for keys in (b"", b"k" * 31, [], [SECRET_A.encode(), b""]):
        with pytest.raises(ValueError, match="every token secret must be at least 32 bytes"):
            TokenSigner(keys, 60)


def test_a_rotation_keeps_tokens_and_source_urls_until_the_old_secret_goes(
    managed: Callable[..., Flask],
) -> None:
    """Under "A,B" what A signed is accepted and B signs; with only B, what A signed is refused."""
    under_a = managed(SECRET_A)
    rotating = managed(f"{SECRET_A}, {SECRET_B}")
    only_b = managed(SECRET_B)
    token_a = token_for(under_a.test_client(), "shop-s", KEY_S)
    url_a = source_urls(under_a.extensions["smsbridge"], "shop-s")["mobsms"]
    token_ab = token_for(rotating.test_client(), "shop-s", KEY_S)
    url_ab = source_urls(rotating.extensions["smsbridge"], "shop-s")["mobsms"]

    assert sandbox_send(rotating.test_client(), token_a) == 200
    assert post_source(rotating.test_client(), url_a) == 200
    # The last secret signs: what the rotating bridge gives out is B's.
    assert url_ab != url_a
    assert sandbox_send(only_b.test_client(), token_ab) == 200
    assert post_source(only_b.test_client(), url_ab) == 200
    assert_token_refused(send_with(under_a.test_client(), token_ab))
    assert post_source(under_a.test_client(), url_ab) == 403
    # A removed, what A signed is refused.
    assert_token_refused(send_with(only_b.test_client(), token_a))
    assert post_source(only_b.test_client(), url_a) == 403


def test_source_urls_given_out_before_itsdangerous_keep_working(managed: Callable[..., Flask]) -> None:
    """They are registered with upstreams: an upgrade must not stop the events coming."""
    old_tag = hmac.new(SECRET_A.encode(), b"label:mobsms:shop-s", hashlib.sha256).hexdigest()[:32]
    old_url = f"https://bridge.example.test/webhooks/mobsms/shop-s?key={old_tag}"
    assert post_source(managed(SECRET_A).test_client(), old_url) == 200
    assert post_source(managed(f"{SECRET_A},{SECRET_B}").test_client(), old_url) == 200
    assert post_source(managed(SECRET_B).test_client(), old_url) == 403
    assert post_source(managed(SECRET_A).test_client(), old_url.replace("shop-s", "shop-a")) == 403


# --- what a token must not be -----------------------------------------------------------------------------


def itsdangerous_token(key: bytes, claims: dict, salt: str) -> str:
    """Sign `claims` as the bridge signs a token, with any key and salt."""
    return "sbt2." + URLSafeTimedSerializer(
        key, salt=salt, signer_kwargs={"digest_method": hashlib.sha256}
    ).dumps(claims)


def key_proof(key: bytes, key_hash: str) -> str:
    return hmac.new(key, f"client-key:{key_hash}".encode(), hashlib.sha256).hexdigest()


def test_a_token_signed_with_an_empty_key_is_refused(managed: Callable[..., Flask]) -> None:
    client = managed().test_client()  # the generated secret
    forged = itsdangerous_token(
        b"", {"sub": "shop-s", "kh": key_proof(b"", hash_key(KEY_S))}, app.access.tokens.TOKEN_SALT
    )
    assert_token_refused(send_with(client, forged))
    assert sandbox_send(client, token_for(client, "shop-s", KEY_S)) == 200


def test_a_token_with_an_empty_or_partial_key_claim_is_refused(managed: Callable[..., Flask]) -> None:
    client = managed(SECRET_A).test_client()
    signer = TokenSigner(SECRET_A.encode(), 3600)
    key_hash = hash_key(KEY_S)
    # Issued for an empty or partial key hash, a token holds no key of the client.
    for partial in ("", key_hash[:16], key_hash[:-1]):
        assert_token_refused(send_with(client, signer.issue("shop-s", partial)))
    assert sandbox_send(client, signer.issue("shop-s", key_hash)) == 200
    # Signed claims naming the key emptily, partly or by its bare hash.
    proof = key_proof(SECRET_A.encode(), key_hash)
    claims = [
        {"sub": "shop-s", "kh": ""},
        {"sub": "shop-s", "kh": proof[:16]},
        {"sub": "shop-s", "kh": key_hash},
        {"sub": "shop-s", "kh": key_hash[:16]},
        {"sub": "shop-s"},
        {"sub": "shop-s", "kh": None},
    ]
    for claim in claims:
        forged = itsdangerous_token(SECRET_A.encode(), claim, app.access.tokens.TOKEN_SALT)
        assert_token_refused(send_with(client, forged))
    # The same construction with the whole key's proof is accepted: the refusals above are the claims'.
    whole = itsdangerous_token(
        SECRET_A.encode(), {"sub": "shop-s", "kh": proof}, app.access.tokens.TOKEN_SALT
    )
    assert sandbox_send(client, whole) == 200


def old_format_token(secret: bytes, claims: dict) -> str:
    """A token in the hand-made format before itsdangerous: sbt1.<b64 json>.<b64 hmac-sha256>."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    payload = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret, f"sbt1.{payload}".encode(), hashlib.sha256).digest())
    return f"sbt1.{payload}.{signature}"


def test_the_old_token_format_is_refused_with_a_hint(managed: Callable[..., Flask]) -> None:
    client = managed(SECRET_A).test_client()
    claims = {"sub": "shop-s", "kh": hash_key(KEY_S)[:16], "exp": 4_000_000_000}
    # Refused as a token (get a new one), not as a wrong API key.
    assert_token_refused(send_with(client, old_format_token(SECRET_A.encode(), claims)))


def test_tokens_and_source_tags_are_signed_under_separate_salts(managed: Callable[..., Flask]) -> None:
    """A webhook tag never verifies as a token, nor a token's signature as a webhook tag."""
    client = managed(SECRET_A).test_client()
    key = SECRET_A.encode()
    claims = {"sub": "shop-s", "kh": key_proof(key, hash_key(KEY_S))}
    assert app.access.tokens.TOKEN_SALT != app.access.tokens.SOURCE_SALT
    assert_token_refused(send_with(client, itsdangerous_token(key, claims, app.access.tokens.SOURCE_SALT)))
    assert sandbox_send(client, itsdangerous_token(key, claims, app.access.tokens.TOKEN_SALT)) == 200

    def tag(salt: str) -> str:
        return Signer(key, salt=salt, digest_method=hashlib.sha256).get_signature("mobsms:shop-s").decode()

    base = "https://bridge.example.test/webhooks/mobsms/shop-s?key="
    assert post_source(client, base + tag(app.access.tokens.TOKEN_SALT)) == 403
    assert post_source(client, base + tag(app.access.tokens.SOURCE_SALT)) == 200


def test_a_token_carries_neither_the_key_nor_its_hash(managed: Callable[..., Flask]) -> None:
    client = managed(SECRET_A).test_client()
    token = token_for(client, "shop-a", KEY_A)
    claims = URLSafeTimedSerializer(b"unused").load_payload(
        token.removeprefix("sbt2.").rsplit(".", 2)[0].encode()
    )
    assert set(claims) == {"sub", "kh"}
    assert claims["sub"] == "shop-a"
    assert claims["kh"] not in (KEY_A, hash_key(KEY_A))
    assert hash_key(KEY_A)[:16] not in token
    assert KEY_A not in token


def test_a_file_system_without_hard_links_still_gets_its_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some bind mounts, 9p and SMB refuse link(): the secret is made by a rename, whole, once."""
    import errno
    import os

    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(app.access.tokens.os, "link", no_links)
    first = app.access.tokens.stored_secret(tmp_path)
    assert len(first) >= 32
    assert app.access.tokens.stored_secret(tmp_path) == first
    assert os.stat(tmp_path / app.access.tokens.SECRET_FILE).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [app.access.tokens.SECRET_FILE]  # no temporary file left
