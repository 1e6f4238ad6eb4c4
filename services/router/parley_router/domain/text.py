"""Text normalisation shared by the classifier and the keyword signals.

Customers misspell, drop accents, stretch letters ("pleeease") and mix scripts. Normalising
before matching keeps keyword lists short and gives the classifier's n-grams more overlap.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_ARABIC_DIACRITICS = re.compile("[\u064b-\u0652\u0670\u0640]")  # harakat, dagger alef, tatweel
_ARABIC_FOLD = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ى": "ي", "ة": "ه", "ؤ": "و", "ئ": "ي"})
_STRETCH = re.compile(r"(\w)\1{2,}")
_SPACE = re.compile(r"\s+")


def _strip_latin_accents(text: str) -> str:
    """Drop accents on Latin letters only (Bengali vowel signs are combining marks too)."""
    if text.isascii():
        return text
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) and out and out[-1].isascii():
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


# One message's text is normalised by the signals, the language identifier and the classifier in
# turn: a small cache serves the later calls (and messages that repeat, like "hi" or "STOP").
_CACHED_TEXTS = 1024


@lru_cache(maxsize=_CACHED_TEXTS)
def normalise(text: str) -> str:
    """Case-folded, accent-free (Latin), Arabic-folded, de-stretched, single-spaced text."""
    t = unicodedata.normalize("NFKC", text).replace("ı", "i").casefold()
    t = _strip_latin_accents(t)
    if not t.isascii():
        t = _ARABIC_DIACRITICS.sub("", t).translate(_ARABIC_FOLD)
    t = _STRETCH.sub(r"\1\1", t)
    return _SPACE.sub(" ", t).strip()


class _PunctuationToSpace(dict[int, str | int]):
    """A str.translate table mapping punctuation and symbols (Unicode P*, S*) to a space,
    filled lazily per code point."""

    def __missing__(self, cp: int) -> str | int:
        out: str | int = " " if unicodedata.category(chr(cp))[0] in "PS" else cp
        self[cp] = out
        return out


_PUNCTUATION_TO_SPACE = _PunctuationToSpace()


@lru_cache(maxsize=_CACHED_TEXTS)
def keyword_form(text: str) -> str:
    """The normalised text without punctuation, for whole-message keyword matches."""
    return _SPACE.sub(" ", normalise(text).translate(_PUNCTUATION_TO_SPACE)).strip()
