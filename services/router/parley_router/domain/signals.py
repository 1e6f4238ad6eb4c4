"""Deterministic signals, read before any statistics (issue 6, "Understanding").

In order: interactive replies (button / list ids), template quick-reply payloads (a "Stop
promotions" tap is an opt-out), whole-message keywords per tenant and language (STOP and its
equivalents), and click-to-WhatsApp ad referrals. A message none of them explains goes to the
classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_common.contracts import InboundMessage

from parley_router.domain.config import TenantRouting
from parley_router.domain.defaults import RouterDefaults
from parley_router.domain.text import keyword_form

INTERACTIVE_ID_PREFIX = "intent:"  # a button id "intent:refund" names its intent directly


@dataclass(frozen=True)
class Signal:
    intent: str
    kind: str  # interactive | quick_reply | keyword | referral
    detail: str  # which id, payload, keyword or ad matched (never customer text beyond it)


def _keyword_intent(form: str, cfg: TenantRouting, defaults: RouterDefaults) -> str | None:
    for per_lang in cfg.keywords.values():
        for word, intent in per_lang.items():
            if keyword_form(word) == form:
                return intent
    if form in defaults.all_opt_out_keywords:
        return "opt_out"
    if form in defaults.all_opt_in_keywords:
        return "opt_in"
    return None


def read_signal(msg: InboundMessage, cfg: TenantRouting, defaults: RouterDefaults) -> Signal | None:
    if msg.type == "interactive" and msg.interactive_reply_id:
        rid = msg.interactive_reply_id
        if rid in cfg.interactive:
            return Signal(cfg.interactive[rid], "interactive", rid)
        if rid.startswith(INTERACTIVE_ID_PREFIX):
            return Signal(rid[len(INTERACTIVE_ID_PREFIX):], "interactive", rid)
    if msg.type == "button":
        for value in (msg.button_payload, msg.text):
            if not value:
                continue
            if value in cfg.quick_replies:
                return Signal(cfg.quick_replies[value], "quick_reply", value)
            form = keyword_form(value)
            if form in defaults.opt_out_quick_replies or form in defaults.all_opt_out_keywords:
                return Signal("opt_out", "quick_reply", form)
            if form in defaults.opt_in_quick_replies or form in defaults.all_opt_in_keywords:
                return Signal("opt_in", "quick_reply", form)
    if msg.text and msg.type in ("text", "button", "interactive"):
        form = keyword_form(msg.text)
        intent = _keyword_intent(form, cfg, defaults) if len(form) <= 40 else None
        if intent:
            return Signal(intent, "keyword", form)
    if msg.referral is not None:
        ref = msg.referral
        for key in (ref.source_id, ref.source_url):
            if key and key in cfg.referrals:
                return Signal(cfg.referrals[key], "referral", key)
    return None
