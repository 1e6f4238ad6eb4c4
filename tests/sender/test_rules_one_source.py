"""The free entry point's start and reset and "the later consent change wins" have one source, the
pure domain (``domain/windows.py``, ``domain/consent.py``); production runs it against locked rows
(``SenderStore.change_windows``, ``SenderStore.apply_consent``). These tests drive the production
paths on real PostgreSQL and compare with the domain, event by event, and show that changing the
domain's rule changes what production stores. Before, the store ran SQL copies of both rules and
the domain versions were called only by tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from parley_common.contracts import InboundMessage, Referral
from parley_common.db import create_pool, migrate
from parley_sender.domain import windows as windows_rules
from parley_sender.domain.consent import ConsentState
from parley_sender.domain.windows import ConversationWindows
from parley_sender.handlers import track_windows
from parley_sender.store import MIGRATIONS, SenderStore

pytestmark = pytest.mark.infra

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SenderStore]:
    pool = await create_pool(database_url)
    async with pool.acquire() as conn:
        await migrate(conn, "sender", MIGRATIONS)
    yield SenderStore(pool)
    await pool.close()


def inbound(number: str, customer: str, at: datetime, *, referral: bool) -> InboundMessage:
    wamid = "wamid." + uuid.uuid4().hex
    return InboundMessage(
        event_id=wamid,
        tenant_id="t-rules",
        phone_number_id=number,
        occurred_at=at,
        received_at=at,
        wamid=wamid,
        customer_wa_id=customer,
        type="text",
        text="hi",
        referral=Referral(source_type="ad", source_id="ad-1") if referral else None,
    )


# (what happens, hours after T0): "ad" an inbound message from an ad, "msg" one without,
# "reply" the business's accepted reply.
SCENARIOS: dict[str, list[tuple[str, float]]] = {
    "reply inside 24 h starts the FEP": [("ad", 0), ("reply", 5)],
    "reply after 24 h starts nothing": [("ad", 0), ("reply", 25)],
    "second reply does not move the start": [("ad", 0), ("reply", 1), ("reply", 3)],
    "new ad inside the 72 h keeps the FEP": [("ad", 0), ("reply", 1), ("ad", 40), ("reply", 41)],
    "new ad after the 72 h offers a new FEP": [("ad", 0), ("reply", 1), ("ad", 80), ("reply", 81)],
    "new ad after the 72 h, no reply yet": [("ad", 0), ("reply", 1), ("ad", 80)],
    "a message without a referral offers none": [("msg", 0), ("reply", 1)],
    "late, older ad does not reset": [("ad", 10), ("reply", 11), ("ad", 2)],
}


async def run_production(store: SenderStore, number: str, customer: str, events: list[tuple[str, float]]) -> None:
    sender = cast(Any, SimpleNamespace(store=store))
    for what, hours in events:
        at = T0 + hours * H
        if what == "reply":
            await store.start_free_entry_points([(number, customer, at)])
        else:
            await track_windows(sender, [inbound(number, customer, at, referral=what == "ad")])


def run_domain(events: list[tuple[str, float]]) -> ConversationWindows:
    w = ConversationWindows()
    for what, hours in events:
        at = T0 + hours * H
        if what == "reply":
            w = replace(w, fep=w.fep.on_send(at))
        else:
            w = w.observe_inbound(at, from_referral=what == "ad")
    return w


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_the_stored_windows_are_the_domains(store: SenderStore, name: str) -> None:
    number, customer = "1555" + uuid.uuid4().hex[:8], "4915" + uuid.uuid4().hex[:8]
    await run_production(store, number, customer, SCENARIOS[name])
    stored = (await store.windows([(number, customer)]))[(number, customer)]
    assert stored == run_domain(SCENARIOS[name])


async def test_scenarios_cover_a_start_a_refusal_and_a_reset() -> None:
    """The table above is not vacuous: it holds FEPs started, not started, and reset."""
    results = {name: run_domain(events) for name, events in SCENARIOS.items()}
    assert results["reply inside 24 h starts the FEP"].fep.started_at == T0 + 5 * H
    assert results["reply after 24 h starts nothing"].fep.started_at is None
    assert results["new ad after the 72 h offers a new FEP"].fep.started_at == T0 + 81 * H
    assert results["new ad after the 72 h, no reply yet"].fep.started_at is None
    assert results["new ad inside the 72 h keeps the FEP"].fep.started_at == T0 + 1 * H


async def test_changing_the_domains_fep_length_changes_production(
    store: SenderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 2-hour FEP (only the domain's constant changed), an ad 3 hours after the start
    offers a new FEP in the database too: no SQL copy of the 72 hours is left to disagree."""
    events = [("ad", 0.0), ("reply", 0.5), ("ad", 3.5)]
    number, customer = "1555" + uuid.uuid4().hex[:8], "4915" + uuid.uuid4().hex[:8]
    monkeypatch.setattr(windows_rules, "FEP_LENGTH", 2 * H)
    await run_production(store, number, customer, events)
    stored = (await store.windows([(number, customer)]))[(number, customer)]
    assert stored.fep.started_at is None and stored.fep.referral_at == T0 + 3.5 * H
    monkeypatch.undo()
    number2 = "1555" + uuid.uuid4().hex[:8]
    await run_production(store, number2, customer, events)
    kept = (await store.windows([(number2, customer)]))[(number2, customer)]
    assert kept.fep.started_at == T0 + 0.5 * H  # the real 72 hours keep the first FEP


async def test_a_reply_and_a_new_message_at_once_both_count(store: SenderStore) -> None:
    """The window tracker and the send path write one row at once: each decides on the other's
    result (the row is locked), so neither the FEP's start nor the customer's message is lost,
    whichever goes first."""
    for _ in range(10):
        number, customer = "1555" + uuid.uuid4().hex[:8], "4915" + uuid.uuid4().hex[:8]
        await run_production(store, number, customer, [("ad", 0)])
        sender = cast(Any, SimpleNamespace(store=store))
        await asyncio.gather(
            store.start_free_entry_points([(number, customer, T0 + 2 * H)]),
            track_windows(sender, [inbound(number, customer, T0 + 3 * H, referral=False)]),
        )
        stored = (await store.windows([(number, customer)]))[(number, customer)]
        assert stored.fep.started_at == T0 + 2 * H
        assert stored.fep.referral_at == T0
        assert stored.csw.last_inbound_at == T0 + 3 * H


CONSENT = [
    ("stop", 10.0, "keyword"),
    ("resume", 5.0, "user_preferences"),  # older, arrives late: ignored
    ("resume", 12.0, "user_preferences"),
    ("stop", 12.0, "error_131050"),  # same instant: the later arrival wins
    ("resume", 11.0, "keyword"),  # older again
]


async def test_the_stored_consent_is_the_domains(store: SenderStore) -> None:
    tenant, customer = "t-" + uuid.uuid4().hex[:8], "4915" + uuid.uuid4().hex[:8]
    expected = ConsentState()
    for action, hours, source in CONSENT:
        at = T0 + hours * H
        returned = await store.apply_consent(tenant, customer, action, at, source)
        expected = expected.apply(action, at, source)
        assert returned == expected
        assert (await store.consent(tenant, [customer]))[customer] == expected
    assert expected == ConsentState(True, T0 + 12 * H, "error_131050")


async def test_changing_the_domains_consent_rule_changes_production(
    store: SenderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the domain said "the first change wins", production would store that."""

    def first_wins(self: ConsentState, action: str, at: datetime, source: str) -> ConsentState:
        return self if self.changed_at is not None else ConsentState(action == "stop", at, source)

    monkeypatch.setattr(ConsentState, "apply", first_wins)
    tenant, customer = "t-" + uuid.uuid4().hex[:8], "4915" + uuid.uuid4().hex[:8]
    await store.apply_consent(tenant, customer, "stop", T0, "keyword")
    await store.apply_consent(tenant, customer, "resume", T0 + H, "keyword")
    assert (await store.consent(tenant, [customer]))[customer].marketing_stopped is True


async def test_concurrent_first_changes_of_a_customer_both_decide(store: SenderStore) -> None:
    """Two first changes of one customer at once: one inserts, the other decides again against it."""
    tenant, customer = "t-" + uuid.uuid4().hex[:8], "4915" + uuid.uuid4().hex[:8]
    await asyncio.gather(
        store.apply_consent(tenant, customer, "stop", T0 + 2 * H, "keyword"),
        store.apply_consent(tenant, customer, "resume", T0 + H, "keyword"),
    )
    assert (await store.consent(tenant, [customer]))[customer] == ConsentState(True, T0 + 2 * H, "keyword")
