"""The broker factory: one configuration for every service's KafkaBroker.

The FastStream broker only consumes: every record Parley writes goes through the service's one
:class:`parley_common.producer.RecordProducer` (ADR 0005), whose settings are
:data:`PRODUCER_SETTINGS` (``acks="all"`` with the idempotent producer, lz4 compression).
Consumers: commit only after the handler succeeded (``AckPolicy.NACK_ON_ERROR``; never
ACK_FIRST, which is at-most-once). A poison record is dead-lettered by :mod:`deadletter`.
Transport: TLS and SASL (PLAIN, SCRAM-SHA-256/512) from the environment (``CommonSettings``,
``PARLEY_KAFKA_SECURITY_PROTOCOL`` …), the same for the FastStream broker
(:func:`kafka_security`) and every plain aiokafka client (:func:`kafka_client_options`).
Logs: FastStream writes through the ``parley.faststream`` logger (the service's JSON lines, with
trace ids); its per-message "Received"/"Processed" lines are at DEBUG, so off at the default INFO.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from parley_common.settings import CommonSettings

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # a webhook body may be 3 MB
#: The most one record (key + value + headers) may take: the producer's request limit (and the
#: topics' ``max.message.bytes``) less room for the batch framing around it. A record over it is
#: refused by the producer; ingest refuses it first (413), so it never looks like an outage.
MAX_RECORD_BYTES = MAX_REQUEST_BYTES - 16 * 1024


def record_size(key: bytes | None, value: bytes, headers: Any = ()) -> int:
    """Bytes a record takes against ``MAX_RECORD_BYTES`` (headers as a mapping or pairs)."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    return len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in pairs)


#: What Parley's producer (:mod:`producer`) is set to: Kafka acknowledges a record once every
#: in-sync replica has it, and the idempotent producer's retries never write a record twice
#: (ADR 0005). Only the linger differs per service. The FastStream broker gets them too: FastStream
#: opens a producer with its admin client (``/readyz``'s ping), though Parley writes nothing through it.
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "compression_type": "lz4",
    "max_batch_size": 256 * 1024,
    "max_request_size": MAX_REQUEST_BYTES,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "ack_policy": AckPolicy.NACK_ON_ERROR,
    "auto_offset_reset": "earliest",
}


class KafkaTransportError(RuntimeError):
    """A TLS file or SASL secret named by the settings cannot be read."""


def _read(path: str, what: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise KafkaTransportError(f"{what} file {path}: {exc.strerror}") from exc
    if not value:
        raise KafkaTransportError(f"{what} file {path} is empty")
    return value


def _ssl_context(settings: CommonSettings) -> ssl.SSLContext:
    """Server certificates verified (against the CA file, else the system's CAs), host names checked."""
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile and settings.kafka_ssl_keyfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaTransportError(f"Kafka TLS files: {exc}") from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_security(settings: CommonSettings) -> BaseSecurity | None:
    """FastStream's security object for the settings' protocol (None: PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    username = settings.kafka_sasl_username or _read(settings.kafka_sasl_username_file or "", "SASL username")
    password = settings.kafka_sasl_password or _read(settings.kafka_sasl_password_file or "", "SASL password")
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512}[settings.kafka_sasl_mechanism or ""]
    return kind(username, password, ssl_context=context, use_ssl=protocol == "SASL_SSL")


def kafka_client_options(settings: CommonSettings) -> dict[str, Any]:
    """The same transport as keyword arguments of aiokafka's producer, consumer and admin client."""
    options = parse_security(kafka_security(settings))
    return {k: v for k, v in options.items() if v is not None}


def make_broker(
    bootstrap: str,
    *,
    service: str,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    linger_ms: int = 5,
    security: BaseSecurity | None = None,
    **overrides: Any,
) -> KafkaBroker:
    middlewares: list[Any] = [KafkaTelemetryMiddleware(tracer_provider=tracer_provider)]
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=f"parley_{service}"))
    options: dict[str, Any] = {
        **PRODUCER_SETTINGS,
        "linger_ms": linger_ms,
        "client_id": f"parley-{service}",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "middlewares": tuple(middlewares),
        "graceful_timeout": 15.0,
        "logger": logging.getLogger("parley.faststream"),
        "log_level": logging.DEBUG,
        "security": security,
    }
    options.update(overrides)
    return KafkaBroker(bootstrap, **options)
