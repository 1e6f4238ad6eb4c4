"""Deterministic signals: keywords per language, quick replies, interactive ids, referrals."""

from __future__ import annotations

import pytest
from parley_common.contracts import Referral
from parley_router.domain.config import TenantRouting
from parley_router.domain.defaults import RouterDefaults
from parley_router.domain.signals import read_signal

from .conftest import inbound

NO_CONFIG = TenantRouting()


@pytest.mark.parametrize("text", [
    "STOP", "stop", "Stop!!", " stop. ", "UNSUBSCRIBE",  # en
    "বন্ধ", "বন্ধ করুন", "bondho korun",  # bn, Bangla script and Banglish
    "توقف", "إلغاء الاشتراك", "ايقاف",  # ar (hamza and alef forms fold)
    "berhenti", "Berhenti berlangganan",  # id
    "DUR", "abonelikten çık", "Abonelikten cik",  # tr, with and without Turkish letters
    "BAJA", "cancelar suscripción", "Cancelar suscripcion",  # es, with and without accents
])
def test_opt_out_keywords_in_every_language_are_opt_outs(text: str, defaults: RouterDefaults) -> None:
    sig = read_signal(inbound(text), NO_CONFIG, defaults)
    assert sig is not None and sig.intent == "opt_out" and sig.kind == "keyword"


@pytest.mark.parametrize("text", ["START", "unstop", "mulai", "başla", "alta", "ابدأ", "chalu korun"])
def test_opt_in_keywords_are_opt_ins(text: str, defaults: RouterDefaults) -> None:
    sig = read_signal(inbound(text), NO_CONFIG, defaults)
    assert sig is not None and sig.intent == "opt_in"


@pytest.mark.parametrize("text", [
    "please don't stop the bus before my station", "stop by the office tomorrow?", "iptal etmek istiyorum",
])
def test_keywords_match_the_whole_message_only(text: str, defaults: RouterDefaults) -> None:
    assert read_signal(inbound(text), NO_CONFIG, defaults) is None


def test_stop_promotions_quick_reply_is_an_opt_out(defaults: RouterDefaults) -> None:
    msg = inbound("Stop promotions", type="button", button_payload="Stop promotions")
    sig = read_signal(msg, NO_CONFIG, defaults)
    assert sig is not None and (sig.intent, sig.kind) == ("opt_out", "quick_reply")


def test_translated_stop_promotions_button_is_an_opt_out(defaults: RouterDefaults) -> None:
    msg = inbound("Promosyonları durdur", type="button", button_payload="PROMO_STOP_TR")
    sig = read_signal(msg, NO_CONFIG, defaults)
    assert sig is not None and sig.intent == "opt_out"


def test_tenant_quick_reply_payload_maps_to_its_intent(defaults: RouterDefaults) -> None:
    cfg = TenantRouting(quick_replies={"TRACK_ORDER": "order_status"})
    sig = read_signal(inbound("Track", type="button", button_payload="TRACK_ORDER"), cfg, defaults)
    assert sig is not None and (sig.intent, sig.kind) == ("order_status", "quick_reply")


def test_interactive_reply_id_configured_by_the_tenant(defaults: RouterDefaults) -> None:
    cfg = TenantRouting(interactive={"btn_refund": "refund"})
    msg = inbound("Get my money back", type="interactive", interactive_reply_id="btn_refund")
    sig = read_signal(msg, cfg, defaults)
    assert sig is not None and (sig.intent, sig.kind, sig.detail) == ("refund", "interactive", "btn_refund")


def test_interactive_reply_id_can_name_the_intent(defaults: RouterDefaults) -> None:
    msg = inbound("Choose seat", type="interactive", interactive_reply_id="intent:choose_seat")
    sig = read_signal(msg, NO_CONFIG, defaults)
    assert sig is not None and sig.intent == "choose_seat"


def test_unknown_interactive_id_falls_through_to_the_classifier(defaults: RouterDefaults) -> None:
    msg = inbound("Something", type="interactive", interactive_reply_id="row_17")
    assert read_signal(msg, NO_CONFIG, defaults) is None


def test_click_to_whatsapp_ad_routes_by_ad_id(defaults: RouterDefaults) -> None:
    cfg = TenantRouting(referrals={"120226305854810726": "buy_ticket"})
    msg = inbound("Hi, is this still available?",
                  referral=Referral(source_id="120226305854810726", source_type="ad"))
    sig = read_signal(msg, cfg, defaults)
    assert sig is not None and (sig.intent, sig.kind) == ("buy_ticket", "referral")


def test_tenant_keywords_win_over_defaults(defaults: RouterDefaults) -> None:
    cfg = TenantRouting(keywords={"en": {"menu": "greeting", "end": "cancel"}})
    assert read_signal(inbound("MENU"), cfg, defaults).intent == "greeting"  # type: ignore[union-attr]
    assert read_signal(inbound("end"), cfg, defaults).intent == "cancel"  # type: ignore[union-attr]
