"""The router's settings (env prefix ``PARLEY_ROUTER_``)."""

from __future__ import annotations

from pathlib import Path

from parley_common.settings import CommonSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]


class RouterSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_ROUTER_", extra="ignore")

    http_port: int = 8082
    # Public benchmarks for `parley-router eval` and the benchmark, not shipped: BANKING77
    # (banking77/train.csv and test.csv, columns text,category) and CLINC150
    # (clinc150/data_full.json, the "full" split of the oos-eval release).
    datasets_dir: Path = REPO_ROOT / ".parley" / "datasets"
    # Where the default model trained from the shipped examples is cached.
    model_cache_dir: Path = REPO_ROOT / ".parley" / "router-models"
    # Below this confidence the classifier's answer is not trusted: the message goes to a human.
    confidence_threshold: float = 0.45
    # The sentence encoder is consulted when the TF-IDF answer's probability is below this
    # (1.0: every message; 0.0: only languages without examples of every intent). ADR 0020.
    encoder_gate: float = Field(default=0.7, ge=0.0, le=1.0)
    # Batch consumption of wa.messages.in.
    batch_max_records: int = 1000
    batch_timeout_ms: int = 20
    # Tenant HTTPS endpoints (ADR 0105): calls made off the consume path from router.webhook_outbox,
    # at most per_tenant_concurrency at once per tenant and max_in_flight in all per replica;
    # attempts with exponential backoff (backoff_s, doubling, capped), then a dead letter.
    webhook_attempts: int = Field(default=4, ge=1, le=50)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_backoff_s: float = Field(default=0.2, ge=0)
    webhook_backoff_cap_s: float = Field(default=300.0, ge=0)
    webhook_per_tenant_concurrency: int = Field(default=4, ge=1)
    webhook_max_in_flight: int = Field(default=64, ge=1)
    webhook_poll_interval_s: float = Field(default=1.0, gt=0)
    # Quotas on a tenant's intents added over HTTP (a breach is a 422 naming the limit).
    max_tenant_intents: int = Field(default=50, ge=1)
    max_examples_per_intent: int = Field(default=300, ge=1)
    max_examples_per_tenant: int = Field(default=3000, ge=1)
    # How often each replica re-reads tenant intents (settings and HTTP) and reloads changed models.
    model_poll_interval_s: float = 5.0
    # Durable dedupe (router.routed): wamids older than this are pruned, every prune_interval_s
    # (0 disables the pruning task). Keep it above the inbound topic's retention and Meta's retries.
    routed_retention_days: int = Field(default=15, ge=1)
    prune_interval_s: float = Field(default=3600.0, ge=0)
    # Topic prefix of agent queues: "<prefix>.<tenant>.<skill>" when per-tenant topics are wanted;
    # empty means the shared AGENT_QUEUE topic with tenant, skill and language in the record.
    agent_topic_prefix: str = ""
