"""Tests of app/service/: failover and the circuit breaker, idempotency keys."""
