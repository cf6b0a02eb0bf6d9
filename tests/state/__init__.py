"""Tests of app/state/: the stores behind the service, and what happens when they fail."""
