"""When to try a recipient again, and when to give up (Exchange 2013's retry model).

After a temporary failure a recipient is retried quickly a few times (glitch
retries, 4 × 1 min), then at the transient-failure interval (6 × 5 min), then at
the message retry interval (15 min) or, when no server of the next hop could even
be reached, at the outbound connection failure interval (10 min). Past the
delay-notification timeout (4 h) the sender hears once that it is late; past the
expiration timeout (2 days) delivery is given up with 4.4.7 and an NDR.

`attempts` counts failed attempts so far, including the one just made.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postwerk.config.settings import TransportSettings


class FailureKind(StrEnum):
    CONNECTION = "connection"  # no server of the next hop answered
    TRANSIENT = "transient"  # a 4xx reply, a lost connection, a DNS hiccup


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    glitch_count: int = 4
    glitch_interval: float = 60.0
    transient_count: int = 6
    transient_interval: float = 300.0
    message_interval: float = 900.0
    connection_interval: float = 600.0
    delay_notification: float = 4 * 3600.0
    expiration: float = 2 * 86400.0

    @classmethod
    def from_settings(cls, t: TransportSettings) -> RetryPolicy:
        return cls(
            glitch_count=t.glitch_retry_count,
            glitch_interval=t.glitch_retry_interval,
            transient_count=t.transient_retry_count,
            transient_interval=t.transient_retry_interval,
            message_interval=t.message_retry_interval,
            connection_interval=t.connection_failure_retry_interval,
            delay_notification=t.delay_notification_timeout,
            expiration=t.message_expiration_timeout,
        )

    def interval(self, attempts: int, kind: FailureKind) -> float:
        if attempts <= self.glitch_count:
            return self.glitch_interval
        if attempts <= self.glitch_count + self.transient_count:
            return self.transient_interval
        if kind == FailureKind.CONNECTION:
            return self.connection_interval
        return self.message_interval

    def next_attempt(
        self, attempts: int, kind: FailureKind, received: float, now: float
    ) -> float | None:
        """When to try again; None: the message has expired, give up now."""
        expires = received + self.expiration
        if now >= expires:
            return None
        # The last try happens at expiry at the latest, so "2 days" means 2 days.
        return min(now + self.interval(attempts, kind), expires)

    def delay_due(self, received: float, now: float) -> bool:
        return self.delay_notification > 0 and now - received >= self.delay_notification
