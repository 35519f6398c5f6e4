"""`roles/registration.py`: when a registered server counts as running."""

from __future__ import annotations

from postwerk.roles.registration import RUNNING_WITHIN_SECONDS, is_running, server_label
from postwerk.store.records import ServerRecord


def record(heartbeat_at: float, stopped_at: float = 0.0) -> ServerRecord:
    return ServerRecord("MAIL", "mail.example.org", ("cas", "mailbox"), (), 0, "1", 1.0,
                        heartbeat_at, stopped_at)  # fmt: skip


def test_running_means_a_recent_beat_and_no_clean_stop_since() -> None:
    now = 10_000.0
    assert is_running(record(now - 5), now)
    assert not is_running(record(now - RUNNING_WITHIN_SECONDS - 1), now)  # three beats missed
    assert not is_running(record(now - 5, stopped_at=now - 1), now)  # stopped cleanly
    assert is_running(record(now - 1, stopped_at=now - 5), now)  # started again since
    assert not is_running(record(0.0), now)  # registered by init, never served


def test_label_is_the_first_hostname_label_upper_case() -> None:
    assert server_label("mail.example.org") == "MAIL"
    assert server_label("localhost") == "LOCALHOST"
