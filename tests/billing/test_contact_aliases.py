"""Late facts of a merged contact (ADR 0117): a fact stamped with a contact that billing already
folded into another (it waited on Kafka while ingest merged) is metered on the kept contact, so
the person is priced on one timeline: a reply inside the free entry point an ad opened under the
other identifier is free, not charged as a service message."""

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from parley_billing.domain.contacts import ContactFold, fold
from parley_billing.domain.facts import status_fact
from parley_billing.store import Metering

from .billing_scenario import import_example_rates
from .traffic import Event, feed

T = datetime(2026, 11, 12, 12, tzinfo=UTC)  # service replies are charged from 2026-10-01 (ADR 0080)
TENANT, PN = "alias-shop", "pn-alias"
PHONE, BSUID, PARENT = "919812340001", "IN.7134912086550001", "IN.7134912086559999"
BASE = {"tenant_id": TENANT, "phone_number_id": PN}


def _ad_message(wamid: str, contact: str, at: datetime) -> Event:
    """The customer writes from a click-to-WhatsApp ad: a 72-hour free entry point opens."""
    return ("inbound", {**BASE, "event_id": wamid, "wamid": wamid, "customer_wa_id": PHONE,
                        "customer_user_id": BSUID, "contact_id": contact, "type": "text",
                        "referral": {"source_type": "ad", "source_id": "1"}, "occurred_at": at.isoformat()})


def _reply(wamid: str, contact: str, at: datetime) -> list[Event]:
    """The business's free-form reply (a service message), accepted by Meta and delivered."""
    return [("sends", {**BASE, "event_id": f"{wamid}:accepted", "message_id": wamid, "outcome": "accepted",
                       "wamid": wamid, "recipient": contact, "is_template": False, "category": "service",
                       "occurred_at": at.isoformat()}),
            ("statuses", {**BASE, "event_id": f"{wamid}:delivered", "wamid": wamid, "status": "delivered",
                          "recipient_id": PHONE, "contact_id": contact,
                          "occurred_at": (at + timedelta(seconds=30)).isoformat()})]


def test_a_merge_absorbs_the_contacts_it_names_into_the_kept_one() -> None:
    assert fold("B", ["A", "B"], {}) == ContactFold("B", ("A",))


def test_a_chain_of_merges_ends_on_its_last_contact_in_either_order() -> None:
    # A into B, then B into C: the alias A -> B is repointed (the store does it for every alias of B)
    assert fold("C", ["B"], {}) == ContactFold("C", ("B",))
    # B into C first, then A into B: A goes to C directly
    assert fold("B", ["A"], {"B": "C"}) == ContactFold("C", ("A",))


def test_a_repeated_merge_absorbs_nothing() -> None:
    assert fold("B", ["A"], {"A": "B"}) == ContactFold("B", ())
    assert fold("B", ["A"], {"A": "C", "B": "C"}) == ContactFold("C", ())  # an earlier link, after the chain


def test_a_contact_named_after_it_was_folded_elsewhere_brings_the_contact_it_joined() -> None:
    assert fold("K", ["A"], {"A": "X"}) == ContactFold("K", ("X",))


async def _priced(metering: Metering, wamid: str) -> Any:
    return await metering.pool.fetchrow(
        "SELECT l.type, l.billable, l.amount, d.customer FROM billing.ledger l JOIN billing.deliveries d"
        " USING (wamid) WHERE wamid = $1", wamid)


async def import_rates_once(metering: Metering) -> None:
    if not await metering.pool.fetchval("SELECT count(*) FROM billing.rate_cards"):
        async with metering.pool.acquire() as conn:
            await import_example_rates(conn)


@pytest.fixture
async def rated(metering: Metering) -> Metering:
    """The example rate card (India's service rate from 2026-10-01 is 0.0014 USD a message)."""
    await import_rates_once(metering)
    return metering


async def _keys(metering: Metering, *wamids: str) -> dict[str, str]:
    rows = await metering.pool.fetch(
        "SELECT wamid, customer FROM billing.deliveries WHERE wamid = ANY($1::text[])"
        " UNION ALL SELECT wamid, customer FROM billing.inbound WHERE wamid = ANY($1::text[])"
        " UNION ALL SELECT 'send:' || wamid, customer FROM billing.sends WHERE wamid = ANY($1::text[])",
        list(wamids))
    return {r["wamid"]: r["customer"] for r in rows}


@pytest.mark.infra
async def test_a_reply_to_the_absorbed_contact_metered_after_the_merge_is_free_in_the_kept_contacts_ad_window(
        rated: Metering) -> None:
    """The ad's message came under the customer's BSUID contact; ingest then merged the phone
    number's contact into it, and billing folded; the reply stamped with the phone number's
    contact (sent before the merge) is metered only now."""
    await feed(rated, [_ad_message("in.ad", BSUID, T)])
    await rated.fold_contacts(TENANT, BSUID, [PHONE])
    await feed(rated, _reply("out.reply", PHONE, T + timedelta(minutes=5)))

    reply = await _priced(rated, "out.reply")
    assert (reply["type"], reply["billable"], reply["amount"]) == ("free_entry_point", False, Decimal(0))
    assert await _keys(rated, "out.reply") == {"out.reply": BSUID, "send:out.reply": BSUID}


@pytest.mark.infra
async def test_an_ad_message_under_the_absorbed_contact_metered_after_the_merge_makes_the_reply_free(
        rated: Metering) -> None:
    """The reply to the BSUID contact was metered first (charged: no window known yet); the ad's
    message, stamped with the phone number's contact before the merge, arrives after the fold."""
    await rated.fold_contacts(TENANT, BSUID, [PHONE])
    await feed(rated, _reply("out.reply", BSUID, T + timedelta(minutes=5)))
    charged = await _priced(rated, "out.reply")
    assert (charged["type"], charged["billable"], charged["amount"]) == ("regular", True, Decimal("0.0014"))

    await feed(rated, [_ad_message("in.ad", PHONE, T)])

    reply = await _priced(rated, "out.reply")
    assert (reply["type"], reply["billable"], reply["amount"]) == ("free_entry_point", False, Decimal(0))
    assert await _keys(rated, "in.ad") == {"in.ad": BSUID}


@pytest.mark.infra
async def test_a_chain_of_merges_lands_late_facts_on_the_last_kept_contact(rated: Metering) -> None:
    """The phone number's contact folded into the BSUID's, later the BSUID's into another: facts
    stamped with either absorbed contact land on the last one, one timeline."""
    await feed(rated, [_ad_message("in.ad", PARENT, T)])
    await rated.fold_contacts(TENANT, BSUID, [PHONE])
    await rated.fold_contacts(TENANT, PARENT, [BSUID])
    await feed(rated, _reply("out.1", PHONE, T + timedelta(minutes=5)))
    await feed(rated, _reply("out.2", BSUID, T + timedelta(minutes=6)))

    for wamid in ("out.1", "out.2"):
        reply = await _priced(rated, wamid)
        assert (reply["type"], reply["billable"], reply["customer"]) == ("free_entry_point", False, PARENT)
    aliases = await rated.pool.fetch("SELECT absorbed, kept FROM billing.contact_aliases WHERE tenant_id = $1",
                                     TENANT)
    assert {r["absorbed"]: r["kept"] for r in aliases} == {PHONE: PARENT, BSUID: PARENT}


@pytest.mark.infra
async def test_merges_announced_out_of_order_still_land_on_the_last_kept_contact(rated: Metering) -> None:
    """The second merge (BSUID into the parent) is folded before the first (phone into BSUID)."""
    await feed(rated, [_ad_message("in.ad", PARENT, T)])
    await rated.fold_contacts(TENANT, PARENT, [BSUID])
    await rated.fold_contacts(TENANT, BSUID, [PHONE])
    await feed(rated, _reply("out.1", PHONE, T + timedelta(minutes=5)))

    reply = await _priced(rated, "out.1")
    assert (reply["type"], reply["billable"], reply["customer"]) == ("free_entry_point", False, PARENT)


@pytest.mark.infra
async def test_a_repeated_merge_changes_nothing(rated: Metering) -> None:
    """ContactMerged is at-least-once: its repeat (and a repeat of an earlier link of a chain)
    moves no fact, re-prices nothing and leaves the aliases as they were."""
    await feed(rated, [_ad_message("in.ad", PHONE, T), *_reply("out.1", PHONE, T + timedelta(minutes=5))])
    await rated.fold_contacts(TENANT, BSUID, [PHONE])
    await rated.fold_contacts(TENANT, PARENT, [BSUID])
    before = await rated.pool.fetch("SELECT * FROM billing.ledger ORDER BY wamid")
    aliases = await rated.pool.fetch("SELECT * FROM billing.contact_aliases ORDER BY absorbed")

    assert await rated.fold_contacts(TENANT, PARENT, [BSUID]) == 0
    assert await rated.fold_contacts(TENANT, BSUID, [PHONE]) == 0

    assert await rated.pool.fetch("SELECT * FROM billing.ledger ORDER BY wamid") == before
    assert await rated.pool.fetch("SELECT * FROM billing.contact_aliases ORDER BY absorbed") == aliases
    assert await _keys(rated, "in.ad", "out.1") == {"in.ad": PARENT, "out.1": PARENT, "send:out.1": PARENT}


@pytest.mark.infra
async def test_aliases_are_per_tenant(rated: Metering) -> None:
    """The same identifier at another tenant is another person: its facts stay where they were stamped."""
    await rated.fold_contacts(TENANT, BSUID, [PHONE])
    other = {"tenant_id": "other-shop", "phone_number_id": "pn-other"}
    await feed(rated, [("statuses", {**other, "event_id": "o:delivered", "wamid": "o", "status": "delivered",
                                     "recipient_id": PHONE, "contact_id": PHONE,
                                     "occurred_at": T.isoformat()})])
    assert await _keys(rated, "o") == {"o": PHONE}


@pytest.mark.infra
async def test_facts_metered_while_their_contacts_are_folded_all_land_on_the_kept_contacts(
        metering: Metering) -> None:
    """Folds and deliveries of the folded contacts run at once, on separate connections (as on two
    replicas), each delivery on a number no fact of its contact was seen on before: none is left
    under an absorbed contact, whichever committed first."""
    people = range(40)
    work: list[Any] = []
    for k in people:
        delivery = status_fact({**BASE, "phone_number_id": f"pn-race-{k}", "wamid": f"race.{k}",
                                "status": "delivered", "recipient_id": f"9198000{k:05d}",
                                "contact_id": f"9198000{k:05d}", "occurred_at": T.isoformat()})
        assert delivery is not None
        work += [metering.record_statuses([delivery]),
                 metering.fold_contacts(TENANT, f"IN.race{k}", [delivery.customer])]
    random.Random(7).shuffle(work)
    await asyncio.gather(*work)
    rows = await metering.pool.fetch("SELECT wamid, customer FROM billing.deliveries WHERE wamid LIKE 'race.%'")
    assert {r["wamid"]: r["customer"] for r in rows} == {f"race.{k}": f"IN.race{k}" for k in people}
