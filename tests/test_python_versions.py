"""spyne runs on every supported Python through app/spyne_compat.py, and the supported list is one list."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import six

import app.fronts.smsmobileapi.soap  # noqa: F401  (the bridge's own import order, as gunicorn loads it)
from app import spyne_compat

ROOT = Path(__file__).resolve().parents[1]


def test_spyne_sees_the_maintained_six() -> None:
    from spyne.util import six as spynes_six

    assert sys.modules["spyne.util.six"] is six
    assert spynes_six is six
    assert six.get_function_name(test_spyne_sees_the_maintained_six) == "test_spyne_sees_the_maintained_six"


def test_vendored_moves_resolve_to_six_without_touching_its_modules() -> None:
    # urllib_robotparser: a move spyne never imports, so this import goes through the alias now.
    before = six.moves.urllib_robotparser.__spec__
    from spyne.util.six.moves import urllib_robotparser
    from spyne.util.six.moves.urllib.parse import quote

    assert urllib_robotparser is six.moves.urllib_robotparser
    assert urllib_robotparser.__spec__ is before
    assert quote("a b") == "a%20b"


def test_an_unknown_vendored_name_is_an_import_error() -> None:
    try:
        import spyne.util.six.moves.no_such_move  # noqa: F401
    except ImportError as exc:
        assert "no_such_move" in str(exc)
    else:
        raise AssertionError("imported a module that does not exist")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-W", "ignore:'cgi' is deprecated:DeprecationWarning", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_fresh_interpreter_builds_a_soap11_application() -> None:
    built = run_python(
        "import app.spyne_compat\n"
        "from spyne import Application, ServiceBase, Unicode, rpc\n"
        "from spyne.protocol.soap import Soap11\n"
        "from spyne.server.wsgi import WsgiApplication\n"
        "class Echo(ServiceBase):\n"
        "    @rpc(Unicode, _returns=Unicode)\n"
        "    def echo(ctx, text): return text\n"
        "WsgiApplication(Application([Echo], 'urn:t', in_protocol=Soap11(validator='lxml'),"
        " out_protocol=Soap11()))\n"
        "print('built')\n"
    )
    assert (built.returncode, built.stdout, built.stderr) == (0, "built\n", "")


def test_importing_spyne_first_is_refused() -> None:
    # On 3.12+ spyne fails to import at all; on 3.11 it imports its vendored six, which apply() refuses.
    late = run_python("import spyne\nimport app.spyne_compat\n")
    assert late.returncode != 0
    assert "spyne" in late.stderr


def test_apply_is_idempotent() -> None:
    spyne_compat.apply()
    spyne_compat.apply()
    assert sum(isinstance(f, spyne_compat.VendoredSixAliases) for f in sys.meta_path) == 1


def test_setup_tries_exactly_the_pythons_pyproject_supports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    classified = {
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    [tried] = re.findall(r'^supported="([^"]+)"$', (ROOT / "scripts" / "setup").read_text(), flags=re.M)
    assert set(tried.split()) == classified
    assert tried.split() == sorted(tried.split(), key=lambda v: -int(v.split(".")[1]))
    assert project["requires-python"] == f">={min(classified)},<3.{max(int(v[2:]) for v in classified) + 1}"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in classified
