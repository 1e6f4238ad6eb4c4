"""Values every consumer can store: the check ingest makes at the door.

PostgreSQL refuses U+0000 in ``text`` and in ``jsonb`` (``unsupported Unicode escape sequence``),
and a lone UTF-16 surrogate cannot be encoded as UTF-8 at all (orjson, asyncpg and Kafka's
consumers all refuse it). A record carrying either would be accepted by ingest and then fail in
every consumer that stores it, so ingest refuses it first, naming the field (never the value).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator

_NUL = "\x00"


def string_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None when it can."""
    if _NUL in value:
        return "contains NUL (U+0000), which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate, which is not valid Unicode text"
    return None


def _storable(value: str) -> str:
    reason = string_problem(value)
    if reason is not None:
        raise ValueError(reason)
    return value


StorableStr = Annotated[str, AfterValidator(_storable)]
"""A string field or parameter that every consumer can store: a request carrying NUL or a lone
surrogate in it is a 422 naming the field (FastAPI and pydantic report the location)."""


def unstorable_fields(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, reason) of every string, or object key, in ``value`` that cannot be stored.

    Lists are addressed by index (``messages.3.text.body``). Only the path and the reason are
    reported: the value itself may be personal data. Iterative, so any nesting depth a JSON
    parser accepts is walked without recursion.
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            reason = string_problem(v)
            if reason is not None:
                yield (where or "$", reason)
        elif isinstance(v, dict):
            children = []
            for k, child in v.items():
                key = str(k)
                key_problem = string_problem(key)
                if key_problem is not None:
                    yield (_join(where, "<key>"), "an object key " + key_problem)
                    continue
                children.append((_join(where, key), child))
            stack.extend(reversed(children))  # depth first, in document order
        elif isinstance(v, list | tuple):
            stack.extend(reversed([(_join(where, str(i)), child) for i, child in enumerate(v)]))


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part
