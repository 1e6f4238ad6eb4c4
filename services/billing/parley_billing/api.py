"""Billing's HTTP API: per-tenant, Bearer API key; a tenant only ever sees its own ledger."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any

import phonenumbers
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from parley_common.runtime import Runtime, TenantDep
from parley_common.tenancy.models import Tenant
from pydantic import BaseModel, Field, field_validator

from parley_billing import invoicing
from parley_billing.domain.engine import Business, InboundFact, OutboundFact, Timeline, price_timeline
from parley_billing.domain.markets import market_of_country
from parley_billing.domain.rules import rules_at
from parley_billing.settings import BillingSettings
from parley_billing.store import RateCache, TenantInfo

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)

MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
MONTH = re.compile(MONTH_PATTERN)
MAX_USAGE_DAYS = 400
# The calendar billing works in: far enough from year 1 and 9999 that a month's bounds in any time
# zone, the next month and a day after a period are still dates.
FIRST_YEAR, LAST_YEAR = 2000, 2999
MonthPath = Annotated[str, Path(pattern=MONTH_PATTERN,
                                description=f"YYYY-MM, {FIRST_YEAR}-01 to {LAST_YEAR}-12, in the tenant's time zone")]


def month_problem(month: str) -> str | None:
    """Why ``month`` is not a month billing can invoice, or None."""
    if not MONTH.match(month):
        return "must be YYYY-MM"
    if not FIRST_YEAR <= int(month[:4]) <= LAST_YEAR:
        return f"must be between {FIRST_YEAR}-01 and {LAST_YEAR}-12"
    return None


class EstimateItem(BaseModel):
    country: str = Field(pattern=r"^[A-Za-z]{2}$", description="recipient country, ISO 3166-1 alpha-2")
    category: str = Field(pattern=r"^(marketing|utility|authentication|service)$",
                          description="a template category, or service for free-form replies")
    recipients: int = Field(ge=0, le=100_000_000, description="messages to price (one per recipient)")
    in_service_window: bool = Field(
        default=False, description="sent as replies inside the customers' 24-hour windows "
                                   "(always true for service)")

    @field_validator("country")
    @classmethod
    def _known_country(cls, v: str) -> str:
        v = v.upper()
        if v not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{v!r} is not a country with phone numbers (ISO 3166-1 alpha-2)")
        return v


class EstimateRequest(BaseModel):
    send_on: date | None = Field(default=None, description="planned date (UTC); today when omitted")
    items: list[EstimateItem] = Field(min_length=1, max_length=1000)




def build_router(rt: Runtime, rates: RateCache, settings: BillingSettings,
                 tenant_info: Callable[[str | None, str], TenantInfo], clock: Clock = utc_now) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["billing"])

    def info(t: Tenant) -> TenantInfo:
        return tenant_info(t.tenant_id, "")

    def invalid(loc: list[str], msg: str, value: object) -> HTTPException:
        """A 422 shaped like FastAPI's own validation errors: which field, and why."""
        return HTTPException(422, [{"type": "value_error", "loc": loc, "msg": msg, "input": value}])

    def checked(month: str) -> str:
        problem = month_problem(month)
        if problem is not None:
            raise invalid(["path", "month"], f"the month {problem}", month)
        return month

    @router.get("/usage", summary="What will be invoiced for a period, by market, category and free type")
    async def get_usage(tenant: TenantDep, from_: Annotated[date, Query(alias="from")],
                        to: Annotated[date, Query(description="inclusive")]) -> dict[str, Any]:
        for name, day in (("from", from_), ("to", to)):
            if not FIRST_YEAR <= day.year <= LAST_YEAR:
                raise invalid(["query", name], f"the year must be between {FIRST_YEAR} and {LAST_YEAR}",
                              day.isoformat())
        if to < from_:
            raise invalid(["query", "to"], "'to' is before 'from'", to.isoformat())
        if (to - from_).days >= MAX_USAGE_DAYS:
            raise invalid(["query", "to"], f"the period is longer than {MAX_USAGE_DAYS} days", to.isoformat())
        tenant_info_ = info(tenant)
        tz = tenant_info_.tz
        start = datetime.combine(from_, time(), tz)
        end = datetime.combine(to + timedelta(days=1), time(), tz)
        await rates.refresh_from_pool(rt.require_pool())
        groups = await invoicing.usage(rt.require_pool(), tenant_info_, start, end, tiers=rates.tiers)
        return {"tenant_id": tenant.tenant_id, "from": from_.isoformat(), "to": to.isoformat(),
                "time_zone": str(tz),
                "note": "amount is what will be invoiced (volume tiers and free tiers applied, each month "
                        "ranked whole); list_amount is before them",
                "groups": groups}

    @router.get("/invoices/{month}", summary="The monthly invoice (JSON, or CSV with ?format=csv); "
                                              "a draft until the month is finalised")
    async def get_invoice(tenant: TenantDep, month: MonthPath, request: Request,
                          format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None) -> Any:
        doc = await _invoice(tenant, checked(month), finalise=False)
        if format == "csv" or (format is None and "text/csv" in request.headers.get("accept", "")):
            return Response(invoicing.invoice_csv(doc), media_type="text/csv")
        return doc

    @router.post("/invoices/{month}/finalise", summary="Freeze a closed month's invoice (idempotent)",
                 responses={409: {"description": "the month has not closed yet"}})
    async def finalise_invoice(tenant: TenantDep, month: MonthPath) -> dict[str, Any]:
        doc = await _invoice(tenant, checked(month), finalise=True)
        if doc["status"] != "final":
            raise HTTPException(409, f"month {month} is not closed yet (its end in {doc['time_zone']} plus "
                                     f"{settings.finalise_grace_hours} h of grace)")
        return doc

    async def _invoice(tenant: Tenant, month: str, *, finalise: bool) -> dict[str, Any]:
        await rates.refresh_from_pool(rt.require_pool())
        return await invoicing.invoice(rt.require_pool(), info(tenant), month, tiers=rates.tiers,
                                       now=clock(), grace=timedelta(hours=settings.finalise_grace_hours),
                                       finalise=finalise)

    @router.get("/reconciliation/{month}", summary="Parley's pricing against Meta's, per message")
    async def get_reconciliation(tenant: TenantDep, month: MonthPath) -> dict[str, Any]:
        await rates.refresh_from_pool(rt.require_pool())
        return await invoicing.reconciliation(rt.require_pool(), info(tenant), checked(month),
                                              tiers=rates.tiers)

    @router.post("/estimates", summary="Price a planned campaign by the rules of the day it will be sent")
    async def post_estimate(tenant: TenantDep, body: EstimateRequest) -> dict[str, Any]:
        await rates.refresh_from_pool(rt.require_pool())
        on = body.send_on or clock().date()
        at = datetime.combine(on, time(12), UTC)
        rules = rules_at(at)
        business = Business(tenant.business_country, rates.rates)
        lines: list[dict[str, Any]] = []
        totals: dict[Any, Any] = {}
        unpriced = 0
        for item in body.items:
            market = market_of_country(item.country)
            number = _example_number(item.country)
            template = item.category != "service"
            in_window = item.in_service_window or not template
            # The customer wrote an hour before: the reply is inside the 24-hour window.
            inbound = (InboundFact(at - timedelta(hours=1)),) if in_window else ()
            priced = price_timeline(Timeline(number, inbound, [OutboundFact("estimate", at, template,
                                                                            item.category if template else None)]),
                                    business)[0]
            unit = priced.amount if priced.billable else Decimal(0)
            amount = None if unit is None else unit * item.recipients
            if amount is not None:
                totals[priced.currency] = totals.get(priced.currency, Decimal(0)) + amount
            elif item.recipients:
                unpriced += item.recipients
            lines.append({"country": item.country, "market": market.name, "category": priced.category,
                          "in_service_window": in_window, "pricing_model": priced.pricing_model,
                          "type": priced.type, "billable": priced.billable, "recipients": item.recipients,
                          "unit_price": None if unit is None else str(unit), "currency": priced.currency,
                          "amount": None if amount is None else str(amount), "unpriced": amount is None})
        return {"tenant_id": tenant.tenant_id, "send_on": on.isoformat(), "model": rules.model,
                "rules": {"name": rules.name, "effective_from": rules.effective_from.isoformat()
                          if rules.effective_from.year > 1 else None, "source": rules.source},
                "lines": lines, "totals": {k: str(v) for k, v in totals.items()}, "unpriced_messages": unpriced,
                "note": "list prices at noon UTC of send_on, before monthly volume tiers; no free entry point "
                        "windows assumed; a line without a rate in the card is unpriced, not free"}

    return router


def _example_number(country: str) -> str:
    """A number in ``country`` so the estimate goes through the same market resolution."""
    example = phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        return ""
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164).lstrip("+")
