"""What the sender shows on its metrics beyond the send path: each business number's quality and
messaging-limit tier from Meta's ``phone_number_quality_update`` events, and the sends in doubt
(read from the store every few seconds, so an alert fires even when nothing else moves)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence

from parley_common.contracts import AccountEvent, ConsentChange
from parley_common.tenancy.directory import TenantDirectory
from prometheus_client import CollectorRegistry, Gauge

from parley_sender.delivery import Metrics
from parley_sender.store import SenderStore

log = logging.getLogger("parley.sender.observed")

# Meta's tier names (``current_limit``): unique customers a number may reach outside a window in 24 h.
TIERS = {"TIER_50": 50, "TIER_250": 250, "TIER_1K": 1_000, "TIER_2K": 2_000, "TIER_10K": 10_000,
         "TIER_100K": 100_000, "TIER_UNLIMITED": math.inf, "UNLIMITED": math.inf}
# The events Meta sends (anything else is kept as OTHER so the label set stays bounded).
QUALITY_EVENTS = frozenset({"FLAGGED", "UNFLAGGED", "UPGRADE", "DOWNGRADE", "THROUGHPUT_UPGRADE", "ONBOARDING"})


def observe_number_health(metrics: Metrics, events: Sequence[AccountEvent | ConsentChange],
                          directory: TenantDirectory | None = None) -> None:
    if metrics.number_quality is None or metrics.number_messaging_limit is None:
        return
    for ev in events:
        if not isinstance(ev, AccountEvent) or ev.kind != "phone_number_quality_update":
            continue
        number = number_of(ev, directory)
        if number is None:
            continue
        event = str(ev.value.get("event") or "").upper()
        event = event if event in QUALITY_EVENTS else "OTHER"
        for known in (*QUALITY_EVENTS, "OTHER"):
            metrics.number_quality.labels(number, known).set(1 if known == event else 0)
        tier = TIERS.get(str(ev.value.get("current_limit") or "").upper())
        if tier is not None:
            metrics.number_messaging_limit.labels(number).set(tier)


def number_of(ev: AccountEvent, directory: TenantDirectory | None) -> str | None:
    """The business number a quality update is about: Meta names it by its display number in a
    change keyed by the WABA, so it is looked up among the WABA's numbers; None when unknown
    (the label set stays the registered numbers)."""
    if directory is None or ev.phone_number_id in directory.numbers:
        return ev.phone_number_id
    display = "".join(ch for ch in str(ev.value.get("display_phone_number") or "") if ch.isdigit())
    for number in directory.numbers.values():
        if number.waba_id == ev.waba_id and "".join(ch for ch in number.display_phone_number if ch.isdigit()) \
                == display:
            return number.phone_number_id
    return None


def show_in_doubt_deadline(registry: CollectorRegistry, deadline_s: float) -> None:
    """The deadline after which the sweep reports a send in doubt as unresolved, so that the alert
    on overdue sends compares against this deployment's setting."""
    Gauge("parley_sender_in_doubt_deadline_seconds", "How long a send may stay in doubt before it is swept",
          registry=registry).set(deadline_s)


async def watch_in_doubt(metrics: Metrics, store: SenderStore, interval_s: float = 10.0) -> None:
    """Keep the in-doubt gauges current until cancelled."""
    while True:
        with contextlib.suppress(Exception):
            count, oldest = await store.in_doubt_summary()
            if metrics.in_doubt is not None and metrics.in_doubt_oldest is not None:
                metrics.in_doubt.set(count)
                metrics.in_doubt_oldest.set(oldest)
        await asyncio.sleep(interval_s)
