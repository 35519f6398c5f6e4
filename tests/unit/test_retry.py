"""Retry schedule: glitch retries, transient retries, then the long intervals; expiry."""

from __future__ import annotations

from postwerk.config.settings import TransportSettings
from postwerk.transport.retry import FailureKind, RetryPolicy


def test_exchange_defaults_schedule() -> None:
    p = RetryPolicy.from_settings(TransportSettings())
    t = FailureKind.TRANSIENT
    c = FailureKind.CONNECTION
    assert [p.interval(n, t) for n in range(1, 13)] == [60.0] * 4 + [300.0] * 6 + [900.0] * 2
    assert [p.interval(n, c) for n in (4, 5, 10, 11, 50)] == [60.0, 300.0, 300.0, 600.0, 600.0]


def test_next_attempt_and_expiry() -> None:
    p = RetryPolicy()
    received = 1_000_000.0
    assert p.next_attempt(1, FailureKind.TRANSIENT, received, received + 5) == received + 65
    two_days = received + 2 * 86400
    # Never scheduled beyond expiry; at or past expiry: give up.
    assert p.next_attempt(20, FailureKind.TRANSIENT, received, two_days - 10) == two_days
    assert p.next_attempt(20, FailureKind.TRANSIENT, received, two_days) is None


def test_delay_notification() -> None:
    p = RetryPolicy()
    assert not p.delay_due(0.0, 4 * 3600 - 1)
    assert p.delay_due(0.0, 4 * 3600)
    assert not RetryPolicy(delay_notification=0).delay_due(0.0, 10**9)
