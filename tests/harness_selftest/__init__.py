"""Tests of tests/harness/ itself: the fake mobsms, the throwaway PostgreSQL, Chromium and newman."""
