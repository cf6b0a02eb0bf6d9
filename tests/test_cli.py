"""The `smsbridge` command (app/cli.py): its arguments through click's CliRunner, and the installed script
run for real: check-config's one line, and a key added, rotated and revoked on a bridge it serves."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from app.access.tokens import TokenSigner
from app.backends import webhook_source_names
from app.cli import cli
from app.state.sqlite.outbox import SqliteOutbox as EventStore
from tests.harness.bridge import LiveBridge
from tests.harness.fakes.mobsms import DEFAULT_KEY, FakeMobsms

ROOT = Path(__file__).resolve().parents[1]
#: the console script pyproject.toml declares, as installed beside this Python
SMSBRIDGE = Path(sys.executable).parent / "smsbridge"
ALICE = "+32470000001"

CLIENTS_FILE = """\
# The bridge's clients: keys are kept as their SHA-256 only.
[defaults]
rate_limit = "600/minute"   # for everyone without their own

# The shop, on the sandbox while it is being built
[clients.shop]
key_sha256 = "{shop}"  # the 2026 key
backend = "sandbox"
rate_limit = "600/minute"
"""
SHOP_KEY = "the-shop-key-that-the-test-knows-already-0001"
SOURCES = webhook_source_names()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(CLIENTS_FILE.format(shop=digest(SHOP_KEY)))
    path.chmod(0o600)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the command in this process, with no SMSBRIDGE_* variable but those in `env`."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SMSBRIDGE_")}
    return CliRunner().invoke(cli, list(args), env={**unset, **(env or {})}, catch_exceptions=False)


def clients(path: Path, *args: str) -> Result:
    return run("clients", "--file", str(path), *args)


def one_line_error(result: Result) -> str:
    """Assert that a command failed with one line on stderr and nothing else; return the line."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("smsbridge: "), result.stderr
    return lines[0]


# --- arguments ------------------------------------------------------------------------------------


def test_every_command_of_the_issue_is_there() -> None:
    assert set(cli.commands) == {"serve", "check-config", "clients", "webhooks", "sandbox"}
    groups = {name: set(getattr(cli.commands[name], "commands", {})) for name in cli.commands}
    assert groups["clients"] == {"add", "rotate", "revoke", "list"}
    assert groups["webhooks"] == {"dead", "replay", "purge-dead", "urls", "register-mobsms"}
    assert groups["sandbox"] == {"inbound", "fail"}
    assert run("--help").exit_code == 0
    unknown = run("clients", "--file", "x.toml", "remove", "shop")
    assert unknown.exit_code == 2 and "No such command 'remove'" in unknown.stderr


def test_the_clients_commands_need_a_file() -> None:
    assert "--file PATH, or set SMSBRIDGE_CLIENTS_FILE" in one_line_error(run("clients", "list"))


# --- clients --------------------------------------------------------------------------------------


def test_add_prints_the_key_once_and_stores_only_its_hash(clients_file: Path) -> None:
    added = clients(clients_file, "add", "acme-shop", "--backend", "sandbox", "--rate-limit", "10/minute")

    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert len(key) >= 43 and added.stdout == key + "\n"  # the key alone on stdout, for $(...)
    assert added.output.count(key) == 1  # stdout and stderr together: printed once
    text = clients_file.read_text()
    assert key not in text
    assert f'key_sha256 = ["{digest(key)}"]' in text
    listed = clients(clients_file, "list")
    assert listed.exit_code == 0
    assert key not in listed.output and digest(key) not in listed.output
    assert listed.stdout.splitlines()[1:] == [
        f"shop       sandbox  600/minute  {digest(SHOP_KEY)[:12]}",
        f"acme-shop  sandbox  10/minute   {digest(key)[:12]}",
    ]


def test_edits_keep_the_files_comments_and_layout(clients_file: Path) -> None:
    original = clients_file.read_text()

    key = clients(clients_file, "add", "acme", "--backend", "mobsms", "--upstream-key-env", "ACME_KEY").stdout
    added = clients_file.read_text()
    assert added.startswith(original)  # the new table goes after everything that was there
    assert added[len(original) :] == (
        f'\n[clients.acme]\nkey_sha256 = ["{digest(key.strip())}"]\nbackend = "mobsms"\n'
        'upstream_key_env = "ACME_KEY"\n'
    )

    new_key = clients(clients_file, "rotate", "shop").stdout.strip()
    rotated = clients_file.read_text()
    assert f'key_sha256 = ["{digest(SHOP_KEY)}", "{digest(new_key)}"]  # the 2026 key' in rotated
    assert (
        rotated.replace(f', "{digest(new_key)}"]', "]").replace(
            f'["{digest(SHOP_KEY)}"]', f'"{digest(SHOP_KEY)}"'
        )
        == added
    )

    assert clients(clients_file, "revoke", "acme", "--all").exit_code == 0
    assert clients(clients_file, "revoke", "shop", "--hash", digest(new_key)[:8]).exit_code == 0
    assert clients_file.read_text() == original.replace(f'"{digest(SHOP_KEY)}"', f'["{digest(SHOP_KEY)}"]')


def test_the_file_is_replaced_whole_keeping_its_mode(tmp_path: Path, clients_file: Path) -> None:
    new_file = tmp_path / "new" / "clients.toml"
    new_file.parent.mkdir()
    assert clients(new_file, "add", "first", "--backend", "sandbox").exit_code == 0
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
    assert new_file.read_text().startswith("[clients.first]\n")

    inode = clients_file.stat().st_ino
    assert clients(clients_file, "rotate", "shop").exit_code == 0
    assert stat.S_IMODE(clients_file.stat().st_mode) == 0o600
    assert (
        clients_file.stat().st_ino != inode
    )  # a new file renamed over the old one, never rewritten in place
    clients_file.chmod(0o640)
    assert clients(clients_file, "rotate", "shop").exit_code == 0
    assert stat.S_IMODE(clients_file.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients.toml", "new"]  # no temporary file left


def test_a_symbolic_link_stays_one(tmp_path: Path, clients_file: Path) -> None:
    link = tmp_path / "current.toml"
    link.symlink_to(clients_file.name)
    assert clients(link, "rotate", "shop").exit_code == 0
    assert link.is_symlink() and clients_file.read_text().count('", "') == 1


def test_revoke_one_key_or_the_client(clients_file: Path) -> None:
    second = clients(clients_file, "rotate", "shop").stdout.strip()
    third = clients(clients_file, "rotate", "shop").stdout.strip()

    assert "no key whose hash starts with" in one_line_error(
        clients(clients_file, "revoke", "shop", "--hash", "0" * 12)
    )
    assert "at least 6 hex digits" in one_line_error(clients(clients_file, "revoke", "shop", "--hash", "abc"))
    assert "one of them" in one_line_error(clients(clients_file, "revoke", "shop"))
    assert "not both" in one_line_error(clients(clients_file, "revoke", "shop", "--all", "--hash", "abcdef"))
    revoked = clients(clients_file, "revoke", "shop", "--hash", digest(second)[:6].upper())
    assert revoked.exit_code == 0 and f"key {digest(second)[:12]} of client shop revoked" in revoked.stderr
    assert clients(clients_file, "revoke", "shop", "--hash", digest(SHOP_KEY)[:10]).exit_code == 0
    assert digest(third) in clients_file.read_text() and digest(SHOP_KEY) not in clients_file.read_text()
    last = one_line_error(clients(clients_file, "revoke", "shop", "--hash", digest(third)[:10]))
    assert "only key: `--all` removes the client" in last

    assert clients(clients_file, "revoke", "shop", "--all").exit_code == 0
    assert "clients.shop" not in clients_file.read_text()
    assert "no client shop" in one_line_error(clients(clients_file, "rotate", "shop"))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["add", "shop", "--backend", "sandbox"], "client shop exists"),
        (["add", "new one", "--backend", "sandbox"], "a client name is 1 to 64 letters"),
        (["add", "acme", "--backend", "twilio"], "--backend 'twilio': expected one of sandbox"),
        (["add", "acme", "--backend", "mobsms"], "--upstream-key-env VAR is needed"),
        (
            ["add", "acme", "--backend", "mobsms", "--upstream-key-env", "SMSBRIDGE_KEY"],
            "choose another prefix",
        ),
        (["add", "acme", "--backend", "mobsms", "--upstream-key-env", "A-B"], "an environment variable name"),
        (["add", "acme", "--backend", "sandbox", "--rate-limit", "lots"], "expected a rate limit"),
    ],
)
def test_wrong_arguments_change_nothing(clients_file: Path, args: list[str], said: str) -> None:
    before = clients_file.read_bytes()
    assert said in one_line_error(clients(clients_file, *args))
    assert clients_file.read_bytes() == before


def test_an_edit_the_bridge_would_refuse_is_not_written(clients_file: Path) -> None:
    clients_file.write_text(
        clients_file.read_text() + '\n[clients.old]\nkey_sha256 = "nope"\nbackend = "sandbox"\n'
    )
    before = clients_file.read_bytes()
    line = one_line_error(clients(clients_file, "add", "acme", "--backend", "sandbox"))
    assert "not written, the bridge would refuse it" in line and "[clients.old] key_sha256" in line
    assert clients_file.read_bytes() == before

    clients_file.write_text("[clients.shop\n")
    assert "is not valid TOML" in one_line_error(clients(clients_file, "rotate", "shop"))
    assert "is not valid TOML" in one_line_error(clients(clients_file, "list"))


def test_a_variable_named_need_not_be_set_where_the_cli_runs(clients_file: Path) -> None:
    added = clients(
        clients_file, "add", "acme", "--backend", "mobsms", "--upstream-key-env", "ACME_CLI_TEST_KEY"
    )
    assert added.exit_code == 0
    assert "ACME_CLI_TEST_KEY is not set here" in added.stderr
    assert "ACME_CLI_TEST_KEY" not in os.environ  # the placeholder the check used is gone
    rotated = clients(clients_file, "rotate", "acme")  # the file, valid but for the variable, is still edited
    assert rotated.exit_code == 0


def test_rotate_and_revoke_check_key_sha256(clients_file: Path) -> None:
    text = clients_file.read_text()
    # Files a bridge would refuse: rotate makes the first loadable; the second's edits are refused.
    clients_file.write_text(text + '\n[clients.none]\nkey_sha256 = []\nbackend = "sandbox"\n')
    rotated = clients(clients_file, "rotate", "none")
    assert rotated.exit_code == 0, rotated.output
    key = rotated.stdout.strip()
    assert digest(key) in clients_file.read_text()
    assert "revoke" not in rotated.stderr

    clients_file.write_text(text + '\n[clients.odd]\nkey_sha256 = 5\nbackend = "sandbox"\n')
    before = clients_file.read_text()
    said = "key_sha256 must be one or more SHA-256 hex digests"
    assert said in one_line_error(clients(clients_file, "rotate", "odd"))
    assert said in one_line_error(clients(clients_file, "revoke", "odd", "--hash", "abcdef"))
    assert clients_file.read_text() == before
    removed = clients(clients_file, "revoke", "odd", "--all")
    assert removed.exit_code == 0 and "client odd removed" in removed.stderr
    assert clients_file.read_text() == text


@pytest.mark.parametrize(
    "layout",
    [
        '[clients]\nb = {{key_sha256 = ["{h}"], backend = "sandbox"}}\n',
        'clients.b = {{key_sha256 = ["{h}"], backend = "sandbox"}}\n',
        'clients = {{b = {{key_sha256 = ["{h}"], backend = "sandbox"}}}}\n',
    ],
)
def test_inline_tables_are_clients_too(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(layout.format(h=digest("b-key")))
    rotated = clients(path, "rotate", "b")
    assert rotated.exit_code == 0, rotated.output
    new = digest(rotated.stdout.strip())
    assert clients(path, "revoke", "b", "--hash", digest("b-key")[:8]).exit_code == 0
    added = clients(path, "add", "c", "--backend", "sandbox")
    assert added.exit_code == 0, added.output
    document = tomllib.loads(path.read_text())["clients"]
    assert document["b"]["key_sha256"] == [new]
    assert document["c"]["key_sha256"] == [digest(added.stdout.strip())]
    assert clients(path, "revoke", "c", "--all").exit_code == 0
    assert set(tomllib.loads(path.read_text())["clients"]) == {"b"}


# --- webhooks -------------------------------------------------------------------------------------


def dead_event(data_dir: Path) -> str:
    with closing(EventStore(data_dir)) as store:
        event_id = store.add("default", "sms.received", {"guid": "g1", "from": ALICE, "message": "hi"})
        claimed = store.claim()
        assert claimed is not None
        store.failed(claimed, "HTTP 503", retry_window=0.0)
    return event_id


def test_webhooks_dead_replay_and_purge(tmp_path: Path) -> None:
    env = {"SMSBRIDGE_DATA_DIR": str(tmp_path)}
    event_id = dead_event(tmp_path)
    assert run("webhooks", "dead", env=env).stdout == f"{event_id} sms.received default 1 HTTP 503\n"
    unknown = str(uuid.uuid4())
    assert (
        one_line_error(run("webhooks", "replay", unknown, env=env)) == f"smsbridge: no dead event {unknown}"
    )
    assert run("webhooks", "replay", event_id, env=env).exit_code == 0
    assert run("webhooks", "dead", env=env).stdout == ""
    assert run("webhooks", "purge-dead", env=env).stdout == "0 dead events purged\n"
    bad = one_line_error(run("webhooks", "dead", env={**env, "SMSBRIDGE_WORKERZ": "2"}))
    assert "did you mean SMSBRIDGE_WORKERS?" in bad


def test_python_m_app_cli_is_the_cli_where_no_script_is_installed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSBRIDGE_")}
    env["SMSBRIDGE_DATA_DIR"] = str(tmp_path)

    def python_m(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    urls = python_m("app.cli", "webhooks", "urls", "default")
    assert urls.returncode == 0, urls.stderr
    assert urls.stdout == run("webhooks", "urls", "default", env={"SMSBRIDGE_DATA_DIR": str(tmp_path)}).stdout
    assert [line.split(": ")[0] for line in urls.stdout.splitlines()] == ["mobsms", "smsmobileapi"]
    refused = python_m("app.cli", "webhooks", "register-mobsms", "default")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "smsbridge: in passthrough mode, give mobsms the URLs from `urls default` yourself"
    )
    assert python_m("app.cli", "webhooks", "purge-dead").stdout == "0 dead events purged\n"
    assert python_m("app.cli", "webhooks", "nonsense").returncode == 2


def test_urls_and_register_mobsms_make_no_runtime(tmp_path: Path, fake_mobsms: FakeMobsms) -> None:
    """No deliverer here (an event left pending stays so), no variable of another client needed, no log."""
    path = tmp_path / "clients.toml"
    path.write_text(
        f'[clients.acme]\nkey_sha256 = "{digest("acme-key")}"\nbackend = "mobsms"\n'
        f'upstream_key = "{DEFAULT_KEY}"\n'
        f'[clients.other]\nkey_sha256 = "{digest("other")}"\nbackend = "mobsms"\n'
        'upstream_key_env = "CLI_TEST_VARIABLE_NOT_SET"\n'
    )
    data_dir = tmp_path / "data"
    with closing(EventStore(data_dir)) as store:
        store.add("acme", "sms.received", {"guid": "g1"})
    env = {
        "SMSBRIDGE_DATA_DIR": str(data_dir),
        "SMSBRIDGE_CLIENTS_FILE": str(path),
        "SMSBRIDGE_MOBSMS_URL": fake_mobsms.url,
    }

    def deliverers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "webhook-deliverer"}

    before = deliverers()

    urls = run("webhooks", "urls", "acme", env=env)
    # register-mobsms reads the clients as the bridge does (Access): every variable they name is set.
    registered = run("webhooks", "register-mobsms", "acme", env={**env, "CLI_TEST_VARIABLE_NOT_SET": "k"})

    assert (urls.exit_code, urls.stderr) == (0, ""), urls.output
    tokens = TokenSigner.from_settings([], data_dir, 3600)
    expected = {
        s: f"http://localhost:8080/webhooks/{s}/acme?key={tokens.label(f'{s}:acme')}" for s in SOURCES
    }
    assert urls.stdout == "".join(f"{s}: {u}\n" for s, u in expected.items())
    assert registered.exit_code == 0, registered.output
    assert registered.stdout == f"{ {'status': 200, 'url': expected['mobsms']} }\n"
    assert fake_mobsms.webhooks == {
        "webhook_url_incoming": expected["mobsms"],
        "webhook_url_status": expected["mobsms"],
    }
    assert deliverers() == before, "the CLI started a webhook deliverer"
    with closing(EventStore(data_dir)) as store:
        assert store.counts() == {"pending": 1}
        claimed = store.claim()
        assert claimed is not None and claimed["attempts"] == 1, "the CLI claimed the event"


def test_urls_refuses_a_client_the_bridge_does_not_have(tmp_path: Path, clients_file: Path) -> None:
    managed = {"SMSBRIDGE_DATA_DIR": str(tmp_path), "SMSBRIDGE_CLIENTS_FILE": str(clients_file)}
    assert run("webhooks", "urls", "shop", env=managed).exit_code == 0
    assert one_line_error(run("webhooks", "urls", "nobody", env=managed)) == (
        f"smsbridge: {clients_file}: there is no client nobody (smsbridge clients list shows them)"
    )
    assert "there is no client shop" in one_line_error(
        run("webhooks", "urls", "shop", env={"SMSBRIDGE_DATA_DIR": str(tmp_path)})
    )


def test_an_unusable_data_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    env = {"SMSBRIDGE_DATA_DIR": str(tmp_path / "a-file" / "data")}
    for args in (["dead"], ["replay", str(uuid.uuid4())], ["purge-dead"]):
        said = one_line_error(run("webhooks", *args, env=env))
        assert said.startswith("smsbridge: the webhook event store in "), said


# --- sandbox --------------------------------------------------------------------------------------


def test_sandbox_inbound_and_fail_go_through_a_running_bridge(live_bridges: dict[str, LiveBridge]) -> None:
    url = live_bridges["sandbox"].url
    key = f"cli-{uuid.uuid4()}"  # an account of its own
    received = run(
        "sandbox", "inbound", "--url", url, "--key", key, "--number", ALICE, "--message", "Yes, see you"
    )
    assert received.exit_code == 0, received.output
    listed = requests.get(f"{url}/getsms/", params={"apikey": key}, timeout=10).json()["result"]["sms"]
    assert [(r["number"], r["message"]) for r in listed] == [(ALICE, "Yes, see you")]
    assert key not in received.output

    sent = requests.post(
        f"{url}/sendsms/", data={"apikey": key, "recipients": ALICE, "message": "Hi"}, timeout=10
    ).json()["result"]
    failed = run("sandbox", "fail", "--url", url, "--key", key, "--guid", sent["id"], "--error", "no signal")
    assert failed.exit_code == 0, failed.output
    assert '"status": "failed"' in failed.stdout
    log = requests.get(f"{url}/log/sent/sms/", params={"apikey": key, "error_mobile": "1"}, timeout=10).json()
    assert [e["send_from_mobile_erreur"] for e in log["result"]["sms"]] == ["no signal"]

    unknown = run("sandbox", "fail", "--url", url, "--key", key, "--guid", "f" * 40)
    assert "the bridge refused /sandbox/fail" in one_line_error(unknown)
    elsewhere = run(
        "sandbox",
        "inbound",
        "--url",
        live_bridges["mobsms"].url,
        "--key",
        "k",
        "--number",
        ALICE,
        "--message",
        "x",
    )
    assert "(is its backend the sandbox?)" in one_line_error(elsewhere)


def test_sandbox_says_when_no_bridge_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        line = one_line_error(run("sandbox", "fail", "--url", url, "--key", "k", "--guid", "g"))
    assert line == f"smsbridge: {url} cannot be reached (ConnectionError): is the bridge running?"


# --- the installed script -------------------------------------------------------------------------


def script(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SMSBRIDGE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def clean_env(**settings: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SMSBRIDGE_")}, **settings}


def test_check_config_says_ok_in_one_line(tmp_path: Path, clients_file: Path) -> None:
    env = clean_env(SMSBRIDGE_DATA_DIR=str(tmp_path / "data"), SMSBRIDGE_CLIENTS_FILE=str(clients_file))
    done = script("check-config", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"smsbridge: configuration OK: backend sandbox, managed, 1 clients, 0 webhook targets, "
        f"data in {tmp_path / 'data'}, {len(os.sched_getaffinity(0))} workers, public URL http://localhost:8080"
    ]
    assert not (tmp_path / "data").exists()  # checked, nothing made


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"SMSBRIDGE_BACKEND": "twilio"}, "SMSBRIDGE_BACKEND='twilio': expected one of"),
        ({"SMSBRIDGE_RATELIMIT_STORAG": "redis://x"}, "did you mean SMSBRIDGE_RATELIMIT_STORAGE?"),
        (
            {
                "SMSBRIDGE_WEBHOOK_URL": "http://user:pw@receiver.example/hook",
                "SMSBRIDGE_WEBHOOK_SECRET": "s" * 32,
            },
            "SMSBRIDGE_WEBHOOK_URL",
        ),
        (
            {"SMSBRIDGE_UPSTREAM_PROXY": "socks5://user:hunter2@proxy:1080"},
            "SMSBRIDGE_UPSTREAM_PROXY: expected",
        ),
        ({"SMSBRIDGE_CLIENTS_FILE": "{clients_file}", "BROKEN": "yes"}, "SMSBRIDGE_CLIENTS_FILE: "),
    ],
)
def test_an_invalid_configuration_is_one_line_and_no_traceback(
    tmp_path: Path, clients_file: Path, settings: dict[str, str], said: str
) -> None:
    if "BROKEN" in settings:
        clients_file.write_text(clients_file.read_text().replace('backend = "sandbox"', 'backend = "twilio"'))
    env = clean_env(
        SMSBRIDGE_DATA_DIR=str(tmp_path / "data"),
        **{k: v.format(clients_file=clients_file) for k, v in settings.items()},
    )
    done = script("check-config", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("smsbridge: ") and said in line, line
    assert "hunter2" not in line and ":pw@" not in line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`smsbridge serve --bind ...` in a child process, from a directory outside the checkout."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "serve.log"
        self._out = self.log.open("wb")
        # --bind passed on to gunicorn: it is the only address the bridge listens on.
        self.process = subprocess.Popen(
            [str(SMSBRIDGE), "serve", "--bind", f"127.0.0.1:{port}"],
            cwd=directory,
            env={**env, "SMSBRIDGE_PUBLIC_URL": self.url, "SMSBRIDGE_WORKERS": "2"},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        try:
            eventually(self._healthy, "the bridge serving")
        except BaseException:
            self.process.kill()
            self.process.wait()
            self._out.close()
            raise

    def _healthy(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return requests.get(self.url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def send(self, key: str) -> int:
        """Send one SMS with `key` (in the body: never in a URL); return the answer's HTTP status."""
        answer = requests.post(
            self.url + "/sendsms/", data={"apikey": key, "recipients": ALICE, "message": "Hi"}, timeout=10
        )
        with answer:
            return answer.status_code

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=60)
        self._out.close()
        return self.log.read_text()


def eventually(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Wait for `check` (the bridge reloads its clients file within a second; the box may be busy)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


@pytest.fixture
def served(tmp_path: Path, clients_file: Path) -> Iterator[Served]:
    bridge = Served(tmp_path, clean_env(SMSBRIDGE_DATA_DIR="data", SMSBRIDGE_CLIENTS_FILE=str(clients_file)))
    yield bridge
    if bridge.process.poll() is None:
        bridge.stop()


def test_keys_added_rotated_and_revoked_by_the_script_work_on_a_served_bridge(
    served: Served, clients_file: Path, tmp_path: Path
) -> None:
    env = clean_env(SMSBRIDGE_CLIENTS_FILE=str(clients_file))

    def answers(expected: dict[str, int]) -> None:
        """Wait until each key gets its status, on several sends in a row: each worker reloads alone."""
        eventually(
            lambda: all(served.send(key) == status for _ in range(4) for key, status in expected.items()),
            f"the keys answered {sorted(expected.values())}",
        )

    assert served.send(SHOP_KEY) == 200
    assert (tmp_path / "data" / "sandbox.sqlite3").exists()  # served from tmp_path: its relative data dir

    added = script("clients", "add", "newcomer", "--backend", "sandbox", env=env, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    answers({key: 200, SHOP_KEY: 200})

    rotated = script("clients", "rotate", "newcomer", env=env, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    answers({new_key: 200, key: 200})  # the old one too, until revoked

    revoked = script("clients", "revoke", "newcomer", "--hash", digest(key)[:12], env=env, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    answers({key: 403, new_key: 200})

    assert script("clients", "revoke", "newcomer", "--all", env=env, cwd=tmp_path).returncode == 0
    answers({new_key: 403, SHOP_KEY: 200})

    log = served.stop()
    assert served.process.returncode == 0, log
    assert "clients file" in log and "reloaded" in log
    assert key not in log and new_key not in log and SHOP_KEY not in log
