"""One person's state, when ingest finds that two contacts are one person (ADR 0117).

Ingest decides contacts and merges (``ContactMerged`` on wa.account.events); the sender folds the
state it kept under the absorbed key into the kept one with these rules, then forgets the
absorbed key. Pure.
"""

from __future__ import annotations

from datetime import datetime

from parley_sender.domain.consent import ConsentState
from parley_sender.domain.windows import ConversationWindows, FreeEntryPointWindow


def merge_windows(kept: ConversationWindows, absorbed: ConversationWindows) -> ConversationWindows:
    """One person's windows with one number, from two contacts: the latest of each event."""
    csw = kept.csw
    if absorbed.csw.last_inbound_at is not None:
        csw = csw.observe(absorbed.csw.last_inbound_at)
    return ConversationWindows(csw, _merge_fep(kept.fep, absorbed.fep))


def _merge_fep(a: FreeEntryPointWindow, b: FreeEntryPointWindow) -> FreeEntryPointWindow:
    started = latest(a.started_at, b.started_at)
    referral = latest(a.referral_at, b.referral_at)
    return FreeEntryPointWindow(referral_at=referral, started_at=started)


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_consent(kept: ConsentState, absorbed: ConsentState) -> ConsentState:
    """The person's latest word on marketing, whichever identifier they gave it under."""
    if absorbed.changed_at is None:
        return kept
    if kept.changed_at is None or absorbed.changed_at > kept.changed_at:
        return absorbed
    return kept
