"""Ingest's settings (env prefix ``PARLEY_INGEST_``; shared ones keep their ``PARLEY_`` names)."""

from __future__ import annotations

from parley_common.settings import CommonSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict

MB = 1024 * 1024


class IngestSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_INGEST_", extra="ignore")

    http_port: int = 8081
    # Meta's payload limit is 3 MB; larger bodies get 413 without being read whole.
    max_webhook_bytes: int = 3 * MB
    max_api_bytes: int = 8 * MB
    # Request bodies held in memory at once, webhooks and send API together: over it a request is
    # answered 503 + Retry-After (Meta and clients retry) instead of growing the process without
    # bound under a burst of large bodies. Each body also costs its parsed and normalised copies.
    max_inflight_body_bytes: int = Field(default=64 * MB, ge=4 * MB)
    # How long a request may wait for Kafka's acknowledgement before answering 503.
    produce_timeout_s: float = Field(default=5.0, gt=0)
    # After Kafka failed, answer 503 at once for this long (then let one request probe again).
    kafka_breaker_s: float = Field(default=2.0, ge=0)
    # 0, not the shared default (ADR 0010, "Linger"): ingest's requests already hand over whole
    # batches and overlap while others are in flight.
    kafka_linger_ms: int = Field(default=0, ge=0)
    # Garbage collector (ADR 0010, "Garbage collector", with the figures): once the broker runs,
    # everything alive from start-up moves to the permanent generation (gc.freeze), so a full
    # collection no longer rescans it; gen0 is collected after 10,000 net allocations instead of
    # 700. 0 keeps Python's threshold.
    gc_freeze: bool = True
    gc_gen0_threshold: int = Field(default=10_000, ge=0)
    # Per-tenant request rate of the send API (``limits`` notation); a tenant's
    # ``settings.ingest_rate_limit`` overrides it.
    api_rate_limit: str = "50/second"
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    max_batch_messages: int = Field(default=1000, ge=1, le=1000)
    # Seats follow payments (ADR 0112, 0113): consume billing's order events (wa.orders) to sell or
    # release the seats held for an order. Off: the business sells and releases through the API.
    seats_follow_orders: bool = True
