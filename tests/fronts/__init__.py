"""Tests of app/fronts/: what every front shares: bad input, health, metrics, rate limits, the request log."""
