"""A small, hand-priced billing scenario of two tenants, as the contract records billing consumes.

Tenant ``bill-in`` (India, Asia/Kolkata) and tenant ``bill-br`` (Brazil, America/Sao_Paulo). The
expected prices are worked out by hand from the example rate card's 2026-01-01 rows (USD):
India marketing 0.0118, utility 0.0014; United Kingdom authentication 0.022 (no international
rate); Brazil marketing 0.0625.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import asyncpg
from parley_common.contracts import InboundMessage, MessageStatus, Pricing, SendResult
from parley_common.db import migrate
from parley_common.tenancy.cli import MIGRATIONS as TENANCY_MIGRATIONS
from parley_common.tenancy.cli import RegistryFile, add_api_key, import_registry

TENANT_IN, TENANT_BR = "bill-in", "bill-br"
# "Now" for the billing app under test: September and October 2026 are closed (plus the 48 h
# grace), November is not. Tests must not depend on the day they run.
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
PN_IN, PN_BR = "bill-pn-in", "bill-pn-br"
WABA_IN, WABA_BR = "bill-waba-in", "bill-waba-br"
C_IN = "919876543210"  # India
C_GB = "447400123456"  # United Kingdom
C_BR = "5511987654321"  # Brazil

REGISTRY = {
    "apps": [{"app_id": "bill-app", "app_secret_refs": ["env:PARLEY_BILLING_TEST_SECRET"]}],
    "tenants": [
        {"tenant_id": TENANT_IN, "name": "Billing IN", "app_id": "bill-app", "business_country": "IN",
         "time_zone": "Asia/Kolkata", "wabas": [WABA_IN],
         "phone_numbers": [{"phone_number_id": PN_IN, "display_phone_number": "911100000001",
                            "waba_id": WABA_IN}]},
        {"tenant_id": TENANT_BR, "name": "Billing BR", "app_id": "bill-app", "business_country": "BR",
         "time_zone": "America/Sao_Paulo", "wabas": [WABA_BR],
         "phone_numbers": [{"phone_number_id": PN_BR, "display_phone_number": "551100000001",
                            "waba_id": WABA_BR}]},
        # the generated traffic's tenant (parley_billing.traffic): billing meters a fact only for
        # the tenant it is bound to, on one of that tenant's numbers
        {"tenant_id": "bill-gen", "name": "Billing generated", "app_id": "bill-app", "business_country": "IN",
         "time_zone": "Asia/Kolkata", "wabas": ["waba-bill-gen-1", "waba-bill-gen-2"],
         "phone_numbers": [{"phone_number_id": f"bill-gen-{i}", "display_phone_number": f"91110000010{i}",
                            "waba_id": f"waba-bill-gen-{i}"} for i in (1, 2)]},
    ],
}


async def import_tenants(conn: asyncpg.Connection) -> dict[str, str]:
    """The two tenants in the registry (idempotent); a fresh API key for each."""
    await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
    await import_registry(conn, RegistryFile.model_validate(REGISTRY))
    return {t: (await add_api_key(conn, t))[1] for t in (TENANT_IN, TENANT_BR)}


async def import_example_rates(conn: asyncpg.Connection) -> None:
    from parley_billing.ratecards import import_rate_card

    await import_rate_card(conn, resources.files("parley_billing.data").joinpath("example_rate_card.csv").read_text())


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def meta(billable: bool | None, type_: str | None, category: str | None) -> Pricing:
    return Pricing(billable=billable, pricing_model="PMP", type=type_, category=category)


class Builder:
    """Contract records of one tenant's conversation, in the order they happened."""

    def __init__(self, tenant: str, pnid: str, waba: str) -> None:
        self.tenant, self.pnid, self.waba = tenant, pnid, waba
        self.records: list[tuple[str, Any]] = []  # (topic: statuses|sends|inbound, contract model)

    def inbound(self, wamid: str, customer: str, at: str, *, ad: bool = False) -> None:
        self.records.append(("inbound", InboundMessage(
            event_id=wamid, tenant_id=self.tenant, phone_number_id=self.pnid, waba_id=self.waba, wamid=wamid,
            customer_wa_id=customer, type="text", text="hello", occurred_at=_t(at),
            referral={"source_type": "ad", "source_id": "ad1"} if ad else None)))

    def outbound(self, wamid: str, customer: str, delivered: str, *, category: str | None,
                 pricing: Pricing | None, read: bool = True) -> None:
        """A send (template when ``category``), then sent, delivered and read statuses."""
        at = _t(delivered)
        self.records.append(("sends", SendResult(
            event_id=f"{wamid}:accepted", tenant_id=self.tenant, phone_number_id=self.pnid,
            occurred_at=at - timedelta(seconds=5), message_id="m-" + wamid, outcome="accepted", wamid=wamid,
            recipient=customer, is_template=category is not None, category=category)))
        for status, t in (("sent", at - timedelta(seconds=2)), ("delivered", at),
                          *((("read", at + timedelta(minutes=3)),) if read else ())):
            self.records.append(("statuses", MessageStatus(
                event_id=f"{wamid}:{status}", tenant_id=self.tenant, phone_number_id=self.pnid,
                waba_id=self.waba, wamid=wamid, status=status, recipient_id=customer, occurred_at=t,
                pricing=pricing if status in ("sent", "delivered") else None)))


def september() -> tuple[Builder, Builder]:
    """Tenant IN's and tenant BR's September 2026 (and one IN message that is October in IST)."""
    a = Builder(TENANT_IN, PN_IN, WABA_IN)
    # m1: marketing to India, Meta agrees: 0.0118.
    a.outbound("wamid.a1", C_IN, "2026-09-10T10:00:00", category="marketing",
               pricing=meta(True, "regular", "marketing"))
    # m2: utility an hour after the customer wrote: free (Meta says regular: a disagreement).
    a.inbound("wamid.a-in1", C_IN, "2026-09-11T09:00:00")
    a.outbound("wamid.a2", C_IN, "2026-09-11T10:00:00", category="utility",
               pricing=meta(True, "regular", "utility"))
    # m4: a free-form reply in the same window: free, Meta agrees.
    a.outbound("wamid.a4", C_IN, "2026-09-11T10:05:00", category=None,
               pricing=meta(False, "free_customer_service", "service"))
    # m3: authentication to the UK, no pricing from Meta: 0.022 (UK has no international rate).
    a.outbound("wamid.a3", C_GB, "2026-09-12T10:00:00", category="authentication", pricing=None)
    # m5: marketing to Brazil, Meta says utility: 0.0625, a disagreement.
    a.outbound("wamid.a5", C_BR, "2026-09-20T10:00:00", category="marketing",
               pricing=meta(True, "regular", "utility"))
    # m9: utility delivered 2026-09-30 20:00Z = 2026-10-01 01:30 IST: October's, 0.0014.
    a.outbound("wamid.a9", C_IN, "2026-09-30T20:00:00", category="utility",
               pricing=meta(True, "regular", "utility"))
    b = Builder(TENANT_BR, PN_BR, WABA_BR)
    b.outbound("wamid.b1", C_BR, "2026-09-15T12:00:00", category="marketing",
               pricing=meta(True, "regular", "marketing"))
    return a, b


SEPT_IN_TOTAL = Decimal("0.0118") + Decimal("0.022") + Decimal("0.0625")  # a1 + a3 + a5
SEPT_BR_TOTAL = Decimal("0.0625")
OCT_IN_LIST = Decimal("0.0014")  # a9


def late_and_october() -> Builder:
    """A September message of tenant IN that arrives after September was invoiced, and an October one."""
    a = Builder(TENANT_IN, PN_IN, WABA_IN)
    a.outbound("wamid.a7", C_IN, "2026-09-25T10:00:00", category="marketing",
               pricing=meta(True, "regular", "marketing"))
    a.outbound("wamid.a8", C_IN, "2026-10-05T10:00:00", category="marketing",
               pricing=meta(True, "regular", "marketing"))
    return a


def as_events(records: list[tuple[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The records as ``traffic.feed`` takes them: (topic, the record's JSON dict)."""
    return [(topic, model.model_dump(mode="json")) for topic, model in records]
