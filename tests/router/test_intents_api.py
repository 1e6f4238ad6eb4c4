"""Tenant intents over HTTP on the real database and broker: stored, retrained, reloaded live;
and the scheduled pruning of the dedupe table."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import ConsumerRecord
from parley_common.contracts import InboundMessage
from prometheus_client import generate_latest
from support.tenancy import import_tenants

pytestmark = pytest.mark.infra

NUMBER = "109000000000077"
BAGGAGE = ["how many bags can i bring", "baggage allowance?", "can i take a second suitcase",
           "extra luggage fee", "is hand luggage free", "how heavy can my bag be",
           "bagaj hakkı ne kadar", "berapa kg bagasi", "কত কেজি লাগেজ নেওয়া যাবে", "cuántas maletas puedo llevar"]


async def _setup(database_url: str) -> tuple[str, str]:
    os.environ.setdefault("ROUTER_API_TEST_SECRET", "s")
    keys = await import_tenants(database_url, {
        "apps": [{"app_id": "app-router-api", "app_secret_refs": ["env:ROUTER_API_TEST_SECRET"]}],
        "tenants": [
            {"tenant_id": "router-api", "name": "Router API", "app_id": "app-router-api",
             "business_country": "TR", "time_zone": "Europe/Istanbul", "wabas": ["waba-router-api"],
             "phone_numbers": [{"phone_number_id": NUMBER, "display_phone_number": "905000000077",
                                "waba_id": "waba-router-api"}],
             "settings": {"router": {"auto_reply": True}}},
            {"tenant_id": "router-api-other", "name": "Other", "app_id": "app-router-api",
             "business_country": "TR", "time_zone": "Europe/Istanbul", "wabas": ["waba-router-api-2"],
             "phone_numbers": []},
        ]}, keys_for=["router-api", "router-api-other"], key_label="test")
    return keys["router-api"], keys["router-api-other"]


async def test_tenant_intents_over_http_retrain_and_reload_without_a_restart(kafka_bootstrap: str,
                                                                            database_url: str) -> None:
    key, other_key = await _setup(database_url)
    from parley_router.app import create_app
    from parley_router.settings import RouterSettings

    app = create_app(RouterSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                    prune_interval_s=0.2, routed_retention_days=15))
    auth = {"Authorization": f"Bearer {key}"}
    async with app.router.lifespan_context(app):
        service, registry = app.state.router_service, app.state.model_registry
        pool = app.state.runtime.require_pool()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as http:
            assert (await http.get("/v1/intents")).status_code == 401
            assert (await http.get("/v1/intents", headers={"Authorization": "Bearer nope"})).status_code == 401

            listed = (await http.get("/v1/intents", headers=auth)).json()
            assert "refund" in listed["builtin"] and listed["tenant"] == {}
            assert listed["model"]["state"] == "default"

            bad = await http.put("/v1/intents/Bad-Name", headers=auth, json={"examples": ["x"]})
            assert bad.status_code == 422
            empty = await http.put("/v1/intents/baggage", headers=auth, json={"examples": ["  "]})
            assert empty.status_code == 422

            msg = InboundMessage.model_validate({
                "event_id": "wamid.api1", "wamid": "wamid.api1", "phone_number_id": NUMBER,
                "tenant_id": "router-api", "occurred_at": datetime.now(UTC), "customer_wa_id": "905551112233",
                "type": "text",
                "text": "how many suitcases can I take"})
            before = service.router.understand([(msg, service.context_for(msg))])[0]
            assert before.intent != "baggage"

            put = await http.put("/v1/intents/baggage?wait=true", headers=auth, json={"examples": BAGGAGE})
            assert put.status_code in (200, 202), put.text
            put_model = put.json()["model"]
            if put.status_code == 202:  # the server waits 120 s at most; a loaded machine trains longer
                task = registry.training_task("router-api")
                assert task is not None and put_model["state"] == "training"
                await asyncio.wait_for(task, 600)
                put_model = (await http.get("/v1/intents", headers=auth)).json()["model"]
            assert put_model["state"] == "ready" and "baggage" in put_model["intents"]

            # The live router classifies the tenant's messages with the new model, no restart.
            after = service.router.understand([(msg, service.context_for(msg))])[0]
            assert after.intent == "baggage"
            # Routed through the handler: the tenant's intent name is not a metric label.
            record = ConsumerRecord("in", 0, 0, 0, 0, NUMBER.encode(), msg.model_dump_json().encode(), None,
                                    len(NUMBER), 0, [])
            [decision] = await service.handle_batch([record])
            assert decision.routed.intent == "baggage"
            metrics = generate_latest(app.state.runtime.registry).decode()
            assert 'intent="tenant_intent"' in metrics and "baggage" not in metrics
            assert "baggage" not in registry.for_tenant("router-api-other").intents

            got = (await http.get("/v1/intents/baggage", headers=auth)).json()
            assert got == {"name": "baggage", "source": "api", "examples": BAGGAGE}
            listed = (await http.get("/v1/intents", headers=auth)).json()
            assert listed["tenant"] == {"baggage": {"examples": len(BAGGAGE), "source": "api"}}
            # Another tenant neither sees nor can delete it.
            other = {"Authorization": f"Bearer {other_key}"}
            assert (await http.get("/v1/intents/baggage", headers=other)).status_code == 404
            assert (await http.delete("/v1/intents/baggage", headers=other)).status_code == 404

            # The model is stored for other replicas, under the fingerprint of the intents.
            fp = put_model["fingerprint"]
            stored = await pool.fetchval(
                "SELECT count(*) FROM router.tenant_models WHERE tenant_id='router-api' AND fingerprint=$1", fp)
            assert stored == 1

            # Without wait: 202 while training, then the poll-free sync finishes it.
            more = await http.put("/v1/intents/baggage", headers=auth, json={"examples": [*BAGGAGE, "bag fee"]})
            assert more.status_code == 202 and more.json()["model"]["state"] == "training"
            task = registry.training_task("router-api")
            assert task is not None
            await asyncio.wait_for(task, 600)
            assert (await http.get("/v1/intents", headers=auth)).json()["model"]["state"] == "ready"
            # Only the model in use is kept: the one it replaced was deleted.
            kept = await pool.fetch("SELECT fingerprint FROM router.tenant_models WHERE tenant_id='router-api'")
            assert [r["fingerprint"] for r in kept] == [registry.fingerprint("router-api")] != [fp]

            gone = await http.delete("/v1/intents/baggage?wait=true", headers=auth)
            assert gone.status_code == 200 and gone.json()["model"]["state"] == "default"
            assert "baggage" not in registry.for_tenant("router-api").intents
            assert (await http.delete("/v1/intents/baggage", headers=auth)).status_code == 404
            # No own intents any more: no stored model either.
            for _ in range(100):
                if not await pool.fetchval("SELECT count(*) FROM router.tenant_models WHERE tenant_id='router-api'"):
                    break
                await asyncio.sleep(0.05)
            assert await pool.fetchval("SELECT count(*) FROM router.tenant_models WHERE tenant_id='router-api'") == 0

        # The dedupe table is pruned on a schedule: old wamids go, recent ones stay.
        await pool.execute(
            "INSERT INTO router.routed (wamid, tenant_id, intent, rule, routed_at) VALUES"
            " ('wamid.old', 'router-api', 'greeting', 'r', now() - interval '30 days'),"
            " ('wamid.new', 'router-api', 'greeting', 'r', now())")
        for _ in range(50):
            if not await pool.fetchval("SELECT count(*) FROM router.routed WHERE wamid='wamid.old'"):
                break
            await asyncio.sleep(0.1)
        rows = {r["wamid"] for r in await pool.fetch(
            "SELECT wamid FROM router.routed WHERE wamid IN ('wamid.old', 'wamid.new')")}
        assert rows == {"wamid.new"}


async def test_tenant_intent_quotas_are_422s_naming_the_limit(kafka_bootstrap: str, database_url: str) -> None:
    key, other_key = await _setup(database_url)
    from parley_router.app import create_app
    from parley_router.settings import RouterSettings

    app = create_app(RouterSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url, prune_interval_s=0,
                                    max_tenant_intents=2, max_examples_per_intent=3, max_examples_per_tenant=5))
    auth, other = {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other_key}"}
    async with app.router.lifespan_context(app):
        pool = app.state.runtime.require_pool()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as http:
            too_many = await http.put("/v1/intents/bags", headers=auth, json={"examples": ["a", "b", "c", "d"]})
            assert too_many.status_code == 422 and "at most 3 are allowed per intent" in too_many.text
            too_long = await http.put("/v1/intents/bags", headers=auth, json={"examples": ["x" * 501]})
            assert too_long.status_code == 422 and "longer than 500 characters" in too_long.text
            for name, examples in (("bags", ["a", "b", "c"]), ("pets", ["d", "e"])):
                assert (await http.put(f"/v1/intents/{name}", headers=auth,
                                       json={"examples": examples})).status_code == 202
            third = await http.put("/v1/intents/seats", headers=auth, json={"examples": ["f"]})
            assert third.status_code == 422 and "at most 2 are allowed" in third.text
            grown = await http.put("/v1/intents/pets", headers=auth, json={"examples": ["d", "e", "g"]})
            assert grown.status_code == 422 and "would have 6 examples; at most 5" in grown.text
            # Replacing an intent within the quota is fine; refused requests stored nothing.
            assert (await http.put("/v1/intents/pets", headers=auth, json={"examples": ["d", "e2"]})).status_code == 202
            rows = await pool.fetch("SELECT name, examples FROM router.tenant_intents WHERE tenant_id='router-api'"
                                    " ORDER BY name")
            assert [(r["name"], json.loads(r["examples"]) if isinstance(r["examples"], str) else r["examples"])
                    for r in rows] == [("bags", ["a", "b", "c"]), ("pets", ["d", "e2"])]
            # Concurrent requests cannot pass the intent quota together.
            answers = await asyncio.gather(*(http.put(f"/v1/intents/i{n}", headers=other, json={"examples": ["z"]})
                                             for n in range(6)))
            assert sorted(a.status_code for a in answers) == [202, 202, 422, 422, 422, 422]
            assert await pool.fetchval(
                "SELECT count(*) FROM router.tenant_intents WHERE tenant_id='router-api-other'") == 2
