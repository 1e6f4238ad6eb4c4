"""Tenant models train in a child process: a superseded training is stopped (its process killed),
and the newest intents win."""

from __future__ import annotations

import asyncio
import os

from parley_common.tenancy.models import Tenant
from parley_router.corpora import load_examples
from parley_router.domain.classifier import IntentClassifier
from parley_router.domain.config import TenantRouting
from parley_router.model_registry import ModelRegistry
from parley_router.training import train_in_child

BAGGAGE = ["how many bags can i bring", "baggage allowance?", "can i take a second suitcase",
           "extra luggage fee", "is hand luggage free", "how heavy can my bag be"]
PETS = ["can i bring my dog", "are pets allowed on board", "can my cat travel with me",
        "pet carrier rules", "do you allow animals", "travelling with a puppy"]


def _routing(t: Tenant) -> TenantRouting:
    return TenantRouting.from_tenant_settings(t.settings)


def _tenant(intents: dict[str, list[str]]) -> Tenant:
    return Tenant("acme", "Acme", "app", "TR", "Europe/Istanbul", None, {"router": {"intents": intents}})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_child_process_trains_the_same_model_format() -> None:
    blob = await train_in_child({"baggage": BAGGAGE})
    model = IntentClassifier.loads(blob)
    assert "baggage" in model.intents
    assert model.predict(["how many suitcases can I take"], ["en"])[0].intent == "baggage"


async def test_superseded_training_is_killed_and_the_newest_intents_win(model: IntentClassifier) -> None:
    registry = ModelRegistry(model, load_examples(), store=None)
    [first] = await registry.sync([_tenant({"baggage": BAGGAGE})], _routing)
    for _ in range(600):  # until the child process is running
        if "acme" in registry.training_pids:
            break
        await asyncio.sleep(0.05)
    first_pid = registry.training_pids["acme"]
    assert _alive(first_pid)
    [second] = await registry.sync([_tenant({"pets": PETS})], _routing)
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    assert not _alive(first_pid)  # killed and reaped, not left to finish
    await asyncio.wait_for(second, 300)
    intents = registry.for_tenant("acme").intents
    assert "pets" in intents and "baggage" not in intents
    assert registry.training_pids["acme"] != first_pid
    await registry.close()
