"""Readers of training and evaluation data: the shipped multilingual examples, BANKING77, CLINC150.

Shipped examples live in ``data/examples/<lang>.txt``: ``[intent]`` section headers, one
utterance per line, ``#`` comments. ``bn-latn.txt`` is romanised Bengali (language ``bn``).
A fixed, deterministic part (every fifth utterance of each intent and file) is held out for
testing, so the figures in the ADR can be rerun.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HOLD_OUT_EVERY = 5


@dataclass(frozen=True)
class Example:
    text: str
    intent: str
    language: str
    source: str  # file stem, e.g. "bn-latn"
    held_out: bool = False


def parse_examples(text: str, *, language: str, source: str) -> list[Example]:
    out: list[Example] = []
    intent: str | None = None
    position = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            intent, position = line[1:-1].strip(), 0
            continue
        if intent is None:
            raise ValueError(f"{source}: utterance before the first [intent] header")
        out.append(Example(line, intent, language, source, position % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1))
        position += 1
    return out


def _language_of(stem: str) -> str:
    return stem.split("-")[0]


def load_examples(directory: Path | None = None) -> list[Example]:
    """The project's multilingual examples (or the ``*.txt`` files of ``directory``)."""
    out: list[Example] = []
    if directory is None:
        root = resources.files("parley_router.data").joinpath("examples")
        files = sorted((p.name, p.read_text("utf-8")) for p in root.iterdir() if p.name.endswith(".txt"))
    else:
        files = sorted((p.name, p.read_text("utf-8")) for p in Path(directory).glob("*.txt"))
    for name, text in files:
        stem = name.removesuffix(".txt")
        out.extend(parse_examples(text, language=_language_of(stem), source=stem))
    if not out:
        raise ValueError("no examples found")
    return out


def load_banking77(datasets_dir: Path, split: str) -> tuple[list[str], list[str]]:
    with (Path(datasets_dir) / "banking77" / f"{split}.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def load_clinc150(datasets_dir: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Splits train, val, test, oos_train, oos_val, oos_test as (texts, labels)."""
    data = json.loads((Path(datasets_dir) / "clinc150" / "data_full.json").read_text("utf-8"))
    return {k: ([t for t, _ in v], [label for _, label in v]) for k, v in data.items()}


def few_shot(texts: list[str], labels: list[str], per_intent: int,
             seed: int = 0) -> tuple[list[str], list[str]]:
    """``per_intent`` examples of each label, drawn with a fixed seed."""
    rng = random.Random(seed)
    by: dict[str, list[str]] = {}
    for t, label in zip(texts, labels, strict=True):
        by.setdefault(label, []).append(t)
    xs: list[str] = []
    ys: list[str] = []
    for label in sorted(by):
        for t in rng.sample(by[label], min(per_intent, len(by[label]))):
            xs.append(t)
            ys.append(label)
    return xs, ys
