"""Tests of app/backends/: the interface and its one registry, and each backend through the dialect.

A backend's own test file is test_endpoints_<name>.py (smsmobileapi's pass-through: test_passthrough.py).
"""
