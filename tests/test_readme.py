"""The README's and docs/'s examples work as written (with the host pointed at a test bridge), and their
links, anchors and settings tables are true to the repository."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
from functools import cache
from itertools import pairwise
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from app.config import OTHER_VARIABLES, Settings, env_name
from tests.harness.bridge import LiveBridge

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
#: the user's guide first, then the reference: curl examples run in this order (the sandbox console's
#: examples in docs/backends.md use the id the README's first send got)
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
HOST = "http://localhost:8080"
#: a name the docs show only as the misspelling smsbridge refuses at start-up
MISSPELT_EXAMPLE = "SMSBRIDGE_RATE_LIMIT_STORAGE"

MARKDOWN = MarkdownIt("commonmark").enable("table")


@cache
def tokens(path: Path) -> list[Token]:
    return MARKDOWN.parse(path.read_text())


def code_blocks(language: str, paths: list[Path] = DOCUMENTS) -> list[str]:
    return [t.content for path in paths for t in tokens(path) if t.type == "fence" and t.info == language]


def curl_commands(paths: list[Path] = DOCUMENTS) -> list[str]:
    commands = []
    for block in code_blocks("sh", paths):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]
    return commands


def inline_text(inline: Token) -> str:
    """Return a heading's or a link's text as GitHub reads it for a slug: text and code, no markup."""
    return "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))


def slug(text: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    kept = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file, a repeated one with GitHub's -1, -2... suffix."""
    seen: dict[str, int] = {}
    found = set()
    stream = tokens(path)
    for opening, inline in pairwise(stream):
        if opening.type != "heading_open":
            continue
        base = slug(inline_text(inline))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> list[str]:
    return [
        str(child.attrGet("href"))
        for t in tokens(path)
        if t.type == "inline"
        for child in t.children or []
        if child.type == "link_open"
    ]


def table_rows(path: Path) -> dict[str, list[str]]:
    """The settings tables' rows of a file: variable name -> the text of each cell, links included."""
    rows: dict[str, list[str]] = {}
    stream = tokens(path)
    for i, t in enumerate(stream):
        if t.type != "tr_open" or stream[i + 1].type != "td_open":
            continue
        cells = []
        for cell in stream[i + 1 :]:
            if cell.type == "tr_close":
                break
            if cell.type == "inline":
                cells.append(cell.content)
        name = cells[0].strip("`")
        if name.startswith("SMSBRIDGE_"):
            assert name not in rows, f"{path.name}: {name} has two rows"
            rows[name] = cells
    return rows


def setting_names() -> set[str]:
    return {env_name(f.name) for f in dataclasses.fields(Settings)}


def test_the_docs_have_the_examples_they_promise() -> None:
    assert sum("/sendsms" in c for c in curl_commands([README])) == 3
    assert sum("/sandbox/" in c for c in curl_commands([ROOT / "docs" / "backends.md"])) == 7
    assert any("nusoap_client" in block for block in code_blocks("php", [README]))
    assert any("requests.post" in block for block in code_blocks("python", [README]))


def test_the_two_commands_are_there_and_runnable() -> None:
    first = code_blocks("sh", [README])[0]
    assert [line.split()[0] for line in first.splitlines()] == ["scripts/run", "scripts/test"]
    for script in ("scripts/run", "scripts/test"):
        assert os.access(ROOT / script, os.X_OK), script


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


def test_every_setting_is_in_the_configuration_reference() -> None:
    documented = set(table_rows(CONFIGURATION))
    assert sorted(setting_names() - documented) == []
    assert sorted(documented - setting_names() - OTHER_VARIABLES) == []


def test_the_readme_settings_are_the_reference_rows() -> None:
    reference = table_rows(CONFIGURATION)
    readme = table_rows(README)
    assert readme, "the README's Configure section lists the essential settings"
    for name, cells in readme.items():
        assert cells == reference.get(name), f"README's row for {name} differs from docs/configuration.md"


def test_every_smsbridge_name_in_the_docs_is_read_by_smsbridge() -> None:
    known = setting_names() | OTHER_VARIABLES
    for path in DOCUMENTS:
        named = set(re.findall(r"SMSBRIDGE_[A-Z][A-Z0-9_]*", path.read_text()))
        assert sorted(named - known - {MISSPELT_EXAMPLE}) == [], path.name
    everywhere = "".join(path.read_text() for path in DOCUMENTS)
    assert sorted(name for name in OTHER_VARIABLES if name not in everywhere) == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_anchors_resolve(path: Path) -> None:
    broken = []
    for href in links(path):
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:
            continue
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not target.is_relative_to(ROOT) or not target.exists():
            broken.append(f"{href}: no such file")
        elif parts.fragment and (target.suffix != ".md" or unquote(parts.fragment) not in anchors(target)):
            broken.append(f"{href}: no such heading in {target.relative_to(ROOT)}")
    assert broken == []


def test_the_anchor_rule_is_githubs() -> None:
    assert slug("Webhooks: received SMS and delivery status") == "webhooks-received-sms-and-delivery-status"
    assert slug("The data directory (SMSBRIDGE_DATA_DIR)") == "the-data-directory-smsbridge_data_dir"
    assert slug("Every endpoint, per backend") == "every-endpoint-per-backend"
    assert "the-data-directory-smsbridge_data_dir" in anchors(CONFIGURATION)
