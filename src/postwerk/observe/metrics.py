"""Prometheus metrics, `postwerk_<component>_<metric>` (served on /metrics by the
admin listener, roles/admin.py).

Purpose: counters and histograms that the hot paths update as they go
(a few increments per message, under prometheus_client's own lock), and
gauges that are read when scraped: current connections per service and queue
depths, which live elsewhere (listeners, the queue store) and are copied in by
`refresh` just before each scrape rather than kept up to date everywhere.

One registry per process (`REGISTRY`), not prometheus_client's global one, so
tests and tools can read it without the default process collectors. Delivery
worker processes (transport.delivery_processes > 1) count in their own
processes; their outbound deliveries are not in this registry.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SMTP_MESSAGES = Counter(
    "postwerk_smtp_messages_received_total",
    "Messages whose end of data got an answer, by result (accepted: 250; rejected).",
    ["result"],
    registry=REGISTRY,
)
SMTP_COMMIT_SECONDS = Histogram(
    "postwerk_smtp_commit_seconds",
    "From the end of a message's data to the reply: making it durable (and, with "
    "deliver-at-receipt, delivering it).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
MAILBOX_DELIVERIES = Counter(
    "postwerk_transport_mailbox_deliveries_total",
    "Recipients delivered into a mailbox by this process.",
    registry=REGISTRY,
)
# The two results, bound once: an SMTP commit does not look its label up.
SMTP_ACCEPTED = SMTP_MESSAGES.labels(result="accepted")
SMTP_REJECTED = SMTP_MESSAGES.labels(result="rejected")
CONNECTIONS = Gauge(
    "postwerk_connections",
    "Open client connections, by service (smtp, imap4, pop3).",
    ["service"],
    registry=REGISTRY,
)
# Client Access → Mailbox (M4): the SMTP relay's back-end connections and the
# IMAP4/POP3 proxy's logins, by outcome.
RELAY_CONNECTIONS = Counter(
    "postwerk_frontend_relay_connections_total",
    "Front End Transport connections to Mailbox servers, by result (connected; failed: "
    "that server was skipped for the next; unavailable: none could take the "
    "transaction, 451 4.4.0; lost: a back end went away mid-transaction).",
    ["result"],
    registry=REGISTRY,
)
PROXY_LOGINS = Counter(
    "postwerk_frontend_proxy_logins_total",
    "IMAP4/POP3 logins proxied to another Mailbox server's back end, by protocol and "
    "result (relayed; refused: the client got a temporary failure).",
    ["protocol", "result"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "postwerk_transport_queue_messages",
    "Messages waiting, by queue (as `postwerk queue list` names them).",
    ["queue"],
    registry=REGISTRY,
)


_queues_shown: set[str] = set()  # queue labels reported at the last scrape
_queues_zeroed: set[str] = set()  # of those, the ones reported as 0 (emptied)


def refresh(connections: Mapping[str, int], queues: Mapping[str, int]) -> None:
    """Copy the scrape-time gauges in. A queue that emptied since the last scrape
    is reported as 0 once, then dropped (queues are named after next hops, so
    their labels must not accumulate)."""
    for service, count in connections.items():
        CONNECTIONS.labels(service=service).set(count)
    for name in _queues_zeroed - set(queues):
        QUEUE_DEPTH.remove(name)
        _queues_shown.discard(name)
    _queues_zeroed.clear()
    for name in _queues_shown - set(queues):
        QUEUE_DEPTH.labels(queue=name).set(0)
        _queues_zeroed.add(name)
    for name, count in queues.items():
        QUEUE_DEPTH.labels(queue=name).set(count)
        _queues_shown.add(name)
