"""Settings of the sender (env prefix ``PARLEY_SENDER_``)."""

from __future__ import annotations

from parley_common.settings import CommonSettings
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict


class SenderSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_SENDER_", extra="ignore")

    http_port: int = 8083
    db_pool_max: int = 12

    # Cloud API client. The base URL and version come from the tenant's Meta app; this overrides
    # the base for every tenant (the demo and the tests point it at the simulator).
    graph_api_base: str | None = None
    graph_api_version: str | None = None
    http_timeout_s: float = 10.0
    http_connect_timeout_s: float = 3.0
    http_max_connections: int = 256

    # Consumption. Send requests: one worker per partition (parley_sender.consuming), at most
    # batch_max_records per batch, a partition paused while partition_backlog_records are waiting.
    batch_max_records: int = 1000
    partition_backlog_records: int = 4000
    send_fetch_partition_bytes: int = 256 * 1024
    batch_timeout_ms: int = 20
    # Requests in flight per business number (the governor still paces them to the number's rate).
    max_in_flight_per_number: int = 64
    # On revocation or stop: how long the calls already made may take to finish and be recorded.
    stop_timeout_s: float = 10.0

    # Crash semantics: a request in doubt (no answer, or its process died during the call) waits
    # this long for a status webhook naming it, then is reported "in doubt" (final; the tenant may
    # resend). Longer than any call (http_timeout_s + http_connect_timeout_s). Checked every
    # in_doubt_sweep_s by every replica.
    in_doubt_deadline_s: float = 600.0
    in_doubt_sweep_s: float = 10.0

    # Transient failures (database or broker unreachable): exponential backoff with jitter.
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0

    # Memory: a number's pacing state is forgotten after this long unused.
    number_idle_s: float = 300.0
    # Throughput Meta reported per number (upgrades) is re-read this often: another replica may
    # have consumed the event.
    throughput_reload_s: float = 30.0

    # Retries through wa.messages.out.retry, then the dead-letter topic.
    max_attempts: int = 6
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    # A message whose pair-rate wait is longer than this is parked on the retry topic instead of
    # holding its partition.
    max_inline_wait_s: float = 2.0

    # Rate governor.
    default_throughput_mps: int = 80
    throughput_headroom: float = 1.0  # fraction of the number's limit the governor grants

    # Templates: language fallbacks tried in order when the requested language is missing,
    # e.g. {"en_GB": ["en", "en_US"]}; the base language ("pt" of "pt_BR") is always tried last.
    template_language_fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    template_cache_ttl_s: float = 30.0

    @model_validator(mode="after")
    def _deadline_outlasts_a_call(self) -> SenderSettings:
        if self.in_doubt_deadline_s <= self.http_timeout_s + self.http_connect_timeout_s:
            raise ValueError("in_doubt_deadline_s must be longer than a call (http_timeout_s + http_connect_timeout_s)")
        return self
