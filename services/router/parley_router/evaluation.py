"""Accuracy figures behind ``parley-router eval`` and the benchmark (docs/adr/0020-router-*)."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parley_router.corpora import Example, few_shot, load_banking77, load_clinc150, load_examples
from parley_router.domain.classifier import ClassifierConfig, IntentClassifier, Prediction, tune_oos_threshold
from parley_router.domain.language import LanguageIdentifier
from parley_router.models import train_from_examples

# The public benchmarks are English: word n-grams over Snowball stems measured better there
# (BANKING77 91.88 -> 92.11 % with TF-IDF alone), while the multilingual default model keeps
# surface words. Both use the sentence encoder as the router does (same gate, same weights).
ENGLISH_CONFIG = ClassifierConfig(stemmer="english")
# CLINC150 target (issue 16): out-of-scope recall with in-scope accuracy kept at this floor when reachable.
IN_SCOPE_TARGET = 0.95


@dataclass(frozen=True)
class Score:
    name: str
    figures: dict[str, Any]


def _accuracy(model: IntentClassifier, texts: list[str], labels: list[str]) -> float:
    pred = [p.intent for p in model.predict(texts, oos_threshold=0.0)]
    return float(np.mean(np.array(pred) == np.array(labels)))


def _encoded_share(model: IntentClassifier, texts: list[str],
                   languages: list[str | None] | None = None) -> float:
    """The share of ``texts`` for which the router would consult the sentence encoder."""
    return float(np.mean(model.needs_encoder(model.lexical_probabilities(texts), languages)))


def eval_banking77(datasets_dir: Path, shots: int | None = None, seed: int = 0) -> Score:
    xtr, ytr = load_banking77(datasets_dir, "train")
    xte, yte = load_banking77(datasets_dir, "test")
    if shots:
        xtr, ytr = few_shot(xtr, ytr, shots, seed)
    t0 = time.perf_counter()
    model = IntentClassifier.train(xtr, ytr, ENGLISH_CONFIG)
    train_s = time.perf_counter() - t0
    return Score(f"banking77_{shots}shot" if shots else "banking77_full",
                 {"accuracy": _accuracy(model, xte, yte), "train_examples": len(xtr), "train_s": train_s,
                  "encoded_share": _encoded_share(model, xte)})


def eval_clinc150(datasets_dir: Path, max_in_scope_loss: float = 0.02) -> Score:
    """Train on ``train``; tune the out-of-scope threshold on ``val`` + ``oos_val``; test on
    ``test`` + ``oos_test``.

    oos_train is not used for training: the threshold alone decides out-of-scope, as in the
    paper's threshold baselines.
    """
    d = load_clinc150(datasets_dir)
    t0 = time.perf_counter()
    model = IntentClassifier.train(*d["train"], ENGLISH_CONFIG)
    train_s = time.perf_counter() - t0

    def top(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        proba = model.probabilities(texts)
        return proba.max(axis=1), model.model.classes_[proba.argmax(axis=1)]

    p_val, y_val = top(d["val"][0])
    correct_val = y_val == np.array(d["val"][1])
    p_oos_val, _ = top(d["oos_val"][0])
    # Operating point, chosen on validation data only: the most out-of-scope recall that keeps
    # in-scope accuracy at the 95 % target when the model reaches it on val (with half a point to
    # spare); otherwise at most max_in_scope_loss below the model's own val accuracy.
    val_accuracy = float(np.mean(correct_val))
    floor = IN_SCOPE_TARGET if val_accuracy >= IN_SCOPE_TARGET + 0.005 else val_accuracy - max_in_scope_loss
    threshold = tune_oos_threshold(p_val, correct_val, p_oos_val, min_in_scope_accuracy=floor)
    balanced = tune_oos_threshold(p_val, correct_val, p_oos_val)
    p_test, y_test = top(d["test"][0])
    correct_test = y_test == np.array(d["test"][1])
    p_oos, _ = top(d["oos_test"][0])

    def at(t: float) -> tuple[float, float]:
        return float(np.mean(correct_test & (p_test >= t))), float(np.mean(p_oos < t))

    in_scope, recall = at(threshold)
    b_in, b_recall = at(balanced)
    return Score("clinc150", {"in_scope_accuracy": in_scope, "oos_recall": recall, "threshold": threshold,
                              "val_in_scope_accuracy": val_accuracy, "in_scope_floor_on_val": floor,
                              "in_scope_accuracy_without_threshold": float(np.mean(correct_test)),
                              "balanced": {"threshold": balanced, "in_scope_accuracy": b_in,
                                           "oos_recall": b_recall},
                              "train_s": train_s, "encoded_share": _encoded_share(model, d["test"][0])})


def eval_multilingual(examples_dir: Path | None = None) -> Score:
    """Train on the shipped examples' training part; accuracy on the held-out part, per language."""
    examples = load_examples(examples_dir)
    train = [e for e in examples if not e.held_out]
    test = [e for e in examples if e.held_out]
    t0 = time.perf_counter()
    model = train_from_examples(train)
    train_s = time.perf_counter() - t0
    texts = [e.text for e in test]
    languages = LanguageIdentifier().detect_many(texts)
    preds = model.predict(texts, languages, oos_threshold=0.0)
    return Score("multilingual", {"per_language": _per_source(test, preds), "train_examples": len(train),
                                  "test_examples": len(test), "train_s": train_s,
                                  "encoded_share": _encoded_share(model, texts, languages)})


_ARABIC_SCRIPT = re.compile("[\u0600-\u06ff]")


def _per_source(test: list[Example], preds: list[Prediction]) -> dict[str, float]:
    """Accuracy per example file, and overall; Arabic also split into Arabic script and Arabizi."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for e, p in zip(test, preds, strict=True):
        hit = p.intent == e.intent
        hits[e.source].append(hit)
        hits["all"].append(hit)
        if e.source == "ar":
            hits["ar-script" if _ARABIC_SCRIPT.search(e.text) else "ar-arabizi"].append(hit)
    return {k: float(np.mean(v)) for k, v in sorted(hits.items())}


def eval_crosslingual(train_source: str = "en", examples_dir: Path | None = None) -> Score:
    """Intents learnt from one example file (``en``: English) and tested on every other file.

    This is a tenant who wrote its intents in one language, with customers writing in others:
    the lexical half knows none of their words, so what it gets right is the encoder's (and,
    for romanised Bengali, shared words such as "ticket"). Every example of the other files is
    tested (none of them was trained on).
    """
    examples = load_examples(examples_dir)
    train = [e for e in examples if e.source == train_source]
    test = [e for e in examples if e.source != train_source]
    if not train or not test:
        raise ValueError(f"no examples to train on from {train_source!r}, or none to test on")
    t0 = time.perf_counter()
    model = train_from_examples(train)
    train_s = time.perf_counter() - t0
    texts = [e.text for e in test]
    languages = LanguageIdentifier().detect_many(texts)
    preds = model.predict(texts, languages, oos_threshold=0.0)
    return Score(f"crosslingual_{train_source}", {
        "train_source": train_source, "per_language": _per_source(test, preds),
        "train_examples": len(train), "test_examples": len(test), "train_s": train_s,
        "encoded_share": _encoded_share(model, texts, languages),
        "lexical_only": _per_source(test, model.predictions(model.lexical_probabilities(texts), 0.0))})
