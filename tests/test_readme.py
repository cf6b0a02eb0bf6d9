"""The README's examples work as written (with the host pointed at a test bridge)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

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
    assert len(curl_commands()) == 3
    assert any("nusoap_client" in block for block in code_blocks("php"))
    assert any("requests.post" in block for block in code_blocks("python"))


@pytest.mark.parametrize("command", curl_commands())
def test_curl_examples_send(command: str, live_bridges: dict[str, LiveBridge]) -> None:
    url = live_bridges["sandbox"].url
    argv = shlex.split(command.split("#")[0].replace(HOST, url))
    answer = subprocess.run([*argv, "--silent", "--show-error"], capture_output=True, text=True, check=True)
    assert json.loads(answer.stdout)["result"]["sent"] == "1"


def test_python_example_sends(live_bridges: dict[str, LiveBridge], capsys: pytest.CaptureFixture) -> None:
    [block] = code_blocks("python")
    exec(compile(block.replace(HOST, live_bridges["sandbox"].url), "README.md", "exec"), {})  # noqa: S102
    sent, ident = capsys.readouterr().out.split()
    assert sent == "1"
    assert re.fullmatch(r"[0-9a-f]{40}", ident)
