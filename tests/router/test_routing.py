"""Routing decisions: consent, low confidence to humans, tenant rules, deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from parley_common.contracts import Referral
from parley_common.topics import AGENT_QUEUE
from parley_router.domain.config import TenantRouting
from parley_router.domain.defaults import RouterDefaults
from parley_router.domain.routing import Understanding, decide, outbound_message_id
from pydantic import ValidationError

from .conftest import inbound

DEMO = TenantRouting.from_tenant_settings({"demo": True, "router": {"auto_reply": True}})


def u(intent: str, confidence: float = 0.95, language: str | None = "en",
      signal: str = "classifier") -> Understanding:
    return Understanding(intent, confidence, language, signal)


def test_opt_out_publishes_consent_stop_and_the_confirmation_in_the_customers_language(
        defaults: RouterDefaults) -> None:
    d = decide(inbound("বন্ধ"), u("opt_out", 1.0, "bn", "keyword"), DEMO, defaults, tenant_id="dhaka-tickets")
    assert d.consent is not None and d.consent.action == "stop" and d.consent.source == "router_keyword"
    assert d.consent.customer_id == "8801711111111" and d.consent.tenant_id == "dhaka-tickets"
    assert d.routed.destination.kind == "consent"
    [confirm] = d.outbound
    assert confirm.content["body"] == defaults.confirmations["opt_out"]["bn"]
    assert (confirm.origin, confirm.priority, confirm.reply_to_wamid) == ("router", "reply", "wamid.T1")


def test_quick_reply_opt_out_is_marked_as_such(defaults: RouterDefaults) -> None:
    d = decide(inbound("Stop promotions", type="button"), u("opt_out", 1.0, "en", "quick_reply"),
               TenantRouting(), defaults, tenant_id="t")
    assert d.consent is not None and d.consent.source == "quick_reply"


def test_opt_in_resumes_marketing(defaults: RouterDefaults) -> None:
    d = decide(inbound("START"), u("opt_in", 1.0, "en", "keyword"), TenantRouting(), defaults, tenant_id="t")
    assert d.consent is not None and d.consent.action == "resume"
    assert d.outbound[0].content["body"] == defaults.confirmations["opt_in"]["en"]


def test_tenant_confirmation_text_overrides_the_default(defaults: RouterDefaults) -> None:
    cfg = TenantRouting(confirmations={"opt_out": {"en": "Done, no more offers from Acme."}})
    d = decide(inbound("STOP"), u("opt_out", 1.0, "en", "keyword"), cfg, defaults, tenant_id="t")
    assert d.outbound[0].content["body"] == "Done, no more offers from Acme."


def test_low_confidence_goes_to_a_human_never_to_an_automatic_answer(defaults: RouterDefaults) -> None:
    d = decide(inbound("hmm the thing"), u("refund", 0.2), DEMO, defaults, tenant_id="t",
               confidence_threshold=0.45)
    assert d.outbound == [] and d.agent_task is not None
    assert d.agent_task.reason == "low_confidence" and d.routed.destination.target == AGENT_QUEUE.name
    assert d.routed.intent == "refund" and d.routed.rule == "human:low_confidence"


def test_out_of_scope_goes_to_a_human(defaults: RouterDefaults) -> None:
    d = decide(inbound("what's the weather"), u("out_of_scope", 0.9), DEMO, defaults, tenant_id="t")
    assert d.outbound == [] and d.agent_task is not None and d.agent_task.reason == "out_of_scope"


def test_demo_tenant_gets_an_auto_reply_in_the_detected_language(defaults: RouterDefaults) -> None:
    d = decide(inbound("Bilet almak istiyorum"), u("buy_ticket", 0.9, "tr"), DEMO, defaults, tenant_id="t")
    [reply] = d.outbound
    assert reply.type == "text" and reply.content["body"] == defaults.replies["buy_ticket"]["tr"]
    assert reply.to == "8801711111111" and reply.reply_to_wamid == "wamid.T1"
    assert d.routed.destination.kind == "auto_reply" and d.routed.rule == "auto_reply:buy_ticket"


def test_without_auto_reply_answerable_intents_go_to_the_intents_team(defaults: RouterDefaults) -> None:
    d = decide(inbound("refund please"), u("refund", 0.9), TenantRouting(), defaults, tenant_id="t")
    assert d.outbound == [] and d.agent_task is not None and d.agent_task.skill == "billing"


def test_complaints_always_go_to_people_even_with_auto_reply(defaults: RouterDefaults) -> None:
    d = decide(inbound("worst service"), u("complaint", 0.99), DEMO, defaults, tenant_id="t")
    assert d.outbound == [] and d.agent_task is not None and d.agent_task.skill == "support"


def test_first_matching_rule_wins_with_language_condition(defaults: RouterDefaults) -> None:
    cfg = TenantRouting.model_validate({"auto_reply": True, "rules": [
        {"name": "bn-refunds", "when": {"intent": ["refund"], "language": ["bn"]},
         "then": {"agent_queue": "billing-bn"}},
        {"name": "all-refunds", "when": {"intent": ["refund"]}, "then": {"agent_queue": "billing"}},
    ]})
    bn = decide(inbound("টাকা ফেরত"), u("refund", 0.9, "bn"), cfg, defaults, tenant_id="t")
    en = decide(inbound("refund"), u("refund", 0.9, "en"), cfg, defaults, tenant_id="t")
    assert (bn.routed.rule, bn.agent_task.skill) == ("bn-refunds", "billing-bn")  # type: ignore[union-attr]
    assert (en.routed.rule, en.agent_task.skill) == ("all-refunds", "billing")  # type: ignore[union-attr]
    assert bn.agent_task.language == "bn"  # type: ignore[union-attr]


def test_time_of_day_rule_uses_the_tenants_time_zone_and_event_time(defaults: RouterDefaults) -> None:
    cfg = TenantRouting.model_validate({"rules": [
        {"name": "night", "when": {"intent": ["buy_ticket"], "hours": "22:00-07:00"},
         "then": {"auto_reply": {"text": {"en": "We open at 7."}}}}]})
    # 17:30 UTC is 23:30 in Dhaka (UTC+6): night there.
    night = inbound("ticket", occurred_at=datetime(2026, 11, 20, 17, 30, tzinfo=UTC))
    day = inbound("ticket", occurred_at=datetime(2026, 11, 20, 6, 0, tzinfo=UTC))
    d_night = decide(night, u("buy_ticket"), cfg, defaults, tenant_id="t", time_zone="Asia/Dhaka")
    d_day = decide(day, u("buy_ticket"), cfg, defaults, tenant_id="t", time_zone="Asia/Dhaka")
    assert d_night.routed.rule == "night" and d_night.outbound[0].content["body"] == "We open at 7."
    assert d_day.routed.rule != "night"


def test_referral_rule_posts_to_the_tenants_endpoint(defaults: RouterDefaults) -> None:
    cfg = TenantRouting.model_validate({
        "endpoints": {"crm": {"url": "https://crm.example.com/hook", "secret_ref": "env:CRM_SECRET"}},
        "rules": [{"name": "ad-leads", "when": {"referral": ["ad-42"]}, "then": {"webhook": "crm"}}]})
    msg = inbound("is it available?", referral=Referral(source_id="ad-42", source_type="ad"))
    d = decide(msg, u("product_info"), cfg, defaults, tenant_id="t")
    assert d.webhook is not None and d.webhook.url == "https://crm.example.com/hook"
    assert d.routed.destination.kind == "tenant_webhook" and b'"wamid":"wamid.T1"' in d.webhook.body


def test_template_auto_reply_uses_the_detected_language(defaults: RouterDefaults) -> None:
    cfg = TenantRouting.model_validate({"rules": [
        {"name": "seats", "when": {"intent": ["choose_seat"]},
         "then": {"auto_reply": {"template": {"name": "seat_map"}}}}]})
    d = decide(inbound("koltuk"), u("choose_seat", 0.9, "tr"), cfg, defaults, tenant_id="t")
    assert d.outbound[0].type == "template" and d.outbound[0].template is not None
    assert (d.outbound[0].template.name, d.outbound[0].template.language) == ("seat_map", "tr")


def test_a_redelivered_inbound_yields_identical_records(defaults: RouterDefaults) -> None:
    a = decide(inbound("STOP"), u("opt_out", 1.0, "en", "keyword"), DEMO, defaults, tenant_id="t")
    b = decide(inbound("STOP"), u("opt_out", 1.0, "en", "keyword"), DEMO, defaults, tenant_id="t")
    expected = outbound_message_id("wamid.T1", "consent:opt_out")
    assert a.outbound[0].message_id == b.outbound[0].message_id == expected
    assert a.consent is not None and b.consent is not None and a.consent.event_id == b.consent.event_id
    assert a.routed.event_id == "wamid.T1"


def test_rule_naming_an_unknown_endpoint_is_rejected() -> None:
    with pytest.raises(ValidationError):
        TenantRouting.model_validate({"rules": [{"name": "x", "then": {"webhook": "nope"}}]})


def test_inline_endpoint_secrets_are_rejected() -> None:
    with pytest.raises(ValidationError):
        TenantRouting.model_validate({"endpoints": {"crm": {"url": "https://x", "secret_ref": "hunter2"}}})


def test_an_unsure_classifier_opt_in_does_not_resume_marketing(defaults: RouterDefaults) -> None:
    d = decide(inbound("is this offer still on?"), u("opt_in", 0.55), DEMO, defaults, tenant_id="t")
    assert d.consent is None and d.outbound == [] and d.agent_task is not None


def test_even_a_confident_classifier_opt_in_needs_an_explicit_signal(defaults: RouterDefaults) -> None:
    d = decide(inbound("sáquenme de su lista"), u("opt_in", 0.95, "es"), DEMO, defaults, tenant_id="t")
    assert d.consent is None and d.agent_task is not None


def test_a_confident_classifier_opt_out_stops_marketing(defaults: RouterDefaults) -> None:
    d = decide(inbound("please never send me promos again"), u("opt_out", 0.93), DEMO, defaults,
               tenant_id="t")
    assert d.consent is not None and d.consent.action == "stop"


def test_rules_without_an_intent_condition_apply_to_uncertain_messages(defaults: RouterDefaults) -> None:
    cfg = TenantRouting.model_validate({"rules": [
        {"name": "bn-team", "when": {"language": ["bn"]}, "then": {"agent_queue": "bangla-desk"}},
        {"name": "bn-refund", "when": {"intent": ["refund"], "language": ["bn"]},
         "then": {"agent_queue": "x"}}]})
    d = decide(inbound("কিছু একটা"), u("refund", 0.1, "bn"), cfg, defaults, tenant_id="t")
    assert d.routed.rule == "bn-team" and d.agent_task is not None and d.agent_task.skill == "bangla-desk"
