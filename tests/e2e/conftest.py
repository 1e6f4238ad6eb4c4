"""The whole pipeline in one event loop: the Cloud API simulator and the four services, each a real
HTTP server on a loopback port, on the session's real Kafka topics and PostgreSQL database.

All services share one TracerProvider with an in-memory exporter, so a test can follow one
customer message through every hop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.served import Served
from support.tenancy import import_tenants

REPO = Path(__file__).resolve().parents[2]
APP_ID = "e2e-app"
SECRET = "e2e-app-secret-not-a-real-one"
TOKEN = "e2e-access-token"
WABAS = ("299000000000001", "299000000000002")
PN1, PN2 = "199000000000001", "199000000000002"
NUMBERS = {PN1: ("15550001001", WABAS[0]), PN2: ("15550001002", WABAS[1])}
TEMPLATES = [
    {"name": "order_update", "language": "en", "category": "UTILITY", "status": "APPROVED",
     "components": [{"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships today.",
                     "example": {"body_text": [["Ana", "A1"]]}}]},
    {"name": "weekend_offer", "language": "en", "category": "MARKETING", "status": "APPROVED",
     "components": [{"type": "BODY", "text": "{{1}}, 20% off this weekend.",
                     "example": {"body_text": [["Ana"]]}}]},
]


async def start_simulator(config: dict[str, Any], ingest: Served) -> tuple[Any, Served]:
    """Starts the Cloud API simulator on ``config``, posting its webhooks to ``ingest``: a server
    whose port is reserved first (``Served(None)``) and which ``running_services`` starts later.
    Returns the simulator's core (a ``CloudApiSimulator``, for the tests to look into) and its server."""
    from parley_simulator import create_app as simulator_app
    from parley_simulator.config import SimulatorConfig
    from parley_simulator.simulator import CloudApiSimulator

    validated = SimulatorConfig.model_validate(config | {"webhook_url": f"{ingest.url}/webhooks/meta/{{app_id}}"})
    core = CloudApiSimulator(validated)
    simulator = Served(simulator_app(validated, simulator=core))
    await simulator.start()
    return core, simulator


@dataclass
class Services:
    ingest: Served
    router: Served
    sender: Served
    billing: Served


@contextlib.asynccontextmanager
async def running_services(ingest: Served, simulator: Served, *, tracer_provider: Any = None
                           ) -> AsyncIterator[Services]:
    """The four services, each on its own loopback port (ingest on the one reserved before the
    simulator started), configured from the environment; on the way out they and the simulator
    stop, the last started first."""
    from parley_billing.app import create_app as billing_app
    from parley_ingest.app import create_app as ingest_app
    from parley_router.app import create_app as router_app
    from parley_sender.app import create_app as sender_app
    from parley_sender.settings import SenderSettings

    ingest.server.config.app = ingest_app(tracer_provider=tracer_provider)
    ingest.server.config.loaded = False
    router = Served(router_app(tracer_provider=tracer_provider))
    sender = Served(sender_app(SenderSettings(), tracer_provider=tracer_provider))
    billing = Served(billing_app(tracer_provider=tracer_provider))
    started: list[Served] = [simulator]
    try:
        for served in (ingest, router, sender, billing):
            await served.start()
            started.append(served)
        yield Services(ingest, router, sender, billing)
    finally:
        for served in reversed(started):
            await served.stop()


async def sync_templates(sender: Served, *api_keys: str) -> None:
    """Each key's tenant syncs its template catalogue from the simulator through the sender's API."""
    async with httpx.AsyncClient(timeout=30) as client:
        for key in api_keys:
            r = await client.post(f"{sender.url}/v1/templates/sync", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text


@dataclass
class Pipeline:
    exporter: InMemorySpanExporter
    sim: Any  # parley_simulator CloudApiSimulator
    ingest: Served
    sender: Served
    billing: Served
    api_key: str
    database_url: str
    kafka_bootstrap: str

    @property
    def webhook_url(self) -> str:
        return f"{self.ingest.url}/webhooks/meta/{APP_ID}"


@pytest.fixture(scope="module")
async def pipeline(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Pipeline]:
    os.environ.update({"E2E_APP_SECRET": SECRET, "E2E_TOKEN": TOKEN, "E2E_VERIFY": "e2e-verify"})
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))

    ingest = Served(None)  # port reserved first: the simulator posts webhooks to it
    sim_core, simulator = await start_simulator({
        "apps": [{"app_id": APP_ID, "app_secret": SECRET}],
        "wabas": [{"id": w, "app_id": APP_ID, "token": TOKEN, "templates": TEMPLATES} for w in WABAS],
        "phone_numbers": [{"id": n, "display_phone_number": d, "waba_id": w} for n, (d, w) in NUMBERS.items()],
        "behaviour": {"delivered_ratio": 1.0, "read_ratio": 0.5, "skip_delivered_ratio": 0.3,
                      "failure_131049_rate": 0.0, "unknown_recipient_pattern": None,
                      "sent_delay_ms": 10, "delivered_delay_ms": 50, "read_delay_ms": 100},
    }, ingest)

    keys = await import_tenants(database_url, {
        "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:E2E_APP_SECRET"], "access_token_ref": "env:E2E_TOKEN",
                  "verify_token_ref": "env:E2E_VERIFY", "graph_api_base": simulator.url}],
        "tenants": [{"tenant_id": "e2e-shop", "name": "E2E Shop", "app_id": APP_ID, "business_country": "US",
                     "time_zone": "America/New_York", "messaging_limit": None, "wabas": list(WABAS),
                     "phone_numbers": [{"phone_number_id": n, "display_phone_number": d, "waba_id": w}
                                       for n, (d, w) in NUMBERS.items()],
                     "settings": {"demo": True, "router": {"auto_reply": True}}}],
    }, keys_for=["e2e-shop"], key_label="e2e")
    api_key = keys["e2e-shop"]

    async with running_services(ingest, simulator, tracer_provider=tp) as services:
        cli = Path(sys.executable).parent
        subprocess.run([str(cli / "parley-billing"), "ratecard", "import",
                        str(REPO / "services/billing/parley_billing/data/example_rate_card.csv")],
                       check=True, env=os.environ.copy(), capture_output=True)
        await sync_templates(services.sender, api_key)
        yield Pipeline(exporter, sim_core, services.ingest, services.sender, services.billing, api_key, database_url,
                       kafka_bootstrap)
