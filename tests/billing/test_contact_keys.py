"""Billing's windows are the person's (ADR 0117): facts key on the contact ingest decided, and a
BSUID-keyed contact whose number a record carried is priced in the number's market."""

from datetime import UTC, datetime, timedelta

import pytest
from parley_billing.domain.facts import inbound_record, send_fact, status_fact
from parley_billing.store import Metering

from .traffic import feed

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).isoformat()
PHONE, BSUID = "8801712345678", "BD.71349120865530274"


def _status(**who: str) -> dict[str, object]:
    return {"wamid": "wamid.S1", "phone_number_id": "pn1", "status": "delivered", "occurred_at": AT, **who}


def _inbound(**who: str) -> dict[str, object]:
    return {"wamid": "wamid.I1", "phone_number_id": "pn1", "occurred_at": AT, **who}


def test_a_username_customer_and_the_same_customer_by_phone_share_one_timeline() -> None:
    before = inbound_record(_inbound(customer_user_id=BSUID, contact_id=BSUID))
    after = inbound_record(_inbound(customer_wa_id=PHONE, customer_user_id=BSUID, contact_id=BSUID))
    delivered = status_fact(_status(recipient_id=PHONE, recipient_user_id=BSUID, contact_id=BSUID))
    sent = send_fact({"wamid": "wamid.S1", "phone_number_id": "pn1", "outcome": "accepted", "recipient": BSUID,
                      "occurred_at": AT})
    assert delivered is not None and sent is not None
    assert before.customer == after.customer == delivered.customer == sent.customer == BSUID
    # the contact's number, for its market (billing.contacts: BSUID key -> number)
    assert (after.user_id, after.phone) == (BSUID, PHONE)
    assert (delivered.user_id, delivered.phone) == (BSUID, PHONE)


def test_a_phone_keyed_contact_stays_keyed_by_its_number_and_records_without_a_contact_key_as_before() -> None:
    by_phone = status_fact(_status(recipient_id=PHONE, recipient_user_id=BSUID, contact_id=PHONE))
    assert by_phone is not None and by_phone.customer == PHONE
    legacy = status_fact(_status(recipient_id=PHONE, recipient_user_id=BSUID))
    assert legacy is not None and (legacy.customer, legacy.user_id, legacy.phone) == (PHONE, BSUID, PHONE)
    only_user = inbound_record(_inbound(customer_user_id=BSUID))
    assert (only_user.customer, only_user.user_id, only_user.phone) == (BSUID, None, None)


@pytest.mark.infra
async def test_a_merge_moves_a_timeline_to_the_kept_contact_and_reprices_it(metering: Metering) -> None:
    """A customer came from an ad under their username (BSUID contact); the business's reply went to
    their phone number, a separate contact until ingest merged them: then the reply falls in the
    free entry point the ad opened."""
    t = datetime(2026, 11, 12, 12, tzinfo=UTC)
    tenant, pn, phone, bsuid = "merge-shop", "pn-merge", "8801712349876", "BD.7134912086553099"
    base = {"tenant_id": tenant, "phone_number_id": pn}
    await feed(metering, [
        ("inbound", {**base, "event_id": "mi1", "wamid": "mi1", "customer_user_id": bsuid, "contact_id": bsuid,
                     "type": "text", "referral": {"source_type": "ad", "source_id": "1"},
                     "occurred_at": t.isoformat()}),
        ("sends", {**base, "event_id": "mo1:accepted", "message_id": "mo1", "outcome": "accepted", "wamid": "mo1",
                   "recipient": phone, "is_template": False, "category": "service",
                   "occurred_at": (t + timedelta(minutes=5)).isoformat()}),
        ("statuses", {**base, "event_id": "mo1:delivered", "wamid": "mo1", "status": "delivered",
                      "recipient_id": phone, "contact_id": phone,
                      "occurred_at": (t + timedelta(minutes=6)).isoformat()}),
    ])
    before = await metering.pool.fetchrow("SELECT type FROM billing.ledger WHERE wamid = 'mo1'")
    assert before["type"] != "free_entry_point"
    assert await metering.fold_contacts(tenant, bsuid, [phone]) >= 1
    assert await metering.fold_contacts(tenant, bsuid, [phone]) == 0  # a repeat moves nothing
    after = await metering.pool.fetchrow("SELECT type FROM billing.ledger WHERE wamid = 'mo1'")
    assert after["type"] == "free_entry_point"
    keys = await metering.pool.fetch("SELECT customer FROM billing.deliveries WHERE wamid = 'mo1'"
                                     " UNION SELECT customer FROM billing.inbound WHERE wamid = 'mi1'")
    assert [r["customer"] for r in keys] == [bsuid]
