"""The README's examples work as written (with the host pointed at a test bridge)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from app.config import Settings, env_name
from tests.conftest import LiveBridge

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
HOST = "http://localhost:8080"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def curl_commands() -> list[str]:
    commands = []
    for block in code_blocks("sh"):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]
    return commands


def test_the_readme_has_the_examples_it_promises() -> None:
    commands = curl_commands()
    assert sum("/sendsms" in c for c in commands) == 3
    assert sum("/sandbox/" in c for c in commands) == 4
    assert any("nusoap_client" in block for block in code_blocks("php"))
    assert any("requests.post" in block for block in code_blocks("python"))


def test_curl_examples_work_in_order(live_bridges: dict[str, LiveBridge]) -> None:
    url = live_bridges["sandbox"].url
    sent_id = None
    for command in curl_commands():
        command = command.split(" #")[0].replace(HOST, url).replace("THE_ID_FROM_SENDSMS", str(sent_id))
        argv = [*shlex.split(command), "--silent", "--show-error", "--fail-with-body"]
        answer = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert answer.returncode == 0, (command, answer.stdout, answer.stderr)
        result = json.loads(answer.stdout)["result"]
        assert str(result["error"]) == "0", (command, result)
        if "/sendsms" in command:
            assert result["sent"] == "1"
            sent_id = result["id"]
        if "/sandbox/fail" in command:
            assert result["status"] == "failed"


def test_python_example_sends(live_bridges: dict[str, LiveBridge], capsys: pytest.CaptureFixture) -> None:
    [block] = code_blocks("python")
    exec(compile(block.replace(HOST, live_bridges["sandbox"].url), "README.md", "exec"), {})  # noqa: S102
    sent, ident = capsys.readouterr().out.split()
    assert sent == "1"
    assert re.fullmatch(r"[0-9a-f]{40}", ident)


def test_every_setting_is_documented() -> None:
    missing = [
        env_name(f.name) for f in dataclasses.fields(Settings) if f"`{env_name(f.name)}`" not in README
    ]
    assert missing == []
