"""Let spyne 2.14 import on Python 3.12 and 3.13 by standing the maintained `six` in for its vendored copy.

spyne 2.14 ships six 1.14 as `spyne.util.six`. That copy's import hook for `six.moves` has no
`find_spec`, and Python 3.12 stopped falling back to the older `find_module`, so
`spyne.util.six.moves` cannot be imported and spyne fails on its first import. spyne's own fix is
merged upstream but unreleased (spyne issues #700 and #711, pull request #710).

Importing this module, before anything imports spyne:

- puts the `six` package from PyPI (1.16 or later: its hook has `find_spec`) in `sys.modules` as
  `spyne.util.six`, plus `get_function_name`, the one function spyne added to its copy;
- resolves every `spyne.util.six.<name>` (`moves`, `moves.urllib.parse`, ...) to `six.<name>`.

It applies on every supported Python, 3.11 included, so what runs in production is what the tests run.
Delete this module, its import in `app/fronts/smsmobileapi/soap.py` and the `six` dependency once a
spyne release carries the fix.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import operator
import sys
from collections.abc import Sequence
from types import ModuleType

import six

VENDORED_SIX = "spyne.util.six"


class VendoredSixAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve `spyne.util.six.<name>` to the module six itself gives for `six.<name>`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """Claim only names under `spyne.util.six.`."""
        if not fullname.startswith(VENDORED_SIX + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """Return six's own module for the same name (the very object, not a copy)."""
        module = importlib.import_module("six" + spec.name.removeprefix(VENDORED_SIX))
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Give the shared module back its own spec, which the import system replaced with the alias's."""
        spec = module.__spec__
        assert spec is not None  # the import system set it (the alias's) before calling this
        module.__spec__ = spec.loader_state


def apply() -> None:
    """Install the stand-in; refuse if spyne already imported its vendored six."""
    current = sys.modules.get(VENDORED_SIX)
    if current is not None and current is not six:
        # Swapping now would leave spyne's modules holding two different six modules.
        raise RuntimeError("app.spyne_compat must be imported before spyne")
    if not hasattr(six, "get_function_name"):
        # spyne's copy defines it (interface and application use it to name duplicate methods).
        six.get_function_name = operator.attrgetter("__name__")  # type: ignore[attr-defined]  # added here
    sys.modules[VENDORED_SIX] = six
    if not any(isinstance(finder, VendoredSixAliases) for finder in sys.meta_path):
        sys.meta_path.insert(0, VendoredSixAliases())


apply()
