"""Tests of app/webhooks/ and app/webhook_targets.py: events stored, signed and delivered; targets checked."""
