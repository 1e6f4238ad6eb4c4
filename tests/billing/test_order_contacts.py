"""An order finds its customer's facts by the customer's contact (ADR 0117), not by the number the
business's ``order_details`` was addressed to: billing meters inbound messages and deliveries
under the contact's key (the first identifier the portfolio saw, a BSUID for a customer first
seen by username), and a merged contact's facts under the kept contact. The order's ad referral
(the customer's latest message from an ad) and its WhatsApp fees (the priced messages sent to the
customer) are read there. Real PostgreSQL, facts metered by billing itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from parley_billing import order_store
from parley_billing.domain.orders import requested_fact
from parley_billing.store import Metering

from .billing_scenario import import_example_rates
from .traffic import Event, feed

T = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TENANT, PN = "contact-shop", "pn-contact-shop"
BASE = {"tenant_id": TENANT, "phone_number_id": PN}


@pytest.fixture
async def rated(metering: Metering) -> AsyncIterator[Metering]:
    if not await metering.pool.fetchval("SELECT count(*) FROM billing.rate_cards"):
        async with metering.pool.acquire() as conn:
            await import_example_rates(conn)
    for table in ("orders", "order_facts", "order_carts", "order_events"):
        await metering.pool.execute(f"DELETE FROM billing.{table} WHERE tenant_id = $1", TENANT)
    yield metering


def _ad_message(wamid: str, phone: str, bsuid: str, contact: str, clid: str, at: datetime) -> Event:
    return ("inbound", {**BASE, "event_id": wamid, "wamid": wamid, "customer_wa_id": phone,
                        "customer_user_id": bsuid, "contact_id": contact, "type": "text", "occurred_at": at.isoformat(),
                        "referral": {"source_type": "ad", "source_id": "ad-7", "ctwa_clid": clid}})


def _template(wamid: str, phone: str, contact: str, at: datetime) -> list[Event]:
    """A utility template the business sent the customer, accepted, delivered and priced by Meta."""
    return [("sends", {**BASE, "event_id": f"{wamid}:accepted", "message_id": wamid, "outcome": "accepted",
                       "wamid": wamid, "recipient": contact, "is_template": True, "category": "utility",
                       "occurred_at": at.isoformat()}),
            ("statuses", {**BASE, "event_id": f"{wamid}:delivered", "wamid": wamid, "status": "delivered",
                          "recipient_id": phone, "contact_id": contact,
                          "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular",
                                      "category": "utility"},
                          "occurred_at": (at + timedelta(seconds=20)).isoformat()})]


def _order_details(ref: str, *, to: str, contact: str | None, at: datetime) -> dict[str, Any]:
    """The business's order_details as it comes on wa.messages.out: addressed to the phone number
    (where ingest sends), stamped with the customer's contact by ingest."""
    record: dict[str, Any] = {
        **BASE, "event_id": f"od-{ref}", "message_id": f"od-{ref}", "occurred_at": at.isoformat(), "to": to,
        "type": "interactive",
        "content": {"type": "order_details", "body": {"text": "Your tickets"}, "action": {
            "name": "review_and_pay", "parameters": {
                "reference_id": ref, "type": "digital-goods", "currency": "INR",
                "total_amount": {"value": 45000, "offset": 100},
                "order": {"status": "pending", "items": [], "subtotal": {"value": 45000, "offset": 100}}}}}}
    if contact is not None:
        record["contact_id"] = contact
    return record


async def _store_order(metering: Metering, record: dict[str, Any]) -> None:
    found = requested_fact(record)
    assert found is not None
    await order_store.record_fact(metering.pool, TENANT, found[0], found[1])


async def _ledger(metering: Metering, *wamids: str) -> dict[str, Any]:
    """What billing priced these messages at (its ledger), as an order's fees show it."""
    rows = await metering.pool.fetch(
        "SELECT currency, count(*) AS messages, sum(amount) FILTER (WHERE billable) AS amount FROM billing.ledger"
        " WHERE wamid = ANY($1::text[]) GROUP BY currency", list(wamids))
    return {"messages": sum(r["messages"] for r in rows),
            "amounts": {r["currency"]: r["amount"] or Decimal(0) for r in rows}}


async def _month(metering: Metering, ref: str) -> dict[str, Any]:
    summary = await order_store.month_summary(metering.pool, TENANT, since=datetime(2026, 12, 1, tzinfo=UTC),
                                              before=datetime(2027, 1, 1, tzinfo=UTC))
    return next(o for o in summary["orders"] if o["reference_id"] == ref)


def test_an_order_keeps_the_contact_it_was_stamped_with_and_shows_the_number_it_was_addressed_to() -> None:
    found = requested_fact(_order_details("r-1", to="919812350001", contact="IN.7134912086551001", at=T))
    assert found is not None
    assert (found[1].body["customer"], found[1].body["contact"]) == ("919812350001", "IN.7134912086551001")


def test_an_order_without_a_contact_is_the_customer_it_was_addressed_to() -> None:
    """Records from before ADR 0117 carry no contact: the address is the key billing metered under."""
    found = requested_fact(_order_details("r-2", to="+919812350002", contact=None, at=T))
    assert found is not None
    assert (found[1].body["customer"], found[1].body["contact"]) == ("+919812350002", "919812350002")


@pytest.mark.infra
async def test_an_order_to_a_customer_first_seen_by_bsuid_finds_its_ad_and_its_fees(rated: Metering) -> None:
    phone, bsuid = "919812350010", "IN.7134912086551010"
    await feed(rated, [_ad_message("in.bsuid.ad", phone, bsuid, bsuid, "clid-bsuid", T),
                       *_template("out.bsuid.1", phone, bsuid, T - timedelta(hours=3)),  # before the ad: charged
                       *_template("out.bsuid.2", phone, bsuid, T + timedelta(minutes=40))])
    await _store_order(rated, _order_details("bsuid-1", to=phone, contact=bsuid, at=T + timedelta(minutes=30)))

    order = await order_store.get_order(rated.pool, TENANT, "bsuid-1")
    assert order is not None
    assert order["ctwa_clid"] == "clid-bsuid"
    assert order["customer"] == phone  # the business sees whom Meta was asked to send to
    want = await _ledger(rated, "out.bsuid.1", "out.bsuid.2")
    assert want["messages"] == 2 and want["amounts"]["USD"] > 0
    assert order["fees"]["messages"] == 2
    assert {c: Decimal(a) for c, a in order["fees"]["amounts"].items()} == want["amounts"]
    month = await _month(rated, "bsuid-1")
    assert month["fees"]["messages"] == 2
    assert {c: Decimal(a) for c, a in month["fees"]["amounts"].items()} == want["amounts"]


@pytest.mark.infra
async def test_an_order_stamped_with_a_contact_merged_into_another_finds_the_kept_contacts_facts(
        rated: Metering) -> None:
    """The customer wrote from an ad under their BSUID contact; ingest then found their phone
    number's contact to be the same person and kept the BSUID one. The order_details was stamped
    with the phone number's contact before the merge and is stored after the fold."""
    phone, bsuid = "919812350020", "IN.7134912086551020"
    await feed(rated, [_ad_message("in.merged.ad", phone, bsuid, bsuid, "clid-merged", T)])
    await rated.fold_contacts(TENANT, bsuid, [phone])
    await feed(rated, [*_template("out.merged.1", phone, phone, T - timedelta(hours=3)),  # stamped before too
                       *_template("out.merged.2", phone, bsuid, T + timedelta(minutes=50))])
    await _store_order(rated, _order_details("merged-1", to=phone, contact=phone, at=T + timedelta(minutes=30)))

    order = await order_store.get_order(rated.pool, TENANT, "merged-1")
    assert order is not None
    assert order["ctwa_clid"] == "clid-merged"
    want = await _ledger(rated, "out.merged.1", "out.merged.2")
    assert order["fees"]["messages"] == 2
    assert {c: Decimal(a) for c, a in order["fees"]["amounts"].items()} == want["amounts"]
    assert want["messages"] == 2 and want["amounts"]["USD"] > 0
    month = await _month(rated, "merged-1")
    assert month["fees"]["messages"] == 2


@pytest.mark.infra
async def test_an_order_stored_before_its_contact_was_merged_shows_the_fees_of_the_kept_contact(
        rated: Metering) -> None:
    """Fees are read when the order is shown: a merge after the order moves them with the person."""
    phone, bsuid = "919812350030", "IN.7134912086551030"
    await _store_order(rated, _order_details("merged-2", to=phone, contact=phone, at=T + timedelta(minutes=30)))
    await feed(rated, _template("out.late.1", phone, bsuid, T + timedelta(minutes=45)))
    before = await order_store.get_order(rated.pool, TENANT, "merged-2")
    assert before is not None and before["fees"]["messages"] == 0  # two people, as far as billing knows yet

    await rated.fold_contacts(TENANT, bsuid, [phone])
    after = await order_store.get_order(rated.pool, TENANT, "merged-2")
    assert after is not None and after["fees"]["messages"] == 1
    assert (await _month(rated, "merged-2"))["fees"]["messages"] == 1
