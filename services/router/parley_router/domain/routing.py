"""From what a customer wants to where the message goes (issue 6, "Routing").

``decide()`` is a pure function of the inbound message, its understanding, the tenant's
configuration and the built-in defaults. Every id it produces is derived from the wamid (and
the rule), so a redelivered inbound yields byte-identical records and downstream dedupe holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from parley_common.contracts import (
    AgentTask,
    ConsentChange,
    InboundMessage,
    OutboundMessage,
    RouteDestination,
    RoutedMessage,
    TemplateRef,
    body_hash,
)
from parley_common.outbound import Endpoint
from parley_common.topics import AGENT_QUEUE, MESSAGES_OUT

from parley_router.domain.config import Rule, RuleAction, TenantRouting
from parley_router.domain.defaults import RouterDefaults

OUT_OF_SCOPE = "out_of_scope"
ALWAYS_HUMAN = frozenset({"complaint", "human_agent", OUT_OF_SCOPE})
CONSENT_MIN_CONFIDENCE = 0.7  # a classifier's opt-out needs more than the usual threshold
CONSENT_INTENTS: dict[str, Literal["stop", "resume"]] = {"opt_out": "stop", "opt_in": "resume"}


@dataclass(frozen=True)
class Understanding:
    intent: str
    confidence: float
    language: str | None
    signal: str  # interactive | quick_reply | keyword | referral | classifier


@dataclass(frozen=True)
class WebhookCall:
    endpoint: str
    url: str
    secret_ref: str
    body: bytes


@dataclass
class RoutingDecision:
    routed: RoutedMessage
    outbound: list[OutboundMessage] = field(default_factory=list)
    consent: ConsentChange | None = None
    agent_task: AgentTask | None = None
    webhook: WebhookCall | None = None


def _matches(rule: Rule, msg: InboundMessage, u: Understanding, local_time: datetime | None) -> bool:
    w = rule.when
    if w.intent is not None and u.intent not in w.intent:
        return False
    if w.language is not None and u.language not in w.language:
        return False
    if w.signal is not None and u.signal not in w.signal:
        return False
    if w.referral is not None:
        ref = msg.referral
        if ref is None:
            return False
        if "*" not in w.referral and ref.source_id not in w.referral and ref.source_url not in w.referral:
            return False
    if w.hours is not None:
        if local_time is None or not w.hours.contains(local_time.time()):
            return False
    return True


def _pick_text(texts: dict[str, str], language: str | None) -> str | None:
    if language and language in texts:
        return texts[language]
    fallback: str | None = texts.get("en") or next(iter(texts.values()), None)
    return fallback


def outbound_message_id(wamid: str, rule: str) -> str:
    """The deterministic id of the router's reply to one inbound under one rule."""
    return "rt-" + str(body_hash("router-reply", wamid, rule))


class DecisionBuilder:
    def __init__(self, msg: InboundMessage, u: Understanding, tenant_id: str | None) -> None:
        self.msg, self.u, self.tenant_id = msg, u, tenant_id

    def routed(self, rule: str, kind: str, target: str | None) -> RoutedMessage:
        m, u = self.msg, self.u
        return RoutedMessage(
            event_id=m.wamid, tenant_id=self.tenant_id, tenant_source=m.tenant_source,
            phone_number_id=m.phone_number_id,
            occurred_at=m.occurred_at, wamid=m.wamid, customer_id=m.customer_id, intent=u.intent,
            confidence=round(u.confidence, 4), language=u.language, rule=rule,
            destination=RouteDestination(kind=kind, target=target), signal=u.signal)

    def reply(self, rule: str, *, text: str | None = None,
              template: TemplateRef | None = None) -> OutboundMessage:
        m = self.msg
        mid = outbound_message_id(m.wamid, rule)
        return OutboundMessage(
            event_id=mid, message_id=mid, tenant_id=self.tenant_id, tenant_source=m.tenant_source,
            phone_number_id=m.phone_number_id,
            occurred_at=m.occurred_at, to=m.customer_wa_id,
            to_user_id=None if m.customer_wa_id else m.customer_user_id, contact_id=m.contact_id,
            type="template" if template else "text",
            content={} if template else {"body": text, "preview_url": False},
            template=template, reply_to_wamid=m.wamid, priority="reply", origin="router")

    def agent_task(self, skill: str, reason: str) -> AgentTask:
        m, u = self.msg, self.u
        return AgentTask(
            event_id=m.wamid, tenant_id=self.tenant_id, tenant_source=m.tenant_source,
            phone_number_id=m.phone_number_id,
            occurred_at=m.occurred_at, wamid=m.wamid, customer_id=m.customer_id, skill=skill,
            language=u.language, intent=u.intent, confidence=round(u.confidence, 4), reason=reason,
            text=m.text, profile_name=m.profile_name)


def _apply_action(b: DecisionBuilder, rule_name: str, action: RuleAction, cfg: TenantRouting,
                  defaults: RouterDefaults) -> RoutingDecision:
    u = b.u
    if action.agent_queue is not None:
        return RoutingDecision(b.routed(rule_name, "agent_queue", AGENT_QUEUE.name),
                               agent_task=b.agent_task(action.agent_queue, "rule"))
    if action.auto_reply is not None:
        spec = action.auto_reply
        if spec.template is not None:
            ref = TemplateRef(name=spec.template.name, language=spec.template.language or u.language or "en")
            out = b.reply(rule_name, template=ref)
            return RoutingDecision(b.routed(rule_name, "auto_reply", ref.name), outbound=[out])
        text = spec.text if isinstance(spec.text, str) else _pick_text(spec.text or {}, u.language)
        out = b.reply(rule_name, text=text)
        return RoutingDecision(b.routed(rule_name, "auto_reply", MESSAGES_OUT.name), outbound=[out])
    assert action.webhook is not None
    endpoint: Endpoint = cfg.endpoints[action.webhook]
    routed = b.routed(rule_name, "tenant_webhook", endpoint.url)
    body = routed.model_dump_json().encode()
    call = WebhookCall(action.webhook, endpoint.url, endpoint.secret_ref, body)
    return RoutingDecision(routed, webhook=call)


def decide(
    msg: InboundMessage,
    u: Understanding,
    cfg: TenantRouting,
    defaults: RouterDefaults,
    *,
    tenant_id: str | None,
    time_zone: str | None = None,
    confidence_threshold: float = 0.45,
) -> RoutingDecision:
    b = DecisionBuilder(msg, u, tenant_id)
    threshold = cfg.confidence_threshold if cfg.confidence_threshold is not None else confidence_threshold

    # A statistical guess below the threshold never gets an automatic answer. Consent is
    # asymmetric: a confident guessed opt-out stops marketing (the safe direction), but marketing
    # resumes only on an explicit signal (START, a quick reply), never on a guess.
    guessed = u.signal == "classifier"
    uncertain = guessed and (u.confidence < threshold or u.intent == OUT_OF_SCOPE or u.intent == "opt_in"
                             or (u.intent == "opt_out" and u.confidence < CONSENT_MIN_CONFIDENCE))

    # Consent next: a customer's STOP is honoured whatever the tenant's rules say.
    if u.intent in CONSENT_INTENTS and not uncertain:
        action = CONSENT_INTENTS[u.intent]
        consent = ConsentChange(
            event_id=body_hash(tenant_id, msg.customer_id, action, msg.wamid), tenant_id=tenant_id,
            tenant_source=msg.tenant_source, phone_number_id=msg.phone_number_id,
            occurred_at=msg.occurred_at, received_at=msg.received_at, customer_id=msg.customer_id,
            action=action,
            source="quick_reply" if u.signal == "quick_reply" else "router_keyword")
        texts = {**defaults.confirmations.get(u.intent, {}),
                 **cfg.confirmations.get(u.intent, {})}  # type: ignore[call-overload]
        text = _pick_text(texts, u.language)
        consent_rule = f"consent:{u.intent}"
        outbound = [b.reply(consent_rule, text=text)] if text else []
        return RoutingDecision(b.routed(consent_rule, "consent", action), outbound=outbound, consent=consent)

    # Tenant rules, first match wins. For an uncertain guess only the rules that do not depend
    # on the intent (referral, language, time of day) apply.
    local_time = None
    if time_zone:
        local_time = msg.occurred_at.astimezone(ZoneInfo(time_zone))
    for rule in cfg.rules:
        if uncertain and rule.when.intent is not None:
            continue
        if _matches(rule, msg, u, local_time):
            return _apply_action(b, rule.name, rule.then, cfg, defaults)

    if uncertain:
        reason = "out_of_scope" if u.intent == OUT_OF_SCOPE else "low_confidence"
        return RoutingDecision(b.routed(f"human:{reason}", "agent_queue", AGENT_QUEUE.name),
                               agent_task=b.agent_task(cfg.default_skill, reason))

    skill = cfg.skills.get(u.intent) or defaults.skills.get(u.intent) or cfg.default_skill
    if u.intent in ALWAYS_HUMAN:
        reason = "human_agent" if u.intent == "human_agent" else "rule"
        return RoutingDecision(b.routed(f"human:{u.intent}", "agent_queue", AGENT_QUEUE.name),
                               agent_task=b.agent_task(skill, reason))
    if cfg.auto_reply:
        texts = {**defaults.replies.get(u.intent, {}), **cfg.replies.get(u.intent, {})}
        text = _pick_text(texts, u.language) if texts else None
        if text:
            rule_name = f"auto_reply:{u.intent}"
            return RoutingDecision(b.routed(rule_name, "auto_reply", MESSAGES_OUT.name),
                                   outbound=[b.reply(rule_name, text=text)])
    return RoutingDecision(b.routed(f"agent:{skill}", "agent_queue", AGENT_QUEUE.name),
                           agent_task=b.agent_task(skill, "rule"))
