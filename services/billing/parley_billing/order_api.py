"""Orders over HTTP (per tenant, Bearer API key): list, one order, refunds. ADR 0111."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response
from parley_common.contracts import OutboundMessage
from parley_common.runtime import Runtime, TenantDep
from pydantic import BaseModel, ConfigDict, Field, field_validator

from parley_billing import order_store
from parley_billing.domain.orders import ORDER_STATES, Money, OrderError, OrderView, refund_notice
from parley_billing.order_handlers import publish_notice

BSUID = re.compile(r"^[A-Z]{2}\.")
MONTH = r"^20\d\d-(0[1-9]|1[0-2])$"


def month_bounds(month: str, time_zone: str) -> tuple[datetime, datetime]:
    """The first instant of ``month`` (YYYY-MM) and of the next one, in the tenant's time zone."""
    try:
        tz = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    year, mon = int(month[:4]), int(month[5:])
    return datetime(year, mon, 1, tzinfo=tz), datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=tz)
ReferenceId = Annotated[str, Path(min_length=1, max_length=256, description="the order's reference_id")]


class MetaAmount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: int = Field(gt=0, le=10**15, description="amount in units of 1/offset")
    offset: int = Field(default=100, gt=0, le=10**6, description="a power of ten (Meta uses 100 or 1000)")

    @field_validator("offset")
    @classmethod
    def _power_of_ten(cls, v: int) -> int:
        # value/offset must be an exact decimal amount: 1/3 or 1/999999 would be rounded.
        if 10 ** (len(str(v)) - 1) != v:
            raise ValueError("offset must be a power of ten (1, 10, 100, …)")
        return v


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: MetaAmount | None = Field(default=None, description="omit to refund everything not yet refunded")
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$",
                                 description="must be the order's currency when given")
    reason: str | None = Field(default=None, max_length=512)
    notify: bool = Field(default=True, description="tell the customer with an order_status message")


def build_router(rt: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1/orders", tags=["orders"])

    @router.get("", summary="The tenant's orders, newest first (state=unknown: payments without an order)")
    async def list_orders(
        tenant: TenantDep,
        state: Annotated[str | None, Query(description=" | ".join(ORDER_STATES))] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[datetime | None, Query(description="orders that started before this time")] = None,
        month: Annotated[str | None, Query(pattern=MONTH,
                                           description="YYYY-MM in the tenant's time zone")] = None,
    ) -> dict[str, Any]:
        if state is not None and state not in ORDER_STATES:
            raise HTTPException(422, [{"type": "value_error", "loc": ["query", "state"],
                                       "msg": f"state must be one of {', '.join(ORDER_STATES)}", "input": state}])
        since = until = None
        if month is not None:
            since, until = month_bounds(month, tenant.time_zone)
            before = min(before, until) if before else until
        pool = rt.require_pool()
        return {"tenant_id": tenant.tenant_id, "month": month,
                "orders": await order_store.list_orders(pool, tenant.tenant_id, state=state, limit=limit,
                                                        before=before, since=since),
                "summary": await order_store.order_summary(pool, tenant.tenant_id, since=since, before=until)}

    @router.get("/summary", summary="A month of orders: what they earned and what they cost in WhatsApp fees")
    async def summary(
        tenant: TenantDep,
        month: Annotated[str, Query(pattern=MONTH, description="YYYY-MM in the tenant's time zone")],
        limit: Annotated[int, Query(ge=0, le=10000, description="orders listed one by one")] = 1000,
    ) -> dict[str, Any]:
        since, until = month_bounds(month, tenant.time_zone)
        found = await order_store.month_summary(rt.require_pool(), tenant.tenant_id, since=since, before=until,
                                                order_limit=limit)
        return {"tenant_id": tenant.tenant_id, "month": month, "time_zone": str(since.tzinfo),
                "from": since.isoformat(), "to": until.isoformat(), **found}

    @router.get("/{reference_id}", summary="One order: items, exact amounts, customer, ad referral, history")
    async def get_order(tenant: TenantDep, reference_id: ReferenceId) -> dict[str, Any]:
        order = await order_store.get_order(rt.require_pool(), tenant.tenant_id, reference_id)
        if order is None:
            raise HTTPException(404, f"no order {reference_id!r}")
        return order

    @router.post("/{reference_id}/refunds", summary="Record a refund (idempotent; never more than captured)",
                 status_code=201)
    async def post_refund(
        tenant: TenantDep, reference_id: ReferenceId, body: RefundRequest, response: Response,
        idempotency_key: Annotated[str, Header(min_length=1, max_length=200)],
    ) -> dict[str, Any]:
        amount = None
        if body.amount is not None:
            if body.currency is None:
                raise HTTPException(422, [{"type": "missing", "loc": ["body", "currency"],
                                           "msg": "an amount needs its currency", "input": None}])
            try:
                amount = Money.from_meta(body.amount.model_dump(), body.currency, where="amount")
            except OrderError as exc:
                raise HTTPException(422, [{"type": "value_error", "loc": ["body", "amount"], "msg": str(exc),
                                           "input": body.amount.model_dump()}]) from None
        now = datetime.now(UTC)

        def notice_for(view: OrderView, refunded: Money, key: str) -> dict[str, Any] | None:
            if not view.phone_number_id or not view.customer:
                return None
            message_id = "pm_refund_" + hashlib.sha256(
                f"{tenant.tenant_id}\x00{reference_id}\x00{key}".encode()).hexdigest()[:32]
            by_user_id = bool(BSUID.match(view.customer))
            return OutboundMessage(
                event_id=message_id, message_id=message_id, tenant_id=tenant.tenant_id,
                phone_number_id=view.phone_number_id, occurred_at=now, received_at=now,
                to=None if by_user_id else view.customer, to_user_id=view.customer if by_user_id else None,
                contact_id=view.contact,  # the sender's per-person rules follow the contact (ADR 0117)
                type="interactive", content=refund_notice(view, refunded), reply_to_wamid=None,
                priority="reply", origin="billing",
            ).model_dump(mode="json")

        outcome = await order_store.request_refund(
            rt.require_pool(), tenant.tenant_id, reference_id, idempotency_key, amount, body.reason,
            body.notify, now=now, notice_for=notice_for)
        if outcome.status == "not_found":
            raise HTTPException(404, outcome.reason)
        if outcome.status in ("refused", "conflict"):
            raise HTTPException(409, outcome.reason)
        if outcome.status == "replayed":
            response.status_code = 200
        notice_sent = None
        if outcome.notice is not None:
            try:
                await publish_notice(rt, tenant.tenant_id, reference_id, idempotency_key, outcome.notice)
                notice_sent = True
            except Exception:  # recorded: the outbox sweep publishes it later
                notice_sent = False
        assert outcome.amount is not None
        refund = {**outcome.amount.as_meta(), "idempotency_key": idempotency_key}
        return {"reference_id": reference_id, "refund": refund,
                "replayed": outcome.status == "replayed",
                "notice": None if outcome.notice is None else {"message_id": outcome.notice["message_id"],
                                                               "published": notice_sent},
                "order": outcome.order}

    return router
