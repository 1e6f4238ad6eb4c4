"""PostgreSQL adapter of orders (schema ``billing``; ADR 0111).

Every fact is inserted once (``ON CONFLICT DO NOTHING`` on its id); only a new fact re-folds the
order, under the order row's lock, from *all* its facts, so two consumers (or a consumer and the
refund API) never write a view computed from a stale set.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from parley_common.db import AnyConnection

from parley_billing.domain.order_events import OrderMark, order_event
from parley_billing.domain.orders import (
    HistoryEntry,
    Money,
    OrderFact,
    OrderView,
    RefundDecision,
    decide_refund,
    fold_order,
    refund_fact,
)


@dataclass(frozen=True)
class FactResult:
    new: bool
    view: OrderView | None


async def record_fact(pool: asyncpg.Pool, tenant_id: str, reference_id: str, fact: OrderFact) -> FactResult:
    """Add one fact to an order; returns whether it was new and the order after it."""
    async with pool.acquire() as conn, conn.transaction():
        before = await _lock_order(conn, tenant_id, reference_id, fact.occurred_at)
        inserted = await conn.fetchval(
            "INSERT INTO billing.order_facts (tenant_id, reference_id, fact_id, kind, occurred_at, body)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
            tenant_id, reference_id, fact.fact_id, fact.kind, fact.occurred_at, dict(fact.body))
        if not inserted:
            return FactResult(False, None)
        return FactResult(True, await _refold(conn, tenant_id, reference_id, before))


async def record_cart(pool: asyncpg.Pool, tenant_id: str, cart: dict[str, Any]) -> bool:
    """Store a cart once; orders that answer it (already stored) learn its ad referral.

    The cart and the order that answers it come on two topics and may be stored at the same
    moment. Both sides take the cart's lock (:func:`_lock_cart`): the cart is inserted under it and
    committed, then the orders are looked for in a second transaction; an order reads the cart
    under it. So either the order's transaction sees the committed cart, or the cart's look-up
    sees the committed order. The look-up runs on every delivery of the cart (it only touches
    orders that do not carry the cart's referral yet), so a crash between the two transactions
    is mended when the cart is consumed again. The cart's transaction holds no order lock, so
    the two never wait for each other in a cycle.
    """
    async with pool.acquire() as conn:
        async with conn.transaction():
            await _lock_cart(conn, tenant_id, cart["wamid"])
            new = await _insert_cart(conn, tenant_id, cart)
        async with conn.transaction():
            refs = await conn.fetch(
                "SELECT reference_id FROM billing.orders WHERE tenant_id = $1 AND conversation_wamid = $2"
                " AND ctwa_clid IS DISTINCT FROM $3 ORDER BY reference_id", tenant_id, cart["wamid"],
                (cart.get("referral") or {}).get("ctwa_clid"))
            for r in refs:
                before = await _lock_order(conn, tenant_id, r["reference_id"], datetime.now(UTC))
                await _refold(conn, tenant_id, r["reference_id"], before)
        return new


async def _lock_cart(conn: AnyConnection, tenant_id: str, wamid: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('parley-billing-cart:' || $1 || ':' || $2))",
                       tenant_id, wamid)


async def _insert_cart(conn: AnyConnection, tenant_id: str, cart: dict[str, Any]) -> bool:
    items = cart.get("product_items") or []
    total = sum((Decimal(str(i["item_price"])) * int(i["quantity"]) for i in items), Decimal(0))
    currencies = {i.get("currency") for i in items}
    referral = cart.get("referral") or {}
    inserted = await conn.fetchval(
        "INSERT INTO billing.order_carts (wamid, tenant_id, phone_number_id, customer, catalog_id, currency,"
        " total, ctwa_clid, occurred_at, body) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
        " ON CONFLICT DO NOTHING RETURNING true",
        cart["wamid"], tenant_id, cart["phone_number_id"],
        cart.get("customer_wa_id") or cart.get("customer_user_id"), cart.get("catalog_id"),
        currencies.pop() if len(currencies) == 1 else None, total, referral.get("ctwa_clid"),
        datetime.fromisoformat(cart["occurred_at"]), cart)
    return bool(inserted)


async def _lock_order(conn: AnyConnection, tenant_id: str, reference_id: str, at: datetime) -> OrderMark:
    """Lock the order's row (created when new); returns its state and refunded amount before."""
    await conn.execute(
        "INSERT INTO billing.orders (tenant_id, reference_id, state, first_at, updated_at, view)"
        " VALUES ($1, $2, 'unknown', $3, now(), '{}') ON CONFLICT DO NOTHING",
        tenant_id, reference_id, at)
    row = await conn.fetchrow("SELECT state, refunded FROM billing.orders WHERE tenant_id = $1 AND reference_id = $2"
                              " FOR UPDATE", tenant_id, reference_id)
    assert row is not None
    return OrderMark(row["state"], row["refunded"] or Decimal(0))


AD_REFERRAL_WINDOW = "72 hours"  # Meta's free entry point window after a click-to-WhatsApp ad


def _kept(tenant: str, contact: str) -> str:
    """SQL: the key billing keeps the facts of the contact ``contact`` under (both SQL
    expressions): the contact it was folded into (``billing.contact_aliases``, ADR 0117), else itself."""
    return (f"coalesce((SELECT ca.kept FROM billing.contact_aliases ca WHERE ca.tenant_id = {tenant}"
            f" AND ca.absorbed = {contact}), {contact})")


# An order's contact as stored; orders not re-folded since it was added fall back to the customer.
_ORDER_CONTACT = "coalesce(contact, ltrim(customer, '+'))"


async def _ad_referral(conn: AnyConnection, tenant_id: str, view: OrderView, first_at: datetime) -> str | None:
    """The click-to-WhatsApp ad an order came from: the cart its order_details answered, else the
    referral of the customer's latest message from an ad on that number in the 72 hours before
    the order (the conversation the ad opened). The customer is the order's contact (ADR 0117), as
    billing meters inbound messages, followed into the contact it was merged into, if any."""
    if view.conversation_wamid:
        await _lock_cart(conn, tenant_id, view.conversation_wamid)  # see record_cart
        clid = await conn.fetchval("SELECT ctwa_clid FROM billing.order_carts WHERE wamid = $1 AND tenant_id = $2",
                                   view.conversation_wamid, tenant_id)
        if isinstance(clid, str):
            return clid
    if not view.phone_number_id or not view.contact:
        return None
    clid = await conn.fetchval(
        f"SELECT ctwa_clid FROM billing.inbound WHERE phone_number_id = $1 AND customer = {_kept('$3', '$2')}"
        f" AND tenant_id = $3 AND ctwa_clid IS NOT NULL AND received_at <= $4"
        f" AND received_at > $4 - interval '{AD_REFERRAL_WINDOW}'"
        " ORDER BY received_at DESC LIMIT 1", view.phone_number_id, view.contact, tenant_id, first_at)
    return clid if isinstance(clid, str) else None


async def _facts(conn: AnyConnection, tenant_id: str, reference_id: str) -> list[OrderFact]:
    rows = await conn.fetch(
        "SELECT fact_id, kind, occurred_at, body FROM billing.order_facts"
        " WHERE tenant_id = $1 AND reference_id = $2", tenant_id, reference_id)
    return [OrderFact(r["fact_id"], r["kind"], r["occurred_at"], r["body"]) for r in rows]


async def _refold(conn: AnyConnection, tenant_id: str, reference_id: str, before: OrderMark | None) -> OrderView:
    """Recompute the order from all its facts (its row is locked) and, when it entered another
    state or refunded more, record the order event (ADR 0113) in the same transaction."""
    view = fold_order(reference_id, await _facts(conn, tenant_id, reference_id))
    first = min((h.at for h in view.history), default=datetime.now(UTC))
    if view.ctwa_clid is None:
        view = dataclasses.replace(view, ctwa_clid=await _ad_referral(conn, tenant_id, view, first))
    body = view_json(view)
    await conn.execute(
        "UPDATE billing.orders SET state = $3, phone_number_id = $4, customer = $5, currency = $6,"
        " total = $7, captured = $8, refunded = $9, conversation_wamid = $10, ctwa_clid = $11,"
        " first_at = $12, updated_at = now(), view = $13, contact = $14 WHERE tenant_id = $1 AND reference_id = $2",
        tenant_id, reference_id, view.state, view.phone_number_id, view.customer, view.currency,
        _amount(view.total), _amount(view.captured), _amount(view.refunded), view.conversation_wamid,
        view.ctwa_clid, first, body, view.contact)
    event = order_event(tenant_id, view, body, datetime.now(UTC), before)
    if event is not None:
        await conn.execute(
            "INSERT INTO billing.order_events (event_id, tenant_id, reference_id, type, state, phone_number_id, body)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            event["event_id"], tenant_id, reference_id, event["type"], event["state"], event["phone_number_id"], event)
    return view


def _amount(m: Money | None) -> Decimal | None:
    return m.amount if m else None


def money_json(m: Money | None) -> dict[str, Any] | None:
    return m.as_meta() if m else None


def _entry_json(h: HistoryEntry) -> dict[str, Any]:
    return {"at": h.at.isoformat(), "kind": h.kind, "status": h.status, "fact_id": h.fact_id,
            "amount": money_json(h.amount), "note": h.note}


def view_json(view: OrderView) -> dict[str, Any]:
    """The order as the API shows it (amounts as Meta's exact {value, offset} with the currency)."""
    return {
        "reference_id": view.reference_id,
        "state": view.state,
        "currency": view.currency,
        "total": money_json(view.total),
        "captured": money_json(view.captured),
        "refunded": money_json(view.refunded),
        "payment_status": view.payment_status,
        "fulfilment_status": view.fulfilment_status,
        "customer": view.customer,
        "phone_number_id": view.phone_number_id,
        "items": list(view.items),
        "conversation_wamid": view.conversation_wamid,
        "ctwa_clid": view.ctwa_clid,
        "history": [_entry_json(h) for h in view.history],
        "problems": list(view.problems),
    }


FEE_WINDOW = "24 hours"


async def get_order(pool: asyncpg.Pool, tenant_id: str, reference_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT view, first_at, updated_at, {_ORDER_CONTACT} AS contact FROM billing.orders"
                              " WHERE tenant_id = $1 AND reference_id = $2", tenant_id, reference_id)
    if row is None or not isinstance(row["view"], dict) or not row["view"]:
        return None
    view = dict(row["view"])
    view["earned"] = _earned(view)
    last_at = max((datetime.fromisoformat(h["at"]) for h in view.get("history") or []), default=row["first_at"])
    view["fees"] = await order_fees(pool, tenant_id, view.get("phone_number_id"), row["contact"],
                                    row["first_at"], last_at)
    return view


def _earned(view: dict[str, Any]) -> dict[str, Any] | None:
    """What the order earned: captured minus refunded, exact, in the order's currency."""
    captured, refunded, currency = view.get("captured"), view.get("refunded"), view.get("currency")
    if not isinstance(captured, dict) or not currency:
        return None
    total = Money.from_meta(captured, currency, where="captured").amount
    if isinstance(refunded, dict):
        total -= Money.from_meta(refunded, currency, where="refunded").amount
    return Money(total, currency).as_meta()


async def order_fees(pool: asyncpg.Pool, tenant_id: str, phone_number_id: str | None, contact: str | None,
                     first_at: datetime, last_at: datetime) -> dict[str, Any]:
    """What the order's conversation cost in WhatsApp fees: the priced messages the business sent
    the customer from the order's number, from a day before the order's first fact to a day after
    its last one, in event time (billing's ledger, list prices). The customer is the order's
    ``contact``, as billing meters deliveries (ADR 0117), followed into the contact it was merged into."""
    if not phone_number_id or not contact:
        return {"messages": 0, "amounts": {}, "window": None}
    rows = await pool.fetch(
        "SELECT l.currency, count(*) AS messages, sum(l.amount) FILTER (WHERE l.billable) AS amount"
        " FROM billing.ledger l JOIN billing.deliveries d ON d.wamid = l.wamid"
        f" WHERE l.tenant_id = $1 AND l.phone_number_id = $2 AND d.customer = {_kept('$1', '$3::text')}"
        f" AND l.delivered_at BETWEEN $4::timestamptz - interval '{FEE_WINDOW}'"
        f" AND $5::timestamptz + interval '{FEE_WINDOW}' GROUP BY l.currency",
        tenant_id, phone_number_id, contact, first_at, last_at)
    return {"messages": sum(r["messages"] for r in rows),
            "amounts": {r["currency"]: str(r["amount"] or Decimal(0)) for r in rows},
            "window": f"{FEE_WINDOW} either side of the order"}


async def list_orders(pool: asyncpg.Pool, tenant_id: str, *, state: str | None, limit: int,
                      before: datetime | None, since: datetime | None = None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT reference_id, state, currency, total, captured, refunded, customer, phone_number_id,"
        " ctwa_clid, first_at, updated_at FROM billing.orders"
        " WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::timestamptz IS NULL OR first_at < $3)"
        " AND ($5::timestamptz IS NULL OR first_at >= $5)"
        " ORDER BY first_at DESC, reference_id LIMIT $4", tenant_id, state, before, limit, since)
    return [
        {"reference_id": r["reference_id"], "state": r["state"], "currency": r["currency"],
         **{k: None if r[k] is None else str(r[k]) for k in ("total", "captured", "refunded")},
         "customer": r["customer"], "phone_number_id": r["phone_number_id"], "ctwa_clid": r["ctwa_clid"],
         "first_at": r["first_at"].isoformat(), "updated_at": r["updated_at"].isoformat()}
        for r in rows
    ]


async def order_summary(pool: asyncpg.Pool, tenant_id: str, *, since: datetime | None = None,
                        before: datetime | None = None) -> list[dict[str, Any]]:
    """Orders per state and currency: how many, captured, refunded and earned (captured - refunded)."""
    rows = await pool.fetch(
        "SELECT state, currency, count(*) AS orders, sum(captured) AS captured, sum(refunded) AS refunded"
        " FROM billing.orders WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR first_at >= $2)"
        " AND ($3::timestamptz IS NULL OR first_at < $3)"
        " GROUP BY state, currency ORDER BY state, currency", tenant_id, since, before)
    return [{"state": r["state"], "currency": r["currency"], "orders": r["orders"],
             "captured": None if r["captured"] is None else str(r["captured"]),
             "refunded": None if r["refunded"] is None else str(r["refunded"]),
             "earned": str((r["captured"] or Decimal(0)) - (r["refunded"] or Decimal(0)))} for r in rows]


# The priced messages of the conversations of the orders started in [$2, $3): (order, message) pairs;
# an order's customer is its contact as billing keeps it (see order_fees).
_ORDER_MESSAGES = (
    f"WITH o AS (SELECT reference_id, phone_number_id, {_kept('$1', _ORDER_CONTACT)} AS contact, first_at,"
    " coalesce((SELECT max((h->>'at')::timestamptz) FROM jsonb_array_elements(view->'history') h), first_at)"
    " AS last_at FROM billing.orders"
    " WHERE tenant_id = $1 AND first_at >= $2 AND first_at < $3 AND state <> 'unknown'"
    f" AND phone_number_id IS NOT NULL AND {_ORDER_CONTACT} IS NOT NULL),"
    " m AS (SELECT o.reference_id, l.wamid, l.currency, l.amount, l.billable FROM o"
    " JOIN billing.deliveries d ON d.phone_number_id = o.phone_number_id AND d.customer = o.contact"
    " JOIN billing.ledger l ON l.wamid = d.wamid AND l.tenant_id = $1"
    f" WHERE l.delivered_at BETWEEN o.first_at - interval '{FEE_WINDOW}' AND o.last_at + interval '{FEE_WINDOW}')"
)


async def month_summary(pool: asyncpg.Pool, tenant_id: str, *, since: datetime, before: datetime,
                        order_limit: int = 1000) -> dict[str, Any]:
    """A month of orders (started in ``[since, before)``): per currency, how many, captured,
    refunded and earned; the WhatsApp fees of their conversations (the priced messages the
    business sent each order's customer from its number, a day either side of the order, as on
    one order) per fee currency, a message in two orders' windows counted once in the month; and
    the same per order (there a message counts for every order whose window holds it)."""
    money = await pool.fetch(
        "SELECT currency, count(*) AS orders, count(*) FILTER (WHERE captured IS NOT NULL) AS paid,"
        " coalesce(sum(captured), 0) AS captured, coalesce(sum(refunded), 0) AS refunded"
        " FROM billing.orders WHERE tenant_id = $1 AND first_at >= $2 AND first_at < $3 AND state <> 'unknown'"
        " GROUP BY currency ORDER BY currency", tenant_id, since, before)
    by_order = await pool.fetch(
        _ORDER_MESSAGES + " SELECT reference_id, currency, count(*) AS messages,"
        " sum(amount) FILTER (WHERE billable) AS amount FROM m GROUP BY reference_id, currency",
        tenant_id, since, before)
    month_fees = await pool.fetch(
        _ORDER_MESSAGES + " SELECT currency, count(*) AS messages, sum(amount) FILTER (WHERE billable) AS amount"
        " FROM (SELECT DISTINCT wamid, currency, amount, billable FROM m) u GROUP BY currency ORDER BY currency",
        tenant_id, since, before)
    per_order: dict[str, dict[str, Any]] = {}
    for r in by_order:
        fees = per_order.setdefault(r["reference_id"], {"messages": 0, "amounts": {}})
        fees["messages"] += r["messages"]
        fees["amounts"][r["currency"]] = str(r["amount"] or Decimal(0))
    orders = await pool.fetch(
        "SELECT reference_id, state, currency, captured, refunded FROM billing.orders WHERE tenant_id = $1"
        " AND first_at >= $2 AND first_at < $3 AND state <> 'unknown' ORDER BY first_at, reference_id LIMIT $4",
        tenant_id, since, before, order_limit + 1)
    return {
        "currencies": [{"currency": r["currency"], "orders": r["orders"], "paid_orders": r["paid"],
                        "captured": str(r["captured"]), "refunded": str(r["refunded"]),
                        "earned": str(r["captured"] - r["refunded"])} for r in money],
        "fees": {"messages": sum(r["messages"] for r in month_fees),
                 "amounts": {r["currency"]: str(r["amount"] or Decimal(0)) for r in month_fees},
                 "window": f"{FEE_WINDOW} either side of each order"},
        "orders": [{"reference_id": r["reference_id"], "state": r["state"], "currency": r["currency"],
                    "captured": None if r["captured"] is None else str(r["captured"]),
                    "refunded": None if r["refunded"] is None else str(r["refunded"]),
                    "earned": str((r["captured"] or Decimal(0)) - (r["refunded"] or Decimal(0))),
                    "fees": per_order.get(r["reference_id"], {"messages": 0, "amounts": {}})}
                   for r in orders[:order_limit]],
        "orders_truncated": len(orders) > order_limit,
    }


# --- refunds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundOutcome:
    status: str  # recorded | replayed | refused | conflict | not_found
    reason: str
    order: dict[str, Any] | None = None
    amount: Money | None = None
    notice: dict[str, Any] | None = None


def refund_fingerprint(amount: Money | None, reason: str | None, notify: bool) -> str:
    canonical = orjson.dumps([None if amount is None else amount.as_meta(), reason, notify])
    return hashlib.sha256(canonical).hexdigest()


async def request_refund(
    pool: asyncpg.Pool, tenant_id: str, reference_id: str, key: str, amount: Money | None,
    reason: str | None, notify: bool, *, now: datetime,
    notice_for: Any,
) -> RefundOutcome:
    """Record a refund once per (order, key), never beyond what was captured.

    ``notice_for(view, refund_amount, key)`` builds the customer's order_status notice (a dict,
    the OutboundMessage record) or returns None; it is stored in the same transaction (outbox).
    """
    fingerprint = refund_fingerprint(amount, reason, notify)
    async with pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchrow(
            "SELECT state, refunded FROM billing.orders WHERE tenant_id = $1 AND reference_id = $2 FOR UPDATE",
            tenant_id, reference_id)
        if locked is None:
            return RefundOutcome("not_found", f"no order {reference_id!r} for this tenant")
        previous = await conn.fetchrow(
            "SELECT fingerprint, amount, currency, notice FROM billing.order_refunds"
            " WHERE tenant_id = $1 AND reference_id = $2 AND idempotency_key = $3",
            tenant_id, reference_id, key)
        if previous is not None:
            view = await conn.fetchval("SELECT view FROM billing.orders WHERE tenant_id = $1 AND reference_id = $2",
                                       tenant_id, reference_id)
            if previous["fingerprint"] != fingerprint:
                return RefundOutcome("conflict", "this Idempotency-Key was used for a different refund", view)
            return RefundOutcome("replayed", "already recorded", view,
                                 Money(previous["amount"], previous["currency"]), previous["notice"])
        order = fold_order(reference_id, await _facts(conn, tenant_id, reference_id))
        decision: RefundDecision = decide_refund(order, amount)
        if not decision.accepted or decision.amount is None:
            return RefundOutcome("refused", decision.reason, view_json(order))
        seq = await conn.fetchval(
            "SELECT count(*) FROM billing.order_facts WHERE tenant_id = $1 AND reference_id = $2 AND kind = 'refund'",
            tenant_id, reference_id)
        fact = refund_fact(key, decision.amount, now, reason, int(seq))
        await conn.execute(
            "INSERT INTO billing.order_facts (tenant_id, reference_id, fact_id, kind, occurred_at, body)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            tenant_id, reference_id, fact.fact_id, fact.kind, fact.occurred_at, dict(fact.body))
        after = await _refold(conn, tenant_id, reference_id,
                              OrderMark(locked["state"], locked["refunded"] or Decimal(0)))
        notice = notice_for(after, decision.amount, key) if notify else None
        await conn.execute(
            "INSERT INTO billing.order_refunds (tenant_id, reference_id, idempotency_key, fingerprint, amount,"
            " currency, reason, notice, notice_topic_key) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            tenant_id, reference_id, key, fingerprint, decision.amount.amount, decision.amount.currency,
            reason, notice, None if notice is None else notice.get("phone_number_id"))
        return RefundOutcome("recorded", "ok", view_json(after), decision.amount, notice)


async def mark_notice_published(pool: asyncpg.Pool, tenant_id: str, reference_id: str, key: str) -> None:
    await pool.execute(
        "UPDATE billing.order_refunds SET notice_published = now() WHERE tenant_id = $1 AND reference_id = $2"
        " AND idempotency_key = $3 AND notice_published IS NULL", tenant_id, reference_id, key)


async def unpublished_notices(pool: asyncpg.Pool, limit: int = 500) -> Sequence[asyncpg.Record]:
    return await pool.fetch(
        "SELECT tenant_id, reference_id, idempotency_key, notice FROM billing.order_refunds"
        " WHERE notice IS NOT NULL AND notice_published IS NULL ORDER BY created_at LIMIT $1", limit)


async def orders_to_look_up(pool: asyncpg.Pool, *, pending_for_s: float, limit: int = 200) -> list[asyncpg.Record]:
    """Orders requested or pending longer than ``pending_for_s`` (and younger than a week), with
    the payment configuration their order_details named."""
    return await pool.fetch(
        "SELECT o.tenant_id, o.reference_id, o.phone_number_id, f.body->>'payment_configuration' AS configuration"
        " FROM billing.orders o JOIN billing.order_facts f ON f.tenant_id = o.tenant_id"
        " AND f.reference_id = o.reference_id AND f.kind = 'requested'"
        " WHERE o.state IN ('requested', 'payment_pending')"
        " AND o.updated_at < now() - make_interval(secs => $1) AND o.first_at > now() - interval '7 days'"
        " ORDER BY o.updated_at LIMIT $2", pending_for_s, limit)
