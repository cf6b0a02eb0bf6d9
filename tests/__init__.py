"""The test suite: test_*.py modules, their fixtures in conftest.py, what they share in harness/."""

import pytest

# Before anything imports them: the harness's `assert`s report their values as a test module's do.
pytest.register_assert_rewrite("tests.harness")
