"""One batch of inbound messages → routing decisions: signals, language, classifier, rules.

Pure computation (the models are in memory); the handler performs the effects, and runs this
off its event loop (the sentence encoder takes milliseconds per batch). The encoder sees each
message at most once and is called once per batch, for the messages that need it across all
tenants of the batch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from parley_common.contracts import InboundMessage

from parley_router.domain.classifier import DEFAULT_ENCODER_GATE, IntentClassifier
from parley_router.domain.config import TenantRouting
from parley_router.domain.defaults import RouterDefaults
from parley_router.domain.encoder import SentenceEncoder, shared_encoder
from parley_router.domain.language import LanguageIdentifier
from parley_router.domain.routing import OUT_OF_SCOPE, RoutingDecision, Understanding, decide
from parley_router.domain.signals import read_signal

log = logging.getLogger("parley.router")


@dataclass(frozen=True)
class TenantContext:
    tenant_id: str | None
    time_zone: str | None
    routing: TenantRouting


class MessageRouter:
    def __init__(self, defaults: RouterDefaults, languages: LanguageIdentifier,
                 model_for: Callable[[str | None], IntentClassifier], confidence_threshold: float, *,
                 encoder: SentenceEncoder | None = None, encoder_gate: float = DEFAULT_ENCODER_GATE) -> None:
        self.defaults = defaults
        self.languages = languages
        self.model_for = model_for
        self.confidence_threshold = confidence_threshold
        self.encoder = encoder or shared_encoder()
        self.encoder_gate = encoder_gate
        self.encoded = 0  # messages the encoder has seen (a figure for the benchmark)

    def understand(self, batch: Sequence[tuple[InboundMessage, TenantContext]]) -> list[Understanding]:
        langs = self.languages.detect_many([m.text for m, _ in batch])
        out: list[Understanding | None] = [None] * len(batch)
        to_classify: dict[str | None, list[int]] = defaultdict(list)
        for i, (msg, ctx) in enumerate(batch):
            sig = read_signal(msg, ctx.routing, self.defaults)
            if sig is not None:
                out[i] = Understanding(sig.intent, 1.0, langs[i], sig.kind)
            elif msg.text and msg.text.strip():
                to_classify[ctx.tenant_id].append(i)
            else:
                # Media without a caption, locations, reactions...: a person looks at it.
                out[i] = Understanding(OUT_OF_SCOPE, 0.0, langs[i], "classifier")
        # Lexical probabilities per tenant model, then one encoder call for every message of the
        # batch that needs it, then each model's answer.
        plans: list[tuple[IntentClassifier, list[int], np.ndarray, np.ndarray, list[str | None]]] = []
        to_encode: list[str] = []
        for tenant_id, idx in to_classify.items():
            model = self.model_for(tenant_id)
            lexical = model.lexical_probabilities([batch[i][0].text or "" for i in idx])
            group_langs = [langs[i] for i in idx]
            mask = model.needs_encoder(lexical, group_langs, self.encoder_gate)
            to_encode.extend(batch[i][0].text or "" for i, m in zip(idx, mask, strict=True) if m)
            plans.append((model, idx, lexical, mask, group_langs))
        vectors = self.encoder.encode(to_encode) if to_encode else None
        self.encoded += len(to_encode)
        start = 0
        for model, idx, lexical, mask, group_langs in plans:
            n = int(mask.sum())
            proba = (model.fuse(lexical, mask, vectors[start:start + n], group_langs)
                     if n and vectors is not None else lexical)
            start += n
            for i, p in zip(idx, model.predictions(proba), strict=True):
                out[i] = Understanding(p.intent, p.confidence, langs[i], "classifier")
        return [u for u in out if u is not None]

    def route(self, batch: Sequence[tuple[InboundMessage, TenantContext]]) -> list[RoutingDecision]:
        decisions: list[RoutingDecision] = []
        for (msg, ctx), u in zip(batch, self.understand(batch), strict=True):
            decisions.append(decide(msg, u, ctx.routing, self.defaults, tenant_id=ctx.tenant_id,
                                    time_zone=ctx.time_zone, confidence_threshold=self.confidence_threshold))
        return decisions
