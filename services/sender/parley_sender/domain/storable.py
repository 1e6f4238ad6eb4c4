"""Send requests PostgreSQL would refuse, found before they reach the database.

The rule is the one every service shares (:mod:`parley_common.storable`, which ingest applies at
the door); records already on the topic, or written by other producers, are checked here, cheaply:
only a record holding a ``\\u`` escape that could encode U+0000 or a lone surrogate is parsed.
"""

from __future__ import annotations

import json
import re

from parley_common.storable import unstorable_fields

# JSON forbids raw control characters in strings, and bytes that are not UTF-8 fail the decoding
# earlier: only these escapes can carry what PostgreSQL refuses.
_SUSPECT = re.compile(rb"\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


class UnstorableRecord(ValueError):
    """A record holding a value PostgreSQL refuses (the message names the field)."""


def unstorable_reason(raw: bytes) -> str | None:
    """Why PostgreSQL could not store this JSON record (the field, never its value), or None."""
    if not _SUSPECT.search(raw):
        return None
    try:
        data = json.loads(raw)  # the standard library keeps lone surrogates (orjson refuses them)
    except ValueError:
        return None  # not JSON: the decoder names that problem
    found = next(unstorable_fields(data), None)
    return f"{found[0]} {found[1]}" if found else None
