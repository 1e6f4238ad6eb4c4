"""Values PostgreSQL refuses to store, found before a request reaches the database.

PostgreSQL's ``text`` and ``jsonb`` cannot hold U+0000, and UTF-8 cannot encode a lone surrogate
(U+D800-U+DFFF), yet JSON can carry both as ``\\u`` escapes. A send request holding one would be
refused on every try and stop its partition; it is dead-lettered instead, with this reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Only a record containing one of these escapes can hold such a character (JSON forbids raw
# control characters in strings, and bytes that are not UTF-8 fail the decoding earlier).
_SUSPECT = re.compile(rb"\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def _bad_char(s: str) -> str | None:
    if "\x00" in s:
        return "a NUL character (U+0000)"
    for ch in s:
        if "\ud800" <= ch <= "\udfff":
            return "a lone surrogate (U+D800-U+DFFF)"
    return None


def _walk(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        bad = _bad_char(value)
        return f"{path or 'the request'} holds {bad}" if bad else None
    if isinstance(value, dict):
        for k, v in value.items():
            bad = _bad_char(k)
            if bad:
                return f"a key in {path or 'the request'} holds {bad}"
            found = _walk(v, f"{path}.{k}" if path else k)
            if found:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _walk(v, f"{path}[{i}]")
            if found:
                return found
    return None


def unstorable_reason(raw: bytes) -> str | None:
    """Why PostgreSQL could not store this JSON record (naming the field, not its value), or
    None. Fast for the usual record: one scan for the escapes that could matter."""
    if not _SUSPECT.search(raw):
        return None
    try:
        data = json.loads(raw)  # the standard library keeps lone surrogates (orjson refuses them)
    except ValueError:
        return None  # not JSON: the decoder names that problem
    return _walk(data, "")
