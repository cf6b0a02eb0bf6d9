"""The test suite: test_*.py modules, their fixtures in conftest.py, what they share in harness/."""

try:
    import pytest
except ModuleNotFoundError:  # the harness used outside the suite (bench/pg_cluster.py) without the test extra
    pass
else:
    # Before anything imports them: the harness's `assert`s report their values as a test module's do.
    pytest.register_assert_rewrite("tests.harness")
