"""The intent classifier: TF-IDF n-grams and a multilingual sentence encoder, each with a
logistic regression, their probabilities averaged when the encoder is consulted.

Chosen by measurement (docs/adr/0020-router-intent-classifier.md). The lexical half (TF-IDF word
and character n-grams) trains in seconds, classifies a message in tens of microseconds and
carries what the encoder cannot: romanised Bengali, Arabizi, misspellings, the tenant's own
words. The encoder half (``encoder.py``) carries meaning across languages and from few examples.
The encoder is consulted only for messages that need it (``needs_encoder``: the lexical answer
is unsure, or the message's language has no examples of every intent), because it costs several
times the lexical half. Out-of-scope is both a class (when the training data has examples of
it) and a confidence threshold tuned on validation data.

Models are stored as NumPy ``.npz`` archives of plain arrays and JSON (never pickles), read
with ``allow_pickle=False`` and checked shape by shape (``IntentClassifier.loads``).
"""

from __future__ import annotations

import array
import dataclasses
import io
import json
import re
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import Stemmer
from scipy import sparse
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize
from sklearn.utils.extmath import safe_sparse_dot, softmax
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

from parley_router.domain.encoder import DIM as ENCODER_DIM
from parley_router.domain.encoder import SentenceEncoder, shared_encoder
from parley_router.domain.text import normalise

OUT_OF_SCOPE = "out_of_scope"
FORMAT_VERSION = 4
# The encoder is consulted when the lexical model's top probability is below this (1.0: always,
# 0.0: only for languages without examples of every intent); measured in ADR 0020.
DEFAULT_ENCODER_GATE = 0.7
MAX_MODEL_BYTES = 256 * 1024 * 1024  # a stored model larger than this is refused unread
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
    # The sentence-encoder half: a logistic regression on the encoder's vectors (C measured),
    # and the weight of the lexical probabilities where both are used.
    encoder: bool = True
    encoder_c: float = 30.0
    lexical_weight: float = 0.5
    # For a message in a language without examples of every intent, the lexical half is biased
    # towards the intents that have examples in it: it weighs less there.
    lexical_weight_uncovered: float = 0.25


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


def _linear_proba(model: LogisticRegression, x: Any) -> np.ndarray:
    """LogisticRegression.predict_proba without its per-call input validation (same numbers)."""
    scores = safe_sparse_dot(x, model.coef_.T, dense_output=True) + model.intercept_
    if scores.shape[1] == 1:  # two classes: one logistic score, as scikit-learn does it
        p1 = expit(scores[:, 0])
        return np.column_stack([1 - p1, p1])
    return softmax(scores, copy=False)  # type: ignore[no-any-return]


@dataclass
class IntentClassifier:
    features: FeatureUnion
    model: LogisticRegression
    config: ClassifierConfig
    meta: dict[str, Any] = field(default_factory=dict)
    # The encoder half (None: lexical only), with the same classes in the same order.
    encoder_model: LogisticRegression | None = None
    # Languages with examples of every intent (None: not known, taken as all). A message in
    # another language always consults the encoder.
    languages: frozenset[str] | None = None

    @property
    def intents(self) -> list[str]:
        return [str(c) for c in self.model.classes_]

    @property
    def classes(self) -> np.ndarray:
        return self.model.classes_  # type: ignore[no-any-return]

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], config: ClassifierConfig | None = None,
              *, languages: Sequence[str | None] | None = None, embeddings: np.ndarray | None = None,
              encoder: SentenceEncoder | None = None, **meta: Any) -> IntentClassifier:
        """Train both halves. ``languages`` (one per text, None if unknown) decides which languages
        count as covered; ``embeddings`` are the texts' encoder vectors if already computed."""
        cfg = config or ClassifierConfig()
        if len(set(labels)) < 2:
            raise ValueError("training needs examples of at least two intents")
        features = _features(cfg)
        prepared = _prepare(texts)
        x = sparse.hstack([vec.fit_transform(inp) for (_, vec), inp in
                           zip(features.transformer_list, _inputs(cfg, prepared), strict=True)], format="csr")
        model = LogisticRegression(C=cfg.c, max_iter=cfg.max_iter)
        model.fit(x, list(labels))
        encoder_model = None
        if cfg.encoder:
            if embeddings is None:
                embeddings = (encoder or shared_encoder()).encode(texts)
            if embeddings.shape != (len(texts), ENCODER_DIM):
                raise ValueError("one encoder vector per training text is needed")
            # Balanced: a tenant intent with ten examples beside built-in intents with hundreds.
            encoder_model = LogisticRegression(C=cfg.encoder_c, max_iter=cfg.max_iter, class_weight="balanced")
            encoder_model.fit(embeddings, list(labels))
        covered = covered_languages(labels, languages) if languages is not None else None
        return cls(features, model, cfg, {"examples": len(texts), **meta}, encoder_model, covered)

    def lexical_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The TF-IDF half's probabilities (rows: texts, columns: ``classes``)."""
        # The vectorizers are applied directly: FeatureUnion.transform goes through joblib, whose
        # fixed cost dominates when a single message is classified.
        inputs = _inputs(self.config, _prepare(texts))
        x = sparse.hstack([_tfidf(vec, inp) for (_, vec), inp in
                           zip(self.features.transformer_list, inputs, strict=True)], format="csr")
        return _linear_proba(self.model, x)

    def needs_encoder(self, lexical: np.ndarray, languages: Sequence[str | None] | None = None,
                      gate: float = DEFAULT_ENCODER_GATE) -> np.ndarray:
        """Which messages the encoder should see: the lexical answer is below ``gate``, or the
        message's language lacks examples of some intent (boolean mask over the rows)."""
        if self.encoder_model is None:
            return np.zeros(len(lexical), dtype=bool)
        mask: np.ndarray = lexical.max(axis=1) < gate
        mask |= self.uncovered(languages, len(lexical))
        return mask

    def uncovered(self, languages: Sequence[str | None] | None, n: int) -> np.ndarray:
        """Which messages are in a language without examples of every intent."""
        if languages is None or self.languages is None:
            return np.zeros(n, dtype=bool)
        covered = self.languages
        return np.fromiter((lang is not None and lang not in covered for lang in languages), dtype=bool, count=n)

    def fuse(self, lexical: np.ndarray, mask: np.ndarray, embeddings: np.ndarray,
             languages: Sequence[str | None] | None = None) -> np.ndarray:
        """Probabilities: the weighted average of both halves on the masked rows (whose encoder
        vectors are ``embeddings``, in row order), the lexical ones elsewhere."""
        if self.encoder_model is None or not mask.any():
            return lexical
        cfg = self.config
        w = np.where(self.uncovered(languages, len(lexical))[mask], cfg.lexical_weight_uncovered,
                     cfg.lexical_weight)[:, None]
        out = lexical.copy()
        out[mask] = w * lexical[mask] + (1.0 - w) * _linear_proba(self.encoder_model, embeddings)
        return out

    def probabilities(self, texts: Sequence[str], languages: Sequence[str | None] | None = None, *,
                      gate: float = DEFAULT_ENCODER_GATE, encoder: SentenceEncoder | None = None) -> np.ndarray:
        lexical = self.lexical_probabilities(texts)
        mask = self.needs_encoder(lexical, languages, gate)
        if not mask.any():
            return lexical
        embeddings = (encoder or shared_encoder()).encode([t for t, m in zip(texts, mask, strict=True) if m])
        return self.fuse(lexical, mask, embeddings, languages)

    def predict(self, texts: Sequence[str], languages: Sequence[str | None] | None = None, *,
                oos_threshold: float | None = None, gate: float = DEFAULT_ENCODER_GATE,
                encoder: SentenceEncoder | None = None) -> list[Prediction]:
        if not texts:
            return []
        return self.predictions(self.probabilities(texts, languages, gate=gate, encoder=encoder), oos_threshold)

    def predictions(self, proba: np.ndarray, oos_threshold: float | None = None) -> list[Prediction]:
        threshold = self.config.oos_threshold if oos_threshold is None else oos_threshold
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
        return IntentClassifier(self.features, self.model, cfg, dict(self.meta), self.encoder_model, self.languages)

    # Storage: an .npz of plain arrays (vocabularies and metadata as UTF-8 JSON bytes), written
    # and read without pickle, so a model from shared storage or a file can hold data only.
    def dumps(self) -> bytes:
        (_, word), (_, char) = self.features.transformer_list
        header = {"format": FORMAT_VERSION, "config": dataclasses.asdict(self.config), "meta": self.meta,
                  "classes": self.intents,
                  "languages": sorted(self.languages) if self.languages is not None else None}
        arrays: dict[str, np.ndarray] = {
            "header": _json_bytes(header),
            "word_vocab": _json_bytes(_vocabulary_list(word)), "word_idf": np.asarray(word.idf_),
            "char_vocab": _json_bytes(_vocabulary_list(char)), "char_idf": np.asarray(char.idf_),
            "coef": np.asarray(self.model.coef_), "intercept": np.asarray(self.model.intercept_),
        }
        if self.encoder_model is not None:
            arrays["enc_coef"] = np.asarray(self.encoder_model.coef_)
            arrays["enc_intercept"] = np.asarray(self.encoder_model.intercept_)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def loads(cls, data: bytes, *, max_bytes: int = MAX_MODEL_BYTES) -> IntentClassifier:
        """Read a model written by ``dumps``; anything else is a ValueError naming the problem."""
        if len(data) > max_bytes:
            raise ValueError(f"model larger than {max_bytes} bytes")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"not a model archive: {exc}") from None
        return _from_arrays(arrays)


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode(), dtype=np.uint8)


def _json_from(arrays: dict[str, np.ndarray], key: str) -> Any:
    a = _array(arrays, key, ndim=1)
    if a.dtype != np.uint8:
        raise ValueError(f"model field {key!r} is not UTF-8 bytes")
    try:
        return json.loads(a.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model field {key!r} is not JSON: {exc}") from None


def _array(arrays: dict[str, np.ndarray], key: str, *, ndim: int, floating: bool = False) -> np.ndarray:
    a = arrays.get(key)
    if a is None:
        raise ValueError(f"model field {key!r} is missing")
    if a.ndim != ndim:
        raise ValueError(f"model field {key!r} has {a.ndim} dimensions, expected {ndim}")
    if floating:
        if a.dtype not in (np.float32, np.float64):
            raise ValueError(f"model field {key!r} is not floating point")
        if not np.isfinite(a).all():
            raise ValueError(f"model field {key!r} has non-finite values")
    return a


def _vocabulary_list(vec: TfidfVectorizer) -> list[str]:
    terms = [""] * len(vec.vocabulary_)
    for term, j in vec.vocabulary_.items():
        terms[j] = term
    return terms


def _string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"model field {what!r} is not a list of strings")
    if len(set(value)) != len(value):
        raise ValueError(f"model field {what!r} has repeated entries")
    return value


def _from_arrays(arrays: dict[str, np.ndarray]) -> IntentClassifier:
    header = _json_from(arrays, "header")
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise ValueError("not a model of this router version")
    cfg = _config_from(header.get("config"))
    classes = _string_list(header.get("classes"), "classes")
    if len(classes) < 2:
        raise ValueError("a model needs at least two classes")
    features = _features(cfg)
    n_features = 0
    for (name, vec) in features.transformer_list:
        vocab = _string_list(_json_from(arrays, f"{name}_vocab"), f"{name}_vocab")
        idf = _array(arrays, f"{name}_idf", ndim=1, floating=True)
        if len(idf) != len(vocab):
            raise ValueError(f"model field {name}_idf does not match its vocabulary")
        vec.vocabulary_ = {term: j for j, term in enumerate(vocab)}
        vec.idf_ = idf
        n_features += len(vocab)
    rows = 1 if len(classes) == 2 else len(classes)
    model = _linear_model(cfg.c, cfg.max_iter, classes, _array(arrays, "coef", ndim=2, floating=True),
                          _array(arrays, "intercept", ndim=1, floating=True), rows, n_features, "coef")
    encoder_model = None
    if "enc_coef" in arrays:
        encoder_model = _linear_model(cfg.encoder_c, cfg.max_iter, classes,
                                      _array(arrays, "enc_coef", ndim=2, floating=True),
                                      _array(arrays, "enc_intercept", ndim=1, floating=True), rows,
                                      ENCODER_DIM, "enc_coef")
    languages = header.get("languages")
    covered = frozenset(_string_list(languages, "languages")) if languages is not None else None
    meta = header.get("meta")
    return IntentClassifier(features, model, cfg, meta if isinstance(meta, dict) else {}, encoder_model, covered)


def _config_from(raw: Any) -> ClassifierConfig:
    """The stored configuration, field by field against the types of ClassifierConfig."""
    if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(ClassifierConfig)}:
        raise ValueError("model config does not have the fields of this router version")
    defaults = ClassifierConfig()
    values: dict[str, Any] = {}
    for name, v in raw.items():
        d = getattr(defaults, name)
        if isinstance(d, tuple):
            ok = isinstance(v, list) and len(v) == 2 and all(type(i) is int and 0 < i <= 10 for i in v)
            v = tuple(v) if ok else v
        elif name == "stemmer":
            ok = v is None or (isinstance(v, str) and v in Stemmer.algorithms())
        elif isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int):
            ok = type(v) is int and v > 0
        else:
            ok = type(v) in (int, float) and np.isfinite(v) and v >= 0
            v = float(v) if ok else v
        if not ok:
            raise ValueError(f"model config field {name!r} is invalid")
        values[name] = v
    return ClassifierConfig(**values)


def _linear_model(c: float, max_iter: int, classes: list[str], coef: np.ndarray, intercept: np.ndarray,
                  rows: int, n_features: int, what: str) -> LogisticRegression:
    if coef.shape != (rows, n_features) or intercept.shape != (rows,):
        raise ValueError(f"model field {what!r} has shape {coef.shape}, expected {(rows, n_features)}")
    model = LogisticRegression(C=c, max_iter=max_iter)  # fitted state only: never fitted again
    model.classes_ = np.array(classes)
    model.coef_ = coef
    model.intercept_ = intercept
    model.n_features_in_ = n_features
    return model


def covered_languages(labels: Sequence[str], languages: Sequence[str | None]) -> frozenset[str]:
    """Languages with at least one example of every intent (out-of-scope examples aside)."""
    per: dict[str, set[str]] = {}
    for label, lang in zip(labels, languages, strict=True):
        if lang is not None:
            per.setdefault(label, set()).add(lang)
    intents = [k for k in set(labels) if k != OUT_OF_SCOPE]
    sets = [per.get(k, set()) for k in intents]
    return frozenset(set.intersection(*sets)) if sets else frozenset()


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
