"""The simulator's configuration: apps, WABAs, phone numbers, templates and behaviour knobs.

Loaded from YAML (``parley-simulator run --config FILE``) or built in Python for in-process
tests. Secrets are never written in the file: an app secret or an access token names an
environment variable (``app_secret_env``, ``token_env``) or a file (``app_secret_file``,
``token_file``). The plain ``app_secret`` / ``token`` fields exist for tests that build the
config in code.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

TemplateStatus = Literal[
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "IN_APPEAL",
    "LIMIT_EXCEEDED",
    "ARCHIVED",
]
TemplateCategory = Literal["MARKETING", "UTILITY", "AUTHENTICATION"]


def _read_secret(direct: str | None, env: str | None, file: str | None, what: str) -> str | None:
    if direct:
        return direct
    if env:
        value = os.environ.get(env)
        if not value:
            raise ValueError(f"{what}: environment variable {env} is not set")
        return value
    if file:
        return Path(file).read_text().strip()
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppConfig(_Model):
    app_id: str
    app_secret: str | None = None
    app_secret_env: str | None = None
    app_secret_file: str | None = None

    def secret(self) -> str:
        value = _read_secret(self.app_secret, self.app_secret_env, self.app_secret_file, f"app {self.app_id}")
        if value is None:
            raise ValueError(f"app {self.app_id}: set app_secret_env or app_secret_file")
        return value


class TemplateConfig(_Model):
    """A message template as Meta lists it (``GET /{waba_id}/message_templates``)."""

    name: str
    language: str
    category: TemplateCategory
    status: TemplateStatus = "APPROVED"
    parameter_format: Literal["positional", "named"] = "positional"
    components: list[dict[str, Any]] = Field(default_factory=list)
    id: str | None = None


class WabaConfig(_Model):
    id: str
    app_id: str
    # A system-user token that may send from every number of this WABA.
    token: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    templates: list[TemplateConfig] = Field(default_factory=list)
    # The business portfolio the WABA belongs to (its messaging limit is shared); its own id if unset.
    portfolio_id: str | None = None

    def access_token(self) -> str | None:
        return _read_secret(self.token, self.token_env, self.token_file, f"waba {self.id}")

    @property
    def portfolio(self) -> str:
        return self.portfolio_id or self.id


class PortfolioConfig(_Model):
    """A business portfolio: unique customers it may reach with business-initiated templates in a
    rolling 24 hours (None or -1: unlimited, Meta's top level)."""

    id: str
    messaging_limit: int | None = None


class PhoneNumberConfig(_Model):
    id: str
    display_phone_number: str
    waba_id: str
    throughput: int = 80  # messages per second (sliding 1 s window); Meta's default
    # Shared with the WhatsApp Business app: Meta holds it at 20 msg/s whatever its throughput.
    coexistence: bool = False
    token: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    # The number's Flows public key (PEM), as the business uploads it to Meta
    # (``POST /{phone_number_id}/whatsapp_business_encryption`` sets it at runtime too).
    flows_public_key: str | None = None
    flows_public_key_env: str | None = None
    flows_public_key_file: str | None = None

    def access_token(self) -> str | None:
        return _read_secret(self.token, self.token_env, self.token_file, f"phone number {self.id}")

    def flows_key(self) -> str | None:
        return _read_secret(self.flows_public_key, self.flows_public_key_env, self.flows_public_key_file,
                            f"phone number {self.id} Flows public key")


class FlowScreenConfig(_Model):
    """How a simulated customer fills one screen of a Flow (stands in for the Flow JSON's form)."""

    choose_from: str | None = None  # a list in the screen's data; the customer picks one item's "id"
    submit_as: str | None = None  # the key the chosen id is submitted under (default <list>_id)
    among: int = Field(default=4, ge=1)  # customers pick among the first N items (they race for them)


class FlowConfig(_Model):
    """A published Flow with a data endpoint, as Meta knows it."""

    flow_id: str
    endpoint_uri: str  # "{phone_number_id}" is replaced by the sending number
    screens: dict[str, FlowScreenConfig] = Field(default_factory=dict)


class Behaviour(_Model):
    """Knobs that make the double misbehave the way Meta can. All can change at runtime."""

    latency_ms: float = 0.0  # added to every send answer
    latency_jitter_ms: float = 0.0  # uniform extra 0..jitter
    error_5xx_rate: float = 0.0  # answer 500/503 (code 1 or 2) without accepting
    timeout_rate: float = 0.0  # hang without accepting
    timeout_accepted_rate: float = 0.0  # accept (statuses follow) but hang the answer
    hang_seconds: float = 30.0
    failure_131049_rate: float = 0.0  # marketing templates accepted then failed by a status webhook
    # Error codes answered synchronously (HTTP 400) instead of as a failed status webhook after
    # an "accepted" answer. Meta reports 131026, 131047, 131049, 131050 and 132015 by webhook.
    sync_error_codes: list[int] = Field(default_factory=list)
    # Recipients that are not on WhatsApp (131026): an explicit set and/or a regex on the digits.
    unknown_recipients: list[str] = Field(default_factory=list)
    unknown_recipient_pattern: str | None = r"^\d*0000$"
    # Pair rate (per business number and recipient): a token bucket of `pair_burst` messages
    # refilled at one per `pair_interval_s`. Meta: ~1 per 6 s, bursts up to 45 "borrowed".
    pair_interval_s: float = 6.0
    pair_burst: int = 45
    # Status webhooks.
    sent_delay_ms: float = 20.0
    delivered_delay_ms: float = 150.0
    read_delay_ms: float = 600.0
    delivered_ratio: float = 0.9  # of sent messages, the share that reaches the phone
    read_ratio: float = 0.6  # of delivered messages, the share that is read
    skip_delivered_ratio: float = 0.2  # of read messages, the share reported read without delivered
    webhook_batch_max: int = 50  # statuses per webhook POST
    webhook_batch_window_ms: float = 10.0  # wait this long to gather a batch
    split_entries_ratio: float = 0.3  # share of batches where each number gets its own entry[]
    webhook_max_attempts: int = 6
    webhook_retry_base_s: float = 0.5
    webhook_retry_max_s: float = 30.0
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 8
    template_approval_delay_s: float = 1.0
    # Payments of order_details messages (payments.py): after pending, the share captured and the
    # share failed (the rest stays pending: the customer never paid), and the delays.
    payment_capture_ratio: float = 0.85
    payment_fail_ratio: float = 0.1
    payment_pending_delay_ms: float = 200.0
    payment_outcome_delay_ms: float = 500.0
    # Share of payment outcomes whose webhook Meta never delivers (only the lookup API tells).
    payment_webhook_loss_ratio: float = 0.0
    # Flows (flows.py): the share of delivered flow messages the customer opens, and the time a
    # customer spends before opening and on each screen.
    flow_open_ratio: float = 1.0
    flow_open_delay_ms: float = 200.0
    flow_screen_delay_ms: float = 100.0
    flow_endpoint_timeout_s: float = 10.0  # Meta gives up on the endpoint after this long
    # The simulated clock: when set, "now" starts at this instant and runs in real time.
    clock_start: datetime | None = None


class SimulatorConfig(_Model):
    apps: list[AppConfig] = Field(default_factory=list)
    wabas: list[WabaConfig] = Field(default_factory=list)
    phone_numbers: list[PhoneNumberConfig] = Field(default_factory=list)
    portfolios: list[PortfolioConfig] = Field(default_factory=list)
    # e.g. "http://127.0.0.1:8081/webhooks/meta/{app_id}"; no webhooks are posted when unset.
    webhook_url: str | None = None
    behaviour: Behaviour = Field(default_factory=Behaviour)
    seed: int = 1
    # Accepted messages kept for /_sim/messages (oldest dropped first), bounding memory under load.
    max_messages_kept: int = 200_000
    templates_file: str | None = None  # YAML: {waba_id: [template, ...]}
    flows: list[FlowConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> SimulatorConfig:
        apps = {a.app_id for a in self.apps}
        wabas = {w.id for w in self.wabas}
        for w in self.wabas:
            if w.app_id not in apps:
                raise ValueError(f"waba {w.id}: unknown app_id {w.app_id}")
        for p in self.phone_numbers:
            if p.waba_id not in wabas:
                raise ValueError(f"phone number {p.id}: unknown waba_id {p.waba_id}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> SimulatorConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        config = cls.model_validate(data)
        if config.templates_file:
            seed_path = Path(config.templates_file)
            if not seed_path.is_absolute():
                seed_path = Path(path).parent / seed_path
            config = config.with_templates(load_template_seed(seed_path))
        return config

    def with_templates(self, seed: dict[str, list[TemplateConfig]]) -> SimulatorConfig:
        wabas = []
        for w in self.wabas:
            extra = seed.get(w.id, [])
            wabas.append(w.model_copy(update={"templates": [*w.templates, *extra]}))
        return self.model_copy(update={"wabas": wabas})


def load_template_seed(path: str | Path) -> dict[str, list[TemplateConfig]]:
    """A seed file: ``{waba_id: [{name, language, category, components, ...}, ...]}``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {str(waba): [TemplateConfig.model_validate(t) for t in items] for waba, items in data.items()}
