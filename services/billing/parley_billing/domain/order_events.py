"""What the business (and its ad platform) is told when an order changes (pure; ADR 0113).

An order *event* is emitted when the fold of an order's facts (``domain.orders.fold_order``)
enters another state, or refunds more: ``change_of(before, after)`` compares the two folds. The
event's id is a hash of (tenant, reference id, state, amount refunded), so the same change found
twice (a replay, a second replica) is one event; an order that skipped a state because its facts
arrived late (a capture folded before its ``order_details``) emits only the state it entered,
and its history in the body shows the rest. Entering ``unknown`` (a payment without an order) is
not an event: the order is not the business's yet.

A *conversion* is what Meta's Conversions API would receive for a click-to-WhatsApp ad: a
``Purchase`` with the ad's ``ctwa_clid``, once, when an order that came from an ad was paid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from parley_common.contracts import OrderEvent, body_hash
from parley_common.outbound import Endpoint, EndpointPolicySpec
from pydantic import BaseModel, ConfigDict, Field

from parley_billing.domain.orders import OrderView

EVENT_TYPES: dict[str, str] = {
    "requested": "order.requested",
    "payment_pending": "order.payment_pending",
    "captured": "order.payment_captured",
    "payment_failed": "order.payment_failed",
    "shipped": "order.shipped",
    "completed": "order.completed",
    "canceled": "order.canceled",
    "refunded_partly": "order.refunded",
    "refunded_fully": "order.refunded",
}
ORDERS_ENDPOINT = "orders"  # the endpoint names of billing's outbox rows
CONVERSIONS_ENDPOINT = "conversions"


@dataclass(frozen=True)
class OrderMark:
    """What of an order decides whether it changed: its state and how much was refunded."""

    state: str
    refunded: Decimal = Decimal(0)

    @staticmethod
    def of(view: OrderView) -> OrderMark:
        return OrderMark(view.state, view.refunded.amount if view.refunded else Decimal(0))


def change_of(before: OrderMark | None, after: OrderView) -> str | None:
    """The event type when ``after`` is a change worth telling, else None."""
    mark = OrderMark.of(after)
    if mark.state not in EVENT_TYPES or mark == before:
        return None
    if before is not None and before.state == mark.state and mark.refunded <= before.refunded:
        return None
    return EVENT_TYPES[mark.state]


def event_id(tenant_id: str, view: OrderView) -> str:
    mark = OrderMark.of(view)
    return "order:" + body_hash(tenant_id, view.reference_id, mark.state, str(mark.refunded.normalize()))


def order_event(tenant_id: str, view: OrderView, order: Mapping[str, Any], at: datetime,
                before: OrderMark | None) -> dict[str, Any] | None:
    """The ``OrderEvent`` record (as JSON) for this fold, or None when nothing changed.

    ``order`` is the order as the API shows it (``order_store.view_json``)."""
    kind = change_of(before, view)
    if kind is None or not view.phone_number_id:
        return None
    return {
        "schema_version": 1, "event_id": event_id(tenant_id, view), "tenant_id": tenant_id,
        "phone_number_id": view.phone_number_id, "occurred_at": at.isoformat(), "received_at": at.isoformat(),
        "kind": "order", "type": kind, "reference_id": view.reference_id, "state": view.state,
        "payment_status": view.payment_status, "ctwa_clid": view.ctwa_clid, "order": dict(order),
    }


# --- where the events go (the tenant's settings) -------------------------------------------


class TenantOrderSettings(BaseModel):
    """``settings.orders`` of a tenant::

        orders:
          endpoint: {url: "https://shop.example/parley/orders", secret_ref: "env:SHOP_ORDERS_SECRET"}
          conversions: {url: "https://ads.example/conversions", secret_ref: "env:SHOP_CAPI_SECRET"}
          endpoint_policy: {allow_http: false, allow_private_addresses: false}   # operator's choice
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    endpoint: Endpoint | None = None
    conversions: Endpoint | None = None
    endpoint_policy: EndpointPolicySpec = Field(default_factory=EndpointPolicySpec)

    @classmethod
    def from_tenant_settings(cls, settings: Mapping[str, Any] | None) -> TenantOrderSettings:
        raw = (settings or {}).get("orders")
        return cls.model_validate(raw if isinstance(raw, Mapping) else {})

    def endpoint_named(self, name: str) -> Endpoint | None:
        return {ORDERS_ENDPOINT: self.endpoint, CONVERSIONS_ENDPOINT: self.conversions}.get(name)


def calls_for(event: Mapping[str, Any], settings: TenantOrderSettings) -> list[tuple[str, str, bytes]]:
    """The endpoint calls an order event causes: ``(endpoint name, call id, body)``.

    Every event goes to the tenant's order endpoint (when it has one); a paid order that came
    from a click-to-WhatsApp ad also makes one conversion (its id does not depend on the state, so
    a capture followed by a shipment converts once)."""
    calls: list[tuple[str, str, bytes]] = []
    if settings.endpoint is not None:
        calls.append((ORDERS_ENDPOINT, str(event["event_id"]),
                      OrderEvent.model_validate(event).model_dump_json().encode()))
    conversion = conversion_event(event)
    if conversion is not None and settings.conversions is not None:
        calls.append((CONVERSIONS_ENDPOINT, str(conversion["event_id"]), orjson.dumps(conversion)))
    return calls


def conversion_event(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """A ``Purchase`` for the ad the order came from, in the shape of Meta's Conversions API for
    business messaging (``action_source: business_messaging``, ``messaging_channel: whatsapp``,
    ``user_data.ctwa_clid``), when the order is paid and carries a ``ctwa_clid``; else None."""
    clid = event.get("ctwa_clid")
    if not isinstance(clid, str) or not clid or event.get("payment_status") != "captured":
        return None
    if event.get("state") not in ("captured", "shipped", "completed"):
        return None
    order = event.get("order") or {}
    captured = order.get("captured") if isinstance(order, Mapping) else None
    value = None
    if isinstance(captured, Mapping) and isinstance(captured.get("value"), int) and captured.get("offset"):
        value = float(Decimal(captured["value"]) / Decimal(captured["offset"]))
    occurred = datetime.fromisoformat(str(event["occurred_at"]))
    conversion_id = "conversion:" + body_hash(event.get("tenant_id"), event.get("reference_id"), clid)
    return {
        "event_id": conversion_id,
        "tenant_id": event.get("tenant_id"),
        "data": [{
            "event_name": "Purchase",
            "event_id": conversion_id,  # Meta deduplicates events by it
            "event_time": int(occurred.timestamp()),
            "action_source": "business_messaging",
            "messaging_channel": "whatsapp",
            "user_data": {"ctwa_clid": clid},
            "custom_data": {"currency": order.get("currency") if isinstance(order, Mapping) else None,
                            "value": value, "order_id": event.get("reference_id")},
        }],
    }
