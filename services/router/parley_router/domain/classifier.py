"""The statistical intent classifier: TF-IDF word and character n-grams, logistic regression.

Chosen by measurement (docs/adr/0020-router-intent-classifier.md): on CPU it trains in seconds,
classifies a message in tens of microseconds, and its probabilities give a usable confidence.
Character n-grams (within word boundaries) carry misspellings, transliteration and scripts
without word spacing conventions; word n-grams carry phrases. Out-of-scope is both a class (when
the training data has examples of it) and a confidence threshold tuned on validation data.
"""

from __future__ import annotations

import array
import dataclasses
import io
import pickle
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import Stemmer
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize
from sklearn.utils.extmath import safe_sparse_dot, softmax
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

from parley_router.domain.text import normalise

OUT_OF_SCOPE = "out_of_scope"
FORMAT_VERSION = 3
WORD_TOKENS = r"(?u)\b\w+\b"  # one-letter words count (Turkish "o", Spanish "y")
_WORD = re.compile(WORD_TOKENS)
_stemmers = threading.local()  # PyStemmer objects are not thread-safe: one per thread


def stem_words(texts: Sequence[str], language: str) -> list[str]:
    """Each text's words replaced by their Snowball stems (``language``: e.g. "english")."""
    cache: dict[str, Any] = _stemmers.__dict__.setdefault("by_language", {})
    stemmer = cache.get(language)
    if stemmer is None:
        stemmer = cache[language] = Stemmer.Stemmer(language)
    return [" ".join(stemmer.stemWords(_WORD.findall(t))) for t in texts]


@dataclass(frozen=True)
class Prediction:
    intent: str
    confidence: float


@dataclass(frozen=True)
class ClassifierConfig:
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    c: float = 20.0
    max_iter: int = 1000
    oos_threshold: float = 0.0  # below it the answer is out_of_scope (tune on validation data)
    # Snowball stemmer for the word n-grams (None: surface words). Measured: helps English data
    # (BANKING77), not the multilingual examples; see docs/adr/0020-router-intent-classifier.md.
    stemmer: str | None = None


def _features(cfg: ClassifierConfig) -> FeatureUnion:
    return FeatureUnion([
        # Texts arrive normalised (once, in _prepare): no per-vectorizer preprocessing.
        ("word", TfidfVectorizer(analyzer="word", ngram_range=cfg.word_ngrams, sublinear_tf=True,
                                 lowercase=False, token_pattern=WORD_TOKENS, dtype=np.float32)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=cfg.char_ngrams, sublinear_tf=True,
                                 lowercase=False, dtype=np.float32)),
    ])


def _prepare(texts: Sequence[str]) -> list[str]:
    return [normalise(t) for t in texts]


def _tfidf(vec: TfidfVectorizer, docs: Sequence[str]) -> sparse.csr_matrix:
    """``vec.transform(docs)`` without scikit-learn's per-call input validation.

    Validation (array checks, dataframe detection) costs about a millisecond per call, which is
    most of the time when one message is classified. The same steps as scikit-learn 1.9's
    CountVectorizer._count_vocab and TfidfTransformer.transform, in the same order and dtypes, so
    the matrix is the same bit for bit (tests/router/test_classifier_fast_path.py checks it).
    """
    tf = vec._tfidf
    if vec.binary or not tf.use_idf:  # configurations this classifier never builds
        return vec.transform(docs)
    vocabulary: dict[str, int] = vec.vocabulary_
    get = vocabulary.get
    analyze: Callable[[str], list[str]] = vec.build_analyzer()
    j_indices: list[int] = []
    values = array.array("i")
    indptr = [0]
    for doc in docs:
        counter: dict[int, int] = {}
        for feature in analyze(doc):
            idx = get(feature)
            if idx is not None:
                counter[idx] = counter.get(idx, 0) + 1
        j_indices.extend(counter)
        values.extend(counter.values())
        indptr.append(len(j_indices))
    x = sparse.csr_matrix(
        (np.frombuffer(values, dtype=np.intc), np.asarray(j_indices, dtype=np.int32),
         np.asarray(indptr, dtype=np.int32)), shape=(len(indptr) - 1, len(vocabulary)), dtype=vec.dtype)
    x.sort_indices()
    if tf.sublinear_tf:
        np.log(x.data, x.data)
        x.data += 1.0
    x.data *= tf.idf_[x.indices]
    if tf.norm == "l2":
        inplace_csr_row_normalize_l2(x)  # what normalize(x, "l2") does to a CSR matrix
    elif tf.norm is not None:
        x = normalize(x, norm=tf.norm, copy=False)
    return x


def _inputs(cfg: ClassifierConfig, prepared: list[str]) -> list[list[str]]:
    """What each vectorizer of the union reads: (stemmed) words, characters."""
    words = stem_words(prepared, cfg.stemmer) if cfg.stemmer else prepared
    return [words, prepared]


@dataclass
class IntentClassifier:
    features: FeatureUnion
    model: LogisticRegression
    config: ClassifierConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def intents(self) -> list[str]:
        return [str(c) for c in self.model.classes_]

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], config: ClassifierConfig | None = None,
              **meta: Any) -> IntentClassifier:
        cfg = config or ClassifierConfig()
        if len(set(labels)) < 2:
            raise ValueError("training needs examples of at least two intents")
        features = _features(cfg)
        prepared = _prepare(texts)
        x = sparse.hstack([vec.fit_transform(inp) for (_, vec), inp in
                           zip(features.transformer_list, _inputs(cfg, prepared), strict=True)], format="csr")
        model = LogisticRegression(C=cfg.c, max_iter=cfg.max_iter)
        model.fit(x, list(labels))
        return cls(features, model, cfg, {"examples": len(texts), **meta})

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        # The vectorizers are applied directly: FeatureUnion.transform goes through joblib, whose
        # fixed cost dominates when a single message is classified.
        inputs = _inputs(self.config, _prepare(texts))
        x = sparse.hstack([_tfidf(vec, inp) for (_, vec), inp in
                           zip(self.features.transformer_list, inputs, strict=True)], format="csr")
        model = self.model
        if len(model.classes_) <= 2:
            return model.predict_proba(x)  # type: ignore[no-any-return]
        # LogisticRegression.predict_proba for more than two classes, minus its input validation.
        scores = safe_sparse_dot(x, model.coef_.T, dense_output=True) + model.intercept_
        return softmax(scores, copy=False)  # type: ignore[no-any-return]

    def predict(self, texts: Sequence[str], *, oos_threshold: float | None = None) -> list[Prediction]:
        if not texts:
            return []
        threshold = self.config.oos_threshold if oos_threshold is None else oos_threshold
        proba = self.probabilities(texts)
        best = proba.argmax(axis=1)
        classes = self.model.classes_
        out: list[Prediction] = []
        for i, j in enumerate(best):
            conf = float(proba[i, j])
            intent = str(classes[j])
            out.append(Prediction(OUT_OF_SCOPE if conf < threshold else intent, conf))
        return out

    def with_threshold(self, oos_threshold: float) -> IntentClassifier:
        cfg = dataclasses.replace(self.config, oos_threshold=oos_threshold)
        return IntentClassifier(self.features, self.model, cfg, dict(self.meta))

    # Models are pickled scikit-learn objects: load only files this router wrote (its cache or
    # its own database schema), never user-supplied files.
    def dumps(self) -> bytes:
        buf = io.BytesIO()
        pickle.dump({"format": FORMAT_VERSION, "classifier": self}, buf, protocol=pickle.HIGHEST_PROTOCOL)
        return buf.getvalue()

    @classmethod
    def loads(cls, data: bytes) -> IntentClassifier:
        obj = pickle.loads(data)  # noqa: S301 - the router's own artefact, see above
        if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
            raise ValueError("not a model of this router version")
        clf = obj["classifier"]
        if not isinstance(clf, cls):
            raise ValueError("not an intent classifier")
        return clf


def tune_oos_threshold(max_proba_in: np.ndarray, correct_in: np.ndarray, max_proba_oos: np.ndarray,
                       *, min_in_scope_accuracy: float | None = None) -> float:
    """The threshold on the top probability that best separates in-scope from out-of-scope.

    Without a floor it maximises in-scope accuracy + out-of-scope recall (both after
    thresholding); with ``min_in_scope_accuracy`` it maximises recall subject to that floor.
    """
    candidates = np.unique(np.concatenate([max_proba_in, max_proba_oos, [0.0]]))
    best_t, best_score = 0.0, -1.0
    for t in candidates:
        acc = float(np.mean(correct_in & (max_proba_in >= t)))
        recall = float(np.mean(max_proba_oos < t)) if len(max_proba_oos) else 0.0
        if min_in_scope_accuracy is not None:
            score = recall if acc >= min_in_scope_accuracy else -1.0
        else:
            score = acc + recall
        if score > best_score:
            best_t, best_score = float(t), score
    return best_t
