"""The sentence encoder beside TF-IDF: intents learnt in one language understood in others,
the lexical path kept for romanised Bengali and Arabizi, the encoder consulted only when needed
and once per message per batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from parley_common.contracts import InboundMessage
from parley_router.corpora import load_examples
from parley_router.domain.classifier import IntentClassifier
from parley_router.domain.config import TenantRouting
from parley_router.domain.defaults import RouterDefaults
from parley_router.domain.encoder import DIM, SentenceEncoder, shared_encoder
from parley_router.domain.language import LanguageIdentifier
from parley_router.domain.pipeline import MessageRouter, TenantContext
from parley_router.models import train_from_examples

from .conftest import inbound

# A tenant's own intent, written in English only (examples written for these tests).
BAGGAGE_EN = ["how many bags can i bring", "what is the baggage allowance", "can i take a second suitcase",
              "how much is the extra luggage fee", "is hand luggage free", "how heavy can my bag be",
              "can I check in two suitcases", "what's the weight limit for luggage"]
# Customers asking about it in other languages (none of these words is in the examples above).
BAGGAGE_ELSEWHERE = [
    ("tr", "kaç tane bavul götürebilirim"),
    ("es", "cuántas maletas puedo llevar en el viaje"),
    ("id", "berapa banyak koper yang boleh saya bawa"),
    ("ar", "كم عدد الحقائب المسموح بها"),
]


class CountingEncoder(SentenceEncoder):
    """The real encoder, counting what it is asked to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return shared_encoder().encode(texts)


@pytest.fixture(scope="module")
def baggage_model() -> IntentClassifier:
    return train_from_examples(load_examples(), {"baggage": BAGGAGE_EN})


def test_encoder_gives_unit_vectors_and_zero_rows_for_blank_texts() -> None:
    v = shared_encoder().encode(["where is my order", "", "  ", "¿dónde está mi pedido?",
                                 "where is my bag"])
    assert v.shape == (5, DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[[0, 3, 4]], axis=1), 1.0, atol=1e-4)
    assert not v[1].any() and not v[2].any()
    # The same question in Spanish lands closer than an English one about something else.
    assert float(v[0] @ v[3]) > float(v[0] @ v[4])


@pytest.mark.parametrize(("lang", "text"), BAGGAGE_ELSEWHERE)
def test_an_intent_written_in_english_is_understood_in_other_languages(
        baggage_model: IntentClassifier, lang: str, text: str) -> None:
    detected = LanguageIdentifier().detect(text)
    assert detected == lang
    lexical = baggage_model.lexical_probabilities([text])
    # The tenant wrote no examples in this language: the encoder is consulted whatever TF-IDF says.
    assert baggage_model.needs_encoder(lexical, [detected], gate=0.0)[0]
    [p] = baggage_model.predict([text], [detected])
    assert p.intent == "baggage"


def test_without_the_encoder_the_same_messages_are_not_understood(baggage_model: IntentClassifier) -> None:
    texts = [t for _, t in BAGGAGE_ELSEWHERE]
    lexical = baggage_model.predictions(baggage_model.lexical_probabilities(texts))
    assert sum(p.intent == "baggage" for p in lexical) <= 1


@pytest.mark.parametrize(("text", "intent"), [
    ("amar taka ferot den please", "refund"),          # romanised Bengali (written for this test)
    ("ami ekjon manusher sathe kotha bolte chai", "human_agent"),
    ("3ayez arga3 el flous", "refund"),                 # Arabizi
    ("fein el order beta3i", "order_status"),
])
def test_romanised_bengali_and_arabizi_still_work(model: IntentClassifier, text: str, intent: str) -> None:
    [lang] = LanguageIdentifier().detect_many([text])
    assert model.predict([text], [lang])[0].intent == intent


def test_the_encoder_is_consulted_only_when_needed(model: IntentClassifier) -> None:
    texts = ["I want to buy two tickets for tomorrow", "hmm ok what about that thing from before"]
    lexical = model.lexical_probabilities(texts)
    assert lexical[0].max() >= 0.7 > lexical[1].max()
    assert model.needs_encoder(lexical, ["en", "en"]).tolist() == [False, True]
    assert model.needs_encoder(lexical, ["en", "en"], gate=1.0).tolist() == [True, True]
    # The default model has examples of every intent in every supported language.
    assert model.languages == frozenset({"en", "bn", "ar", "id", "tr", "es"})


def test_one_encoder_call_per_batch_and_each_message_encoded_at_most_once(
        defaults: RouterDefaults, model: IntentClassifier, baggage_model: IntentClassifier) -> None:
    encoder = CountingEncoder()
    models = {"acme": baggage_model}
    router = MessageRouter(defaults, LanguageIdentifier(), lambda t: models.get(t or "", model), 0.45,
                           encoder=encoder, encoder_gate=0.7)
    texts = ["I want to buy two tickets for tomorrow", "hmm ok what about that thing from before",
             "kaç tane bavul götürebilirim", "cuántas maletas puedo llevar en el viaje", "STOP"]
    batch: list[tuple[InboundMessage, TenantContext]] = []
    for i, text in enumerate(texts):
        tenant = "acme" if i >= 2 else "other"
        batch.append((inbound(text, wamid=f"wamid.E{i}", event_id=f"wamid.E{i}"),
                      TenantContext(tenant, None, TenantRouting())))
    understood = router.understand(batch)
    assert len(encoder.calls) == 1  # one call for the whole batch, across both tenants' models
    encoded = encoder.calls[0]
    assert len(encoded) == len(set(encoded))
    assert texts[0] not in encoded and "STOP" not in encoded  # confident, and a keyword signal
    assert texts[2] in encoded and texts[3] in encoded
    assert [u.intent for u in understood[2:4]] == ["baggage", "baggage"]
    assert router.encoded == len(encoded)
    assert router.understand([batch[0], batch[4]]) and len(encoder.calls) == 1  # nothing to encode, no call
