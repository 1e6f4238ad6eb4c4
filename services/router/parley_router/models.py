"""Building and caching intent models (adapter: reads example files, writes the model cache).

The shipped default model is trained at first use from the shipped multilingual examples (all
of them, held-out part included: it is the production model) and cached on disk under a
fingerprint of the examples and the classifier configuration, so a changed example file or a
new router version retrains automatically. A tenant's model is the default examples plus the
tenant's own intents.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from parley_router.corpora import Example, load_examples
from parley_router.domain.classifier import FORMAT_VERSION, ClassifierConfig, IntentClassifier
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


def train_from_examples(examples: list[Example], extra: Mapping[str, list[str]] | None = None,
                        config: ClassifierConfig = DEFAULT_CONFIG) -> IntentClassifier:
    """Train on shipped examples (their languages are known) and a tenant's own intents (whose
    languages are detected, so a language without examples of every intent consults the encoder)."""
    texts = [e.text for e in examples]
    labels = [e.intent for e in examples]
    languages: list[str | None] = [e.language for e in examples]
    extra_texts = [t for utterances in (extra or {}).values() for t in utterances]
    if extra_texts:
        languages.extend(LanguageIdentifier().detect_many(extra_texts))
    for intent, utterances in (extra or {}).items():
        texts.extend(utterances)
        labels.extend([intent] * len(utterances))
    return IntentClassifier.train(texts, labels, config, languages=languages,
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
    model = train_from_examples(examples)
    if path is not None:
        try:
            _atomic_write(path, model.dumps())
            for old in path.parent.glob("default-*"):  # models of other examples or versions
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot cache the default model", extra={"error": str(exc)})
    return model
