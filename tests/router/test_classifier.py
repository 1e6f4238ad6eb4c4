"""The default multilingual model and language detection on realistic customer messages."""

from __future__ import annotations

import pytest
from parley_router.corpora import load_examples, parse_examples
from parley_router.domain.classifier import IntentClassifier, tune_oos_threshold
from parley_router.domain.language import LanguageIdentifier
from parley_router.models import train_from_examples

# Messages written for these tests (not in the shipped examples): language, text, intent.
UNSEEN = [
    ("en", "hey can i book 2 tix for the sunday show", "buy_ticket"),
    ("en", "my parcel still hasnt arrived where is it", "order_status"),
    ("es", "quiero que me devuelvan el dinero del boleto", "refund"),
    ("es", "necesito hablar con una persona real", "human_agent"),
    ("id", "tolong batalkan pesanan saya ya", "cancel"),
    ("id", "bisa bayar pakai transfer bank?", "payment"),
    ("tr", "siparişim hala gelmedi nerede", "order_status"),
    ("tr", "pencere kenarı koltuk seçebilir miyim", "choose_seat"),
    ("ar", "أريد إلغاء حجزي من فضلك", "cancel"),
    ("ar", "متى يصل طلبي", "order_status"),
    ("bn", "আমার টিকিটের টাকা ফেরত চাই", "refund"),
    ("bn", "দুইটা বাসের টিকিট কিনতে চাই", "buy_ticket"),
    ("bn", "amar order ta kothay ache", "order_status"),
    ("bn", "ami 2ta ticket kinte chai kalker", "buy_ticket"),
]


@pytest.mark.parametrize(("lang", "text", "intent"), UNSEEN)
def test_default_model_understands_unseen_messages(model: IntentClassifier, lang: str, text: str,
                                                   intent: str) -> None:
    [p] = model.predict([text])
    assert p.intent == intent
    assert 0.0 <= p.confidence <= 1.0


@pytest.mark.parametrize(("lang", "text", "intent"), UNSEEN)
def test_language_is_detected_including_banglish(lang: str, text: str, intent: str) -> None:
    assert LanguageIdentifier().detect(text) == lang


@pytest.mark.parametrize(("text", "lang"), [("hola", "es"), ("terima kasih", "id"), ("merhaba", "tr"),
                                            ("thanks a lot", "en"), ("😀👍", None), ("", None)])
def test_short_messages_and_emoji(text: str, lang: str | None) -> None:
    assert LanguageIdentifier().detect(text) == lang


def test_default_model_covers_the_issue_intents(model: IntentClassifier) -> None:
    assert set(model.intents) == {"greeting", "buy_ticket", "choose_seat", "order_status", "refund", "cancel",
                                  "payment", "product_info", "complaint", "human_agent", "opt_out", "opt_in",
                                  "out_of_scope"}


def test_shipped_examples_cover_every_intent_in_every_language() -> None:
    examples = load_examples()
    per: dict[tuple[str, str], int] = {}
    for e in examples:
        per[(e.source, e.intent)] = per.get((e.source, e.intent), 0) + 1
    sources = {s for s, _ in per}
    assert sources == {"en", "es", "id", "tr", "ar", "bn", "bn-latn"}
    assert min(per.values()) >= 25 and len(per) == 7 * 13


def test_tenant_intents_extend_the_model() -> None:
    base = [e for e in load_examples() if e.source == "en"]
    model = train_from_examples(base, {"baggage": ["how many bags can i bring", "baggage allowance?",
                                                   "can i take a second suitcase", "extra luggage fee",
                                                   "is hand luggage free", "how heavy can my bag be"]})
    assert "baggage" in model.intents
    assert model.predict(["how many suitcases can I bring"])[0].intent == "baggage"


def test_model_round_trips_through_bytes(model: IntentClassifier) -> None:
    again = IntentClassifier.loads(model.dumps())
    assert again.predict(["refund please"]) == model.predict(["refund please"])


def test_parse_examples_holds_out_every_fifth_utterance() -> None:
    text = "[a]\n" + "\n".join(f"x{i}" for i in range(10)) + "\n[b]\ny0\ny1\n"
    ex = parse_examples(text, language="en", source="en")
    assert [e.text for e in ex if e.held_out] == ["x4", "x9"]


def test_oos_threshold_tuning_separates_confident_from_unsure() -> None:
    import numpy as np

    p_in = np.array([0.9, 0.8, 0.95, 0.7])
    correct = np.array([True, True, True, True])
    p_oos = np.array([0.2, 0.3, 0.4])
    t = tune_oos_threshold(p_in, correct, p_oos)
    assert 0.3 < t <= 0.7


async def test_tenant_intents_retrain_and_reload_without_a_restart(model: IntentClassifier) -> None:
    from parley_common.tenancy.models import Tenant
    from parley_router.domain.config import TenantRouting
    from parley_router.model_registry import ModelRegistry

    registry = ModelRegistry(model, load_examples(), store=None)
    baggage = ["how many bags can i bring", "baggage allowance?", "can i take a second suitcase",
               "extra luggage fee", "is hand luggage free", "how heavy can my bag be",
               "bagaj hakkı ne kadar", "berapa kg bagasi", "কত কেজি লাগেজ নেওয়া যাবে"]
    tenant = Tenant("acme", "Acme", "app", "TR", "Europe/Istanbul", None,
                    {"router": {"intents": {"baggage": baggage}}})
    assert registry.for_tenant("acme") is model
    tasks = await registry.sync([tenant], lambda t: TenantRouting.from_tenant_settings(t.settings))
    assert len(tasks) == 1
    await tasks[0]
    tenant_model = registry.for_tenant("acme")
    assert "baggage" in tenant_model.intents and "baggage" not in registry.for_tenant("other").intents
    assert tenant_model.predict(["how many suitcases can I take"])[0].intent == "baggage"
    # Same intents again: nothing to retrain.
    assert await registry.sync([tenant], lambda t: TenantRouting.from_tenant_settings(t.settings)) == []


def test_stemmed_word_features_generalise_across_inflections() -> None:
    from parley_router.domain.classifier import ClassifierConfig, stem_words

    assert stem_words(["cards arriving charged"], "english") == ["card arriv charg"]
    texts = ["my card was charged twice", "i was charged two times", "double charge on my card",
             "when will my card arrive", "card has not arrived yet", "my new card arrival"]
    labels = ["double_charge"] * 3 + ["card_arrival"] * 3
    model = IntentClassifier.train(texts, labels, ClassifierConfig(stemmer="english"))
    assert model.predict(["the cards are arriving when?"])[0].intent == "card_arrival"
    again = IntentClassifier.loads(model.dumps())
    assert again.predict(["charges doubled"]) == model.predict(["charges doubled"])
