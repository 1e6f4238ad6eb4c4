"""The router's built-in defaults (data/defaults.yaml), loaded once: keywords, skills, replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import yaml

from parley_router.domain.text import keyword_form


@dataclass(frozen=True)
class RouterDefaults:
    opt_out_keywords: dict[str, frozenset[str]] = field(default_factory=dict)
    opt_in_keywords: dict[str, frozenset[str]] = field(default_factory=dict)
    opt_out_quick_replies: frozenset[str] = frozenset()
    opt_in_quick_replies: frozenset[str] = frozenset()
    skills: dict[str, str] = field(default_factory=dict)
    replies: dict[str, dict[str, str]] = field(default_factory=dict)
    confirmations: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def all_opt_out_keywords(self) -> frozenset[str]:
        return frozenset().union(*self.opt_out_keywords.values())

    @property
    def all_opt_in_keywords(self) -> frozenset[str]:
        return frozenset().union(*self.opt_in_keywords.values())


def _forms(words: list[str]) -> frozenset[str]:
    return frozenset(keyword_form(str(w)) for w in words)


@lru_cache(maxsize=1)
def load_defaults() -> RouterDefaults:
    raw = yaml.safe_load(resources.files("parley_router.data").joinpath("defaults.yaml").read_text("utf-8"))
    return RouterDefaults(
        opt_out_keywords={lang: _forms(ws) for lang, ws in raw["opt_out_keywords"].items()},
        opt_in_keywords={lang: _forms(ws) for lang, ws in raw["opt_in_keywords"].items()},
        opt_out_quick_replies=_forms(raw["opt_out_quick_replies"]),
        opt_in_quick_replies=_forms(raw["opt_in_quick_replies"]),
        skills=dict(raw["skills"]),
        replies={k: dict(v) for k, v in raw["replies"].items()},
        confirmations={k: dict(v) for k, v in raw["confirmations"].items()},
    )
