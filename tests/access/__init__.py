"""Tests of app/access/: managed clients and their resolution, token secrets and signed tokens."""
