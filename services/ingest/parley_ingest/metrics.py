"""Ingest's Prometheus metrics (labels never carry phone numbers or text)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True)
class IngestMetrics:
    webhook_requests: Counter
    webhook_events: Counter
    unknown_number_events: Counter
    shape_problems: Counter
    webhook_seconds: Histogram
    api_requests: Counter
    api_messages: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> IngestMetrics:
        return cls(
            webhook_requests=Counter(
                "parley_ingest_webhook_requests", "Webhook POSTs by outcome", ["outcome"], registry=registry
            ),
            webhook_events=Counter(
                "parley_ingest_webhook_events", "Events published from webhooks", ["kind"], registry=registry
            ),
            unknown_number_events=Counter(
                "parley_ingest_unknown_number_events",
                "Events that no tenant of the verifying Meta app owns (dead-lettered, never published)",
                ["kind"],
                registry=registry,
            ),
            shape_problems=Counter(
                "parley_ingest_shape_problems",
                "Webhook parts that do not match Meta's shape (dead-lettered)",
                registry=registry,
            ),
            webhook_seconds=Histogram(
                "parley_ingest_webhook_seconds",
                "Webhook POST handling time",
                buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=registry,
            ),
            api_requests=Counter(
                "parley_ingest_api_requests",
                "Send API requests by endpoint and status",
                ["endpoint", "status"],
                registry=registry,
            ),
            api_messages=Counter(
                "parley_ingest_api_messages",
                "Messages accepted by the send API",
                ["tenant", "type"],
                registry=registry,
            ),
        )
