"""Which contact a merge folds into which (``ContactMerged``, docs/adr/0117-contacts.md).

Billing keeps the contacts folded into another as aliases (absorbed → kept), flat: a kept contact
is never itself absorbed, so a fact's contact is mapped with one lookup. Merges are announced
at least once and, across partitions, in any order; folding by these rules gives the same
aliases whatever the order and however often each arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ContactFold:
    kept: str  # the contact the person's facts live under after the fold
    absorbed: tuple[str, ...]  # contacts whose facts move to ``kept`` and that become its aliases


def fold(kept: str, absorbed: Iterable[str], aliases: Mapping[str, str]) -> ContactFold:
    """The fold of a merge of ``absorbed`` into ``kept``, given the known aliases of the contacts
    it names. A contact already folded stands for the one it was folded into: a chain (A into B,
    then B into C) ends on C in either order, and a repeat absorbs nothing."""
    target = aliases.get(kept, kept)
    return ContactFold(target, tuple(sorted({aliases.get(a, a) for a in absorbed} - {target})))
