"""Per-tenant router configuration: ``Tenant.settings["router"]`` in the tenancy registry.

Format (YAML under a tenant's ``settings:``; every key optional)::

    router:
      auto_reply: true              # built-in text replies (data/replies.yaml) for answerable intents
      confidence_threshold: 0.45    # below it the message goes to a human
      default_skill: general        # agent-queue skill for humans when no rule names one
      skills: {refund: billing}     # intent -> skill for the built-in human routing
      replies: {greeting: {en: "Hi from Acme!"}}      # override built-in reply texts
      confirmations: {opt_out: {en: "..."}, opt_in: {en: "..."}}
      keywords:                     # whole-message keywords (after normalisation) -> intent
        en: {menu: greeting, "stop all": opt_out}
      interactive: {btn_refund: refund}                # button / list reply ids -> intent
      quick_replies: {"Track my order": order_status}  # template quick-reply payloads -> intent
      referrals:                    # click-to-WhatsApp ads: ad id (source_id) -> intent
        "120226305854810726": buy_ticket
      endpoints:                    # tenant HTTPS endpoints, signed (parley_common.outbound)
        crm: {url: "https://crm.example.com/parley", secret_ref: "env:ACME_CRM_SECRET"}
      endpoint_policy:              # operator's choice; both false unless the endpoint is internal
        {allow_http: false, allow_private_addresses: false}
      intents:                      # tenant's own intents (the router retrains without a restart)
        baggage: ["how many bags can I take", "bagaj hakkı ne kadar"]
      rules:                        # first match wins; before the built-in routing
        - name: bn-refunds-to-billing
          when: {intent: [refund], language: [bn]}
          then: {agent_queue: billing-bn}
        - name: night-sales
          when: {intent: [buy_ticket], hours: "22:00-07:00"}
          then: {auto_reply: {text: {en: "We open at 7."}}}
        - name: promo-ad
          when: {referral: ["120226305854810726"]}
          then: {webhook: crm}
        - name: seat-template
          when: {intent: [choose_seat]}
          then: {auto_reply: {template: {name: seat_map, language: en}}}
"""

from __future__ import annotations

from datetime import time
from typing import Any, Literal

from parley_common.outbound import Endpoint, EndpointPolicySpec, EndpointRefused, parse_endpoint_url
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HoursWindow(_Model):
    start: time
    end: time

    @classmethod
    def parse(cls, value: str) -> HoursWindow:
        start, _, end = value.partition("-")
        return cls(start=time.fromisoformat(start.strip()), end=time.fromisoformat(end.strip()))

    def contains(self, t: time) -> bool:
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # crosses midnight


class RuleCondition(_Model):
    intent: list[str] | None = None
    language: list[str] | None = None
    referral: list[str] | None = None  # ad/post ids; ["*"] = any referral
    signal: list[str] | None = None
    hours: HoursWindow | None = None  # in the tenant's time zone, event time

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, v: Any) -> Any:
        return HoursWindow.parse(v) if isinstance(v, str) else v


class TemplateSpec(_Model):
    name: str
    language: str | None = None  # default: the detected language


class AutoReplySpec(_Model):
    text: str | dict[str, str] | None = None
    template: TemplateSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> AutoReplySpec:
        if (self.text is None) == (self.template is None):
            raise ValueError("auto_reply needs exactly one of text or template")
        return self


class RuleAction(_Model):
    agent_queue: str | None = None  # skill
    auto_reply: AutoReplySpec | None = None
    webhook: str | None = None  # endpoint name

    @model_validator(mode="after")
    def _one(self) -> RuleAction:
        if sum(x is not None for x in (self.agent_queue, self.auto_reply, self.webhook)) != 1:
            raise ValueError("a rule's then needs exactly one of agent_queue, auto_reply, webhook")
        return self


class Rule(_Model):
    name: str
    when: RuleCondition = Field(default_factory=RuleCondition)
    then: RuleAction


class TenantRouting(_Model):
    auto_reply: bool = False
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    default_skill: str = "general"
    skills: dict[str, str] = Field(default_factory=dict)
    replies: dict[str, dict[str, str]] = Field(default_factory=dict)
    confirmations: dict[Literal["opt_out", "opt_in"], dict[str, str]] = Field(default_factory=dict)
    keywords: dict[str, dict[str, str]] = Field(default_factory=dict)
    interactive: dict[str, str] = Field(default_factory=dict)
    quick_replies: dict[str, str] = Field(default_factory=dict)
    referrals: dict[str, str] = Field(default_factory=dict)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    endpoint_policy: EndpointPolicySpec = Field(default_factory=EndpointPolicySpec)
    intents: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _endpoint_urls(self) -> TenantRouting:
        # What can be checked without resolving names: scheme, credentials, IP literals. Names
        # are resolved and checked again on every call (they may change after this check).
        for name, endpoint in self.endpoints.items():
            try:
                parse_endpoint_url(endpoint.url, self.endpoint_policy.policy())
            except EndpointRefused as exc:
                raise ValueError(f"endpoint {name!r}: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _endpoints_exist(self) -> TenantRouting:
        for rule in self.rules:
            if rule.then.webhook and rule.then.webhook not in self.endpoints:
                raise ValueError(f"rule {rule.name!r} names unknown endpoint {rule.then.webhook!r}")
        return self

    @classmethod
    def from_tenant_settings(cls, settings: dict[str, Any] | None) -> TenantRouting:
        return cls.model_validate((settings or {}).get("router") or {})
