"""The classifier's own feature and probability path gives scikit-learn's numbers, bit for bit.

``IntentClassifier.probabilities`` skips scikit-learn's per-call input validation (most of the
cost of classifying one message); the predictions, and so every accuracy figure, must not move.
"""

from __future__ import annotations

import numpy as np
from parley_router.corpora import load_examples
from parley_router.domain import classifier as clf_module
from parley_router.domain.classifier import ClassifierConfig, IntentClassifier
from parley_router.models import train_from_examples
from scipy import sparse

EDGE_CASES = ["", " ", "😀😀", "a", "STOP", "x" * 400, "আমার টাকা ফেরত চাই!!", "أريد إلغاء حجزي", "İptal et"]


def _reference(model: IntentClassifier, texts: list[str]) -> np.ndarray:
    """scikit-learn's own path: vectorizer.transform and LogisticRegression.predict_proba."""
    inputs = clf_module._inputs(model.config, clf_module._prepare(texts))
    x = sparse.hstack([vec.transform(inp) for (_, vec), inp in
                       zip(model.features.transformer_list, inputs, strict=True)], format="csr")
    return model.model.predict_proba(x)  # type: ignore[no-any-return]


def test_features_are_identical_to_the_vectorizers(model: IntentClassifier) -> None:
    texts = clf_module._prepare([e.text for e in load_examples()][:400] + EDGE_CASES)
    for _, vec in model.features.transformer_list:
        for chunk in (texts, texts[:1], texts[-len(EDGE_CASES):]):
            ours, theirs = clf_module._tfidf(vec, chunk), vec.transform(chunk)
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            assert np.array_equal(ours.indptr, theirs.indptr)
            assert np.array_equal(ours.indices, theirs.indices)
            assert np.array_equal(ours.data, theirs.data)


def test_probabilities_are_identical_in_batches_and_one_by_one(model: IntentClassifier) -> None:
    texts = [e.text for e in load_examples()][::5] + EDGE_CASES
    expected = _reference(model, texts)
    assert np.array_equal(model.lexical_probabilities(texts), expected)
    one_by_one = np.vstack([model.lexical_probabilities([t]) for t in texts[:60]])
    assert np.array_equal(one_by_one, expected[:60])


def test_two_intent_models_and_stemmed_words_use_the_same_path() -> None:
    examples = [e for e in load_examples() if e.intent in ("refund", "greeting")]
    binary = train_from_examples(examples)
    texts = [e.text for e in examples][:50]
    assert np.array_equal(binary.lexical_probabilities(texts), _reference(binary, texts))
    stemmed = IntentClassifier.train([e.text for e in examples], [e.intent for e in examples],
                                     ClassifierConfig(stemmer="english"))
    assert np.array_equal(stemmed.lexical_probabilities(texts), _reference(stemmed, texts))
