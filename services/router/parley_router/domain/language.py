"""Language detection: script first, then lingua among the supported Latin-script languages.

Bengali and Arabic script identify their language outright (cheap and exact for the languages
Parley supports). Latin-script text goes to lingua restricted to the supported languages (fast,
and it never answers a language the router cannot route). Romanised Bengali ("Banglish") is
what lingua gets wrong most, so a lexicon of frequent Banglish words decides it first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

from parley_router.domain.text import keyword_form

SUPPORTED = ("en", "bn", "ar", "id", "tr", "es")

_LINGUA_LATIN = {
    Language.ENGLISH: "en",
    Language.INDONESIAN: "id",
    Language.TURKISH: "tr",
    Language.SPANISH: "es",
}
_BENGALI = re.compile("[\u0980-\u09ff]")
_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")
_LATIN = re.compile("[a-zA-Z\u00c0-\u024f]")

# Frequent romanised-Bengali words that are not (common) words of en/id/tr/es.
BANGLISH_MARKERS = frozenset("""
ami amar amake apni apnar apnake tumi tomar tomake amra amader apnara ki kivabe kemne keno kobe kothay
koto kotha korbo korte korun koren korechi korlam korsi chai chaichi chacchi dorkar hobe hoyni hoy nai
naki ache achhe acche kintu ekhon ekta ektu taka takata ferot bhai vai apu dada dhonnobad dhonyobad
shuvo shubho kemon bolun bolen bolo dekhte dekhan janan jante pathan pathiyechi pathaben lagbe
parbo parchi parina parchina pabo paini pelam pai niye diye theke jonno sathe bondho korun shomossa
somossa bhalo valo kharap onek beshi kom shob sob gula gulo er ke re na
""".split())
# Short words that are Banglish only in company: they count, but cannot decide alone.
_WEAK_MARKERS = frozenset({"er", "ke", "re", "na", "ki", "ami", "ta"})


def banglish_score(text: str) -> float:
    words = keyword_form(text).split()
    if not words:
        return 0.0
    strong = sum(1 for w in words if w in BANGLISH_MARKERS and w not in _WEAK_MARKERS)
    weak = sum(1 for w in words if w in _WEAK_MARKERS)
    return (strong + 0.5 * weak) / len(words) if strong else 0.0


# lingua's low-accuracy mode (trigrams only) is about 5x faster but unreliable on the short
# messages typical of chat ("hola", "stop"); it is used only for longer texts.
SHORT_TEXT_CHARS = 60


@lru_cache(maxsize=2)
def _lingua(low_accuracy: bool) -> LanguageDetector:
    builder = LanguageDetectorBuilder.from_languages(*_LINGUA_LATIN).with_preloaded_language_models()
    return (builder.with_low_accuracy_mode() if low_accuracy else builder).build()


class LanguageIdentifier:
    """Detects the language of customer messages (ISO 639-1 code, or None when unknown)."""

    def __init__(self, default: str | None = None) -> None:
        self.default = default

    def detect(self, text: str | None) -> str | None:
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str | None]) -> list[str | None]:
        out: list[str | None] = [None] * len(texts)
        latin_idx: list[int] = []
        latin_texts: list[str] = []
        for i, text in enumerate(texts):
            if not text or not text.strip():
                out[i] = self.default
                continue
            if text.isascii():  # the common case: no Bengali or Arabic script to count
                bn = ar = 0
                la = 1 if _LATIN.search(text) else 0
            else:
                bn, ar, la = len(_BENGALI.findall(text)), len(_ARABIC.findall(text)), len(_LATIN.findall(text))
            if bn == ar == la == 0:
                out[i] = self.default  # emoji, digits only
            elif bn >= max(ar, la):
                out[i] = "bn"
            elif ar >= la:
                out[i] = "ar"
            elif banglish_score(text) >= 0.2:
                out[i] = "bn"
            else:
                latin_idx.append(i)
                latin_texts.append(text)
        for low_accuracy in (False, True):
            group = [(i, t) for i, t in zip(latin_idx, latin_texts, strict=True)
                     if (len(t) > SHORT_TEXT_CHARS) == low_accuracy]
            if not group:
                continue
            detected = _lingua(low_accuracy).detect_languages_in_parallel_of([t for _, t in group])
            for (i, _), lang in zip(group, detected, strict=True):
                out[i] = _LINGUA_LATIN.get(lang, self.default) if lang is not None else self.default
        return out
