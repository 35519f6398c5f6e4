"""observe/metrics.py: the scrape-time gauges."""

from __future__ import annotations

from prometheus_client import generate_latest

from postwerk.observe import metrics


def lines(prefix: str) -> list[str]:
    text = generate_latest(metrics.REGISTRY).decode()
    return [x for x in text.splitlines() if x.startswith(prefix)]


def test_an_emptied_queue_shows_zero_once_then_goes() -> None:
    metrics.refresh({"smtp": 2}, {"smtp:Internet:a.test": 3, "Unreachable": 1})
    assert 'postwerk_connections{service="smtp"} 2.0' in lines("postwerk_connections")
    queues = lines("postwerk_transport_queue_messages{")
    assert 'postwerk_transport_queue_messages{queue="smtp:Internet:a.test"} 3.0' in queues
    metrics.refresh({"smtp": 0}, {"Unreachable": 1})
    assert 'postwerk_transport_queue_messages{queue="smtp:Internet:a.test"} 0.0' in lines(
        "postwerk_transport_queue_messages{"
    )
    metrics.refresh({"smtp": 0}, {"Unreachable": 1})
    assert lines("postwerk_transport_queue_messages{") == [
        'postwerk_transport_queue_messages{queue="Unreachable"} 1.0'
    ]
    metrics.refresh({}, {})  # leave the process-wide registry as found
    metrics.refresh({}, {})
