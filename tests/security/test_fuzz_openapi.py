"""Every HTTP API fuzzed from its own OpenAPI document (schemathesis): the router, the sender,
billing, and the Cloud API face of the simulator; ingest has its own run in
tests/ingest/test_ingest_openapi_fuzz.py. Live servers on the real broker and database, a real
tenant key on every ``/v1`` call. The property: no answer is a 5xx.

The case counts are hypothesis's: run with ``--hypothesis-show-statistics`` to see them per operation.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from support.tenancy import import_tenants

from .fuzz_harness import ThreadServed

pytestmark = pytest.mark.infra

APP_ID = "910000000000001"
WABA = "210000000000001"
NUMBER = "110000000000001"
TOKEN = "fuzz-access-token"
SECRET = "fuzz-app-secret"
# Hypothesis examples per API operation: a few hundred cases per API in all, well within the suite's budget.
EXAMPLES = 40
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@dataclass
class Fuzzed:
    router: ThreadServed
    sender: ThreadServed
    billing: ThreadServed
    simulator: ThreadServed
    api_key: str


async def _register(database_url: str, graph_base: str) -> str:
    keys = await import_tenants(database_url, {
        "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:FUZZ_APP_SECRET"],
                  "access_token_ref": "env:FUZZ_ACCESS_TOKEN", "graph_api_base": graph_base}],
        "tenants": [{"tenant_id": "fuzz-shop", "name": "Fuzz", "app_id": APP_ID, "business_country": "TR",
                     "time_zone": "Europe/Istanbul", "wabas": [WABA],
                     "phone_numbers": [{"phone_number_id": NUMBER, "display_phone_number": "905300000099",
                                        "waba_id": WABA}],
                     "settings": {"router": {"auto_reply": True}}}]}, keys_for=["fuzz-shop"], key_label="fuzz")
    return keys["fuzz-shop"]


def _apps() -> dict[str, Any]:
    """The apps under test, built once (the router's takes seconds: it loads its model); served
    by the module's fixture, and the source of each OpenAPI document."""
    from parley_billing.app import create_app as billing_app
    from parley_router.app import create_app as router_app
    from parley_sender.app import create_app as sender_app
    from parley_simulator import SimulatorConfig
    from parley_simulator import create_app as simulator_app

    return {
        "router": router_app(), "sender": sender_app(), "billing": billing_app(),
        "simulator": simulator_app(SimulatorConfig.model_validate({
            "apps": [{"app_id": APP_ID, "app_secret": SECRET}],
            "wabas": [{"id": WABA, "app_id": APP_ID, "token": TOKEN, "templates": [
                {"name": "order_update", "language": "en", "category": "UTILITY",
                 "components": [{"type": "BODY", "text": "Order {{1}} shipped."}]}]}],
            "phone_numbers": [{"id": NUMBER, "display_phone_number": "905300000099", "waba_id": WABA}],
        })),
    }


APPS = _apps()
# /readyz answers 503 by design here: the services run without their Kafka consumers. The
# simulator's /_sim control API is a test instrument; its Cloud API face is what the sender calls.
SCHEMAS = {
    name: schemathesis.openapi.from_dict(app.openapi()).exclude(
        path_regex="^/_sim/" if name == "simulator" else "^/readyz$")
    for name, app in APPS.items()
}


async def _no_retraining(tenant: Any, routing_of: Any) -> None:
    return None


@pytest.fixture(scope="module")
def fuzzed(kafka_bootstrap: str, database_url: str) -> Iterator[Fuzzed]:
    os.environ.update({"FUZZ_APP_SECRET": SECRET, "FUZZ_ACCESS_TOKEN": TOKEN})
    simulator = ThreadServed(APPS["simulator"]).start()
    served = [simulator]
    try:
        key = asyncio.run(_register(database_url, simulator.url))
        # Accepted intent PUTs would each retrain the tenant's model (seconds of CPU per case, in
        # threads that outlive the case): the fuzz checks the HTTP layer and what it stores;
        # retraining is tested by tests/router/test_intents_api.py.
        APPS["router"].state.runtime.settings.model_poll_interval_s = 3600.0  # nor the replicas' poll
        for name in ("router", "sender", "billing"):
            # Built at import, before the session's own database existed: point them at it.
            APPS[name].state.runtime.settings.database_url = database_url
            served.append(ThreadServed(APPS[name]).start())
        APPS["router"].state.model_registry.sync_tenant = _no_retraining  # built when it started
        yield Fuzzed(served[1], served[2], served[3], simulator, key)
    finally:
        for s in reversed(served):
            s.stop()




def _call(case: Any, base_url: str, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if case.path.startswith("/v1/") else {}
    response = case.call(base_url=base_url, headers=headers, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])


@SCHEMAS["router"].parametrize()
@FUZZ
def test_router_api_never_answers_5xx(case: Any, fuzzed: Fuzzed) -> None:
    _call(case, fuzzed.router.url, fuzzed.api_key)


@SCHEMAS["sender"].parametrize()
@FUZZ
def test_sender_api_never_answers_5xx(case: Any, fuzzed: Fuzzed) -> None:
    _call(case, fuzzed.sender.url, fuzzed.api_key)


@SCHEMAS["billing"].parametrize()
@FUZZ
def test_billing_api_never_answers_5xx(case: Any, fuzzed: Fuzzed) -> None:
    _call(case, fuzzed.billing.url, fuzzed.api_key)


@SCHEMAS["simulator"].parametrize()
@FUZZ
def test_simulator_cloud_api_never_answers_5xx(case: Any, fuzzed: Fuzzed) -> None:
    # The simulator checks the Bearer token of the WABA itself: fuzz with the real one.
    response = case.call(base_url=fuzzed.simulator.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])

