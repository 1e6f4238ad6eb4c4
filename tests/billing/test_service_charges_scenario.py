"""Service replies and in-window utility templates end to end, through real Kafka and PostgreSQL:
the same pair (a free-form reply and a utility template, both inside the customer's 24-hour window)
in September 2026 is free and in November 2026 is charged, metered exactly once from a shuffled,
duplicated stream, and shown so in the ledger, usage, the invoice and reconciliation. A customer
known only by a BSUID is priced in its number's market when another record carried the number,
else by the BSUID's prefix; Meta's volume-tier events are compared with Parley's own count."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from parley_billing.handlers import GROUP
from parley_billing.store import ledger_fingerprint
from parley_common.contracts import AccountEvent, InboundMessage, MessageStatus, SendResult
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_IN, SENDS, STATUSES, consumer_group

from .billing_scenario import C_IN, PN_IN, TENANT_IN, WABA_IN, Builder, meta
from .test_kafka_scenario import _running

pytestmark = pytest.mark.infra

TOPICS = {"statuses": STATUSES, "sends": SENDS, "inbound": MESSAGES_IN, "account": ACCOUNT_EVENTS}
INDIA_SERVICE = Decimal("0.0014")  # example card, 2026-10-01 India service (= utility) rate
BSUID_KNOWN = "IN.88120000000000000001"  # an inbound message named its number too
BSUID_ONLY = "GB.88120000000000000002"  # never seen with a number: priced by its prefix
C_IN2 = "919812345678"


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def reply_and_utility(b: Builder, day: str, *, charged: bool, prefix: str) -> None:
    """The customer writes; an agent replies free-form; a utility template follows in the window."""
    b.inbound(f"wamid.{prefix}-in", C_IN, f"{day}T09:00:00")
    b.outbound(f"wamid.{prefix}-reply", C_IN, f"{day}T09:30:00", category=None,
               pricing=meta(True, "regular", "service") if charged else meta(False, "free_customer_service", "service"))
    b.outbound(f"wamid.{prefix}-util", C_IN, f"{day}T10:00:00", category="utility",
               pricing=meta(True, "regular", "utility") if charged else meta(False, "free_customer_service", "utility"))


def bsuid_customers(b: Builder) -> None:
    # BSUID_KNOWN: the inbound message carried both the number and the BSUID; statuses only the BSUID.
    b.records.append(("inbound", InboundMessage(
        event_id="wamid.k-in", tenant_id=TENANT_IN, phone_number_id=PN_IN, waba_id=WABA_IN, wamid="wamid.k-in",
        customer_wa_id=C_IN2, customer_user_id=BSUID_KNOWN, type="text", text="hi",
        occurred_at=_t("2026-11-12T08:00:00"))))
    for wamid, customer, at in (("wamid.k-mkt", BSUID_KNOWN, "2026-11-12T12:00:00"),
                                ("wamid.u-mkt", BSUID_ONLY, "2026-11-12T12:00:00")):
        b.records.append(("sends", SendResult(
            event_id=f"{wamid}:accepted", tenant_id=TENANT_IN, phone_number_id=PN_IN,
            occurred_at=_t(at) - timedelta(seconds=5), message_id="m-" + wamid, outcome="accepted", wamid=wamid,
            recipient=customer, is_template=True, category="marketing")))
        b.records.append(("statuses", MessageStatus(
            event_id=f"{wamid}:delivered", tenant_id=TENANT_IN, phone_number_id=PN_IN, waba_id=WABA_IN,
            wamid=wamid, status="delivered", recipient_user_id=customer, occurred_at=_t(at),
            pricing=meta(True, "regular", "marketing"))))


def tier_event(region: str, tier: str, at: str) -> tuple[str, AccountEvent]:
    value = {"event": "VOLUME_BASED_PRICING_TIER_UPDATE", "volume_tier_info": {
        "tier_update_time": int(_t(at).timestamp()), "pricing_category": "UTILITY", "tier": tier,
        "effective_month": "2026-11", "region": region}}
    return ("account", AccountEvent(event_id=f"tier-{region}-{tier}", tenant_id=TENANT_IN, phone_number_id=WABA_IN,
                                    waba_id=WABA_IN, kind="account_update", value=value, occurred_at=_t(at)))


async def _publish(bootstrap: str, records: list[tuple[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(TOPICS[kind].name, orjson.dumps(m.model_dump(mode="json")),
                                    key=m.phone_number_id.encode()) for kind, m in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _settle(bootstrap: str, timeout: float = 120) -> None:
    names = [t.name for t in TOPICS.values()]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(names)
        parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        deadline = time.monotonic() + timeout
        while True:
            ends = await consumer.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(consumer_group(GROUP), partitions=parts)
            lag = sum(end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
                      for tp, end in ends.items())
            if lag == 0:
                return
            assert time.monotonic() < deadline, f"billing did not consume everything: lag {lag}"
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_service_replies_and_in_window_utility_are_free_in_september_and_charged_in_november(
        kafka_bootstrap: str, database_url: str, billing_pool: asyncpg.Pool, tenant_keys: dict[str, str]) -> None:
    b = Builder(TENANT_IN, PN_IN, WABA_IN)
    reply_and_utility(b, "2026-09-10", charged=False, prefix="sep")
    reply_and_utility(b, "2026-11-10", charged=True, prefix="nov")
    bsuid_customers(b)
    records: list[tuple[str, Any]] = list(b.records)
    # Meta says the portfolio entered India utility tier 1..100 when its first charged one was
    # delivered (agrees), and a tier from 1,000 on (Parley counted 1: a mismatch to report).
    records += [tier_event("INDIA", "1:100", "2026-11-10T10:00:00"),
                tier_event("INDIA", "1001:5000", "2026-11-20T00:00:00")]
    rnd = random.Random(9)
    stream = records + rnd.sample(records, len(records) // 2)  # duplicates
    rnd.shuffle(stream)
    await _publish(kafka_bootstrap, stream)
    async with _running(database_url, kafka_bootstrap) as app:
        await _settle(kafka_bootstrap)

        rows = {r["wamid"]: r for r in await billing_pool.fetch(
            "SELECT wamid, category, type, billable, amount, rules, market, market_source, revision"
            " FROM billing.ledger")}
        assert set(rows) == {"wamid.sep-reply", "wamid.sep-util", "wamid.nov-reply", "wamid.nov-util",
                             "wamid.k-mkt", "wamid.u-mkt"}  # every delivered message once
        for wamid, category in (("wamid.sep-reply", "service"), ("wamid.sep-util", "utility")):
            r = rows[wamid]
            assert (r["category"], r["type"], r["billable"], r["amount"], r["rules"]) == (
                category, "free_customer_service", False, 0, "PMP-2026-08"), dict(r)
        for wamid, category in (("wamid.nov-reply", "service"), ("wamid.nov-util", "utility")):
            r = rows[wamid]
            assert (r["category"], r["type"], r["billable"], r["amount"], r["rules"]) == (
                category, "regular", True, INDIA_SERVICE, "PMP-2026-10"), dict(r)
        assert (rows["wamid.k-mkt"]["market"], rows["wamid.k-mkt"]["market_source"]) == ("India", "contact_phone")
        assert (rows["wamid.u-mkt"]["market"], rows["wamid.u-mkt"]["market_source"]) == (
            "United Kingdom", "bsuid_prefix")

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://billing") as client:
            key = bearer(tenant_keys[TENANT_IN])
            nov = (await client.get("/v1/invoices/2026-11", headers=key)).json()
            lines = {(x["category"], x["type"]): x for x in nov["lines"]}
            assert Decimal(lines[("service", "regular")]["amount"]) == INDIA_SERVICE
            assert Decimal(lines[("utility", "regular")]["amount"]) == INDIA_SERVICE
            sep = (await client.get("/v1/invoices/2026-09", headers=key)).json()
            assert all(Decimal(x["amount"]) == 0 for x in sep["lines"])

            usage = (await client.get("/v1/usage", params={"from": "2026-11-01", "to": "2026-11-30"},
                                      headers=key)).json()
            charged = {(g["category"], g["type"]): g for g in usage["groups"] if g["billable"]}
            assert charged[("service", "regular")]["rules"] == "PMP-2026-10"
            assert Decimal(charged[("service", "regular")]["amount"]) == INDIA_SERVICE

            rec = (await client.get("/v1/reconciliation/2026-11", headers=key)).json()
            assert (rec["messages"], rec["agree"], rec["disagree"], rec["meta_missing"]) == (4, 4, 0, 0)
            by_cat = {(c["category"], c["billable"]): c for c in rec["by_category"]}
            assert by_cat[("service", True)]["agree"] == 1
            tiers = rec["volume_tiers"]
            assert (tiers["meta_updates"], tiers["mismatches"]) == (2, 1)
            assert [(u["meta_tier"], u["parley_count_at_update"], u["agrees"]) for u in tiers["updates"]] == [
                ("1:100", 1, True), ("1001:5000", 1, False)]
    first = await ledger_fingerprint(billing_pool)
    revisions = {r["wamid"]: r["revision"]
                 for r in await billing_pool.fetch("SELECT wamid, revision FROM billing.ledger")}

    # Everything again, in another order, after a restart: nothing changes, nothing is charged twice.
    rnd.shuffle(stream)
    await _publish(kafka_bootstrap, stream)
    async with _running(database_url, kafka_bootstrap):
        await _settle(kafka_bootstrap)
    assert await ledger_fingerprint(billing_pool) == first
    assert {r["wamid"]: r["revision"] for r in await billing_pool.fetch(
        "SELECT wamid, revision FROM billing.ledger")} == revisions
    assert await billing_pool.fetchval("SELECT count(*) FROM billing.tier_updates") == 2
