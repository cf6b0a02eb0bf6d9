"""The test suite's own layout: tests mirror app/, no test module imports another, the harness holds no tests.

A test module lives at the top of tests/ (what is about the whole: the README, the CLI, gunicorn, the
modules at the top of app/) or in the folder mirroring the app/ package it tests (tests/fronts/smsmobileapi/
for app/fronts/smsmobileapi/); the harness's own tests are in tests/harness_selftest/. Every folder is a
package, so that two test modules may share a name and `tests.harness` imports the same from any of them.

What two test modules share lives in tests/harness/ (helpers, fakes) and the conftest.py files (fixtures);
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
APP = ROOT / "app"
#: Folders of tests/ that mirror no package of app/: the harness, and the harness's own tests.
OWN_FOLDERS = ("harness", "harness_selftest")


def is_test_module(path: Path) -> bool:
    """Whether pytest collects `path` as a test module (python_files) or loads it as a conftest."""
    return path.name.startswith("test_") or path.name == "conftest.py"


def suite_files() -> list[Path]:
    """Every .py file of the suite (not in tests/.node/, tests/.artifacts/ or a __pycache__)."""
    return sorted(
        path
        for path in TESTS.rglob("*.py")
        if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(TESTS).parts)
    )


def suite_test_modules() -> list[Path]:
    """Every test module and conftest.py of the suite."""
    return [path for path in suite_files() if is_test_module(path)]


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


@pytest.mark.parametrize("path", suite_files(), ids=lambda p: str(p.relative_to(TESTS)).replace("/", "."))
def test_no_module_of_the_suite_imports_a_test_module_or_a_conftest(path: Path) -> None:
    hits = imports_of_test_modules(path)
    assert not hits, (
        f"{path.relative_to(ROOT)} imports test modules: {hits}; move what they share to tests/harness/ "
        "(helpers) or a conftest.py (fixtures)"
    )


def test_the_harness_holds_no_test_module() -> None:
    """pytest collects test_*.py wherever it is: a test module inside the harness would be run as a test."""
    assert [p for p in (TESTS / "harness").rglob("*.py") if is_test_module(p)] == []


def misplaced(path: Path) -> bool:
    """Whether test module `path` is neither at the top of tests/ nor in the folder of an app/ package."""
    folder = path.parent.relative_to(TESTS)
    if folder == Path() or folder.parts[0] in OWN_FOLDERS:
        return False
    return not (APP / folder / "__init__.py").is_file()


def test_every_test_module_is_at_the_top_or_in_the_folder_of_an_app_package() -> None:
    wrong = [str(path.relative_to(ROOT)) for path in suite_test_modules() if misplaced(path)]
    assert wrong == [], (
        f"{wrong}: put a test module in the folder mirroring the app/ package it tests (tests/state/ for "
        "app/state/), or at the top of tests/ when it is about the whole"
    )


def test_every_folder_of_the_suite_is_a_package() -> None:
    """Without __init__.py pytest imports a test module by its bare name: two test_x.py would collide."""
    folders = {path.parent for path in suite_files()}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []


@pytest.mark.parametrize(
    ("where", "wrong"),
    [
        ("tests/test_x.py", False),
        ("tests/fronts/smsmobileapi/test_x.py", False),
        ("tests/state/sqlite/conftest.py", False),
        ("tests/harness_selftest/test_x.py", False),
        ("tests/smsmobileapi/test_x.py", True),
        ("tests/fronts/soap/test_x.py", True),
        ("tests/state/sqlite/db/test_x.py", True),
    ],
)
def test_the_check_knows_a_mirroring_folder(where: str, wrong: bool) -> None:
    assert misplaced(ROOT / where) is wrong


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("tests/test_x.py", "from tests.fronts.smsmobileapi.test_soap import envelope\n"),
        ("tests/test_x.py", "import tests.webhooks.test_webhooks\n"),
        ("tests/test_x.py", "from tests import test_cli\n"),
        ("tests/test_x.py", "from .test_cli import main\n"),
        ("tests/test_x.py", "from . import test_cli\n"),
        ("tests/harness/x.py", "from ..test_cli import main\n"),
        ("tests/test_x.py", "def f():\n    from tests.test_gunicorn import Gunicorn\n"),
        ("tests/test_x.py", "from tests.conftest import GOOD_KEY\n"),
        ("tests/fronts/smsmobileapi/test_x.py", "from .test_soap import envelope\n"),
        ("tests/fronts/test_x.py", "from .smsmobileapi import test_soap\n"),
        ("tests/webhooks/test_x.py", "from ..test_cli import main\n"),
        ("tests/webhooks/test_x.py", "from .conftest import serve\n"),
        ("tests/access/test_x.py", "from tests.fronts.smsmobileapi.conftest import live\n"),
        ("tests/harness/x.py", "from ..fronts.smsmobileapi.test_rest import send\n"),
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
        "from ..harness import soap\n",
        "from tests import schemas\n",
    ],
)
def test_the_check_lets_the_harness_and_everything_else_be_imported(source: str) -> None:
    assert imports_of_test_modules(ROOT / "tests" / "fronts" / "test_x.py", source) == []
