"""The broker factory: one configuration for every service's KafkaBroker.

Producers: ``acks="all"`` with the idempotent producer, lz4 compression and a small linger.
Consumers: commit only after the handler succeeded (``AckPolicy.NACK_ON_ERROR``; never
ACK_FIRST, which is at-most-once). A poison record is dead-lettered by :mod:`deadletter`.
Logs: FastStream writes through the ``parley.faststream`` logger (the service's JSON lines, with
trace ids); its per-message "Received"/"Processed" lines are at DEBUG, so off at the default INFO.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # a webhook body may be 3 MB
#: The most one record (key + value + headers) may take: the producer's request limit (and the
#: topics' ``max.message.bytes``) less room for the batch framing around it. A record over it is
#: refused by the producer; ingest refuses it first (413), so it never looks like an outage.
MAX_RECORD_BYTES = MAX_REQUEST_BYTES - 16 * 1024


def record_size(key: bytes | None, value: bytes, headers: Any = ()) -> int:
    """Bytes a record takes against ``MAX_RECORD_BYTES`` (headers as a mapping or pairs)."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    return len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in pairs)

CONSUMER_DEFAULTS: dict[str, Any] = {
    "ack_policy": AckPolicy.NACK_ON_ERROR,
    "auto_offset_reset": "earliest",
}


def make_broker(
    bootstrap: str,
    *,
    service: str,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    linger_ms: int = 5,
    **overrides: Any,
) -> KafkaBroker:
    middlewares: list[Any] = [KafkaTelemetryMiddleware(tracer_provider=tracer_provider)]
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=f"parley_{service}"))
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "lz4",
        "linger_ms": linger_ms,
        "max_batch_size": 256 * 1024,
        "max_request_size": MAX_REQUEST_BYTES,
        "client_id": f"parley-{service}",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "middlewares": tuple(middlewares),
        "graceful_timeout": 15.0,
        "logger": logging.getLogger("parley.faststream"),
        "log_level": logging.DEBUG,
    }
    options.update(overrides)
    return KafkaBroker(bootstrap, **options)
