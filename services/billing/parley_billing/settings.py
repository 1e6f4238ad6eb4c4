"""Billing settings (env prefix ``PARLEY_BILLING_``; shared ones keep ``PARLEY_``)."""

from __future__ import annotations

from parley_common.settings import CommonSettings
from pydantic_settings import SettingsConfigDict


class BillingSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_BILLING_", extra="ignore")

    http_port: int = 8084
    # Kafka batch consumption: records per poll and how long to wait to fill a batch. Billing is not
    # latency-sensitive; bigger batches collapse more statuses of a message and re-price fewer timelines.
    batch_max_records: int = 20000
    batch_timeout_ms: int = 200
    # A status batch is metered in this many concurrent transactions (disjoint business numbers),
    # so PostgreSQL works on one part while this process prices another.
    parallel_transactions: int = 2
    # A month is finalised this long after it ended in the tenant's time zone (late statuses).
    finalise_grace_hours: float = 48.0
    # Orders (wa.commerce and the order messages of wa.messages.out) are stored one fact at a time.
    order_batch_max_records: int = 500
    # How often the month's amount, unpriced and disagreeing messages per tenant are read for /metrics.
    month_metrics_interval_s: float = 60.0
    # Orders requested or pending longer than this are looked up with Meta's payment lookup API,
    # every interval (0 turns the lookups off).
    order_lookup_after_s: float = 900.0
    order_lookup_interval_s: float = 60.0
    # Order events to the tenant's endpoints (settings.orders.endpoint / .conversions; ADR 0113),
    # made by the shared dispatcher of ADR 0105: attempts, backoff, concurrency, timeout.
    endpoint_attempts: int = 4
    endpoint_backoff_s: float = 0.2
    endpoint_backoff_cap_s: float = 300.0
    endpoint_per_tenant_concurrency: int = 4
    endpoint_max_in_flight: int = 64
    endpoint_poll_interval_s: float = 1.0
    endpoint_timeout_s: float = 5.0
