"""The test suite's own layout: no test module imports another, and the harness holds no tests.

What two test modules share lives in tests/harness/ (helpers, fakes) and tests/conftest.py (fixtures);
a test module that imports another drags that module's tests, fixtures and state into its own, and
pytest asks that conftest.py be loaded by pytest alone. Every import counts: at the top of a file,
inside a function, absolute or relative.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def is_test_module(path: Path) -> bool:
    """Whether pytest collects `path` as a test module (python_files) or loads it as a conftest."""
    return path.name.startswith("test_") or path.name == "conftest.py"


def module_path(name: str) -> Path | None:
    """Return the file of module `name` under the repository, or None when it is no module of ours."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_of(path: Path) -> list[str]:
    """The dotted package `path` is in, as parts: tests/harness/soap.py is in tests.harness."""
    return list(path.relative_to(ROOT).parent.parts)


def imported_modules(source: str, path: Path) -> list[tuple[int, str]]:
    """Return (line, module name) for every module `source` (the text of `path`) may import.

    `from a.b import c` may import a.b and a.b.c; relative imports are resolved against `path`'s package.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package_of(path)
                parts = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def imports_of_test_modules(path: Path, source: str | None = None) -> list[str]:
    """Return "line: module" for each test module or conftest that `path` imports."""
    text = path.read_text() if source is None else source
    hits = []
    for line, name in imported_modules(text, path):
        target = module_path(name)
        if target is not None and target != path and is_test_module(target):
            hits.append(f"{line}: {name}")
    return hits


@pytest.mark.parametrize(
    "path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS)).replace("/", ".")
)
def test_no_module_of_the_suite_imports_a_test_module_or_a_conftest(path: Path) -> None:
    hits = imports_of_test_modules(path)
    assert not hits, (
        f"{path.relative_to(ROOT)} imports test modules: {hits}; move what they share to tests/harness/ "
        "(helpers) or tests/conftest.py (fixtures)"
    )


def test_the_harness_holds_no_test_module() -> None:
    """pytest collects test_*.py wherever it is: a test module inside the harness would be run as a test."""
    assert [p for p in (TESTS / "harness").rglob("*.py") if is_test_module(p)] == []


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("tests/test_x.py", "from tests.test_soap import envelope\n"),
        ("tests/test_x.py", "import tests.test_webhooks\n"),
        ("tests/test_x.py", "from tests import test_soap\n"),
        ("tests/test_x.py", "from .test_soap import envelope\n"),
        ("tests/test_x.py", "from . import test_soap\n"),
        ("tests/harness/x.py", "from ..test_soap import envelope\n"),
        ("tests/test_x.py", "def f():\n    from tests.test_gunicorn import Gunicorn\n"),
        ("tests/test_x.py", "from tests.conftest import GOOD_KEY\n"),
    ],
)
def test_the_check_sees_each_way_of_importing_a_test_module(where: str, source: str) -> None:
    assert imports_of_test_modules(ROOT / where, source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from tests.harness.soap import envelope\n",
        "from tests.harness import soap\n",
        "import tests.harness.fakes.mobsms\n",
        "from app.fronts import soap\n",
        "import pytest\n",
    ],
)
def test_the_check_lets_the_harness_and_everything_else_be_imported(source: str) -> None:
    assert imports_of_test_modules(ROOT / "tests" / "test_x.py", source) == []
