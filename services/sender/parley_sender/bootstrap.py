"""The sender built whole: the async half of its composition root (``app.py``).

Called by the app's lifespan once the runtime opened the database pool and the producer, it
builds every object with its dependencies in hand (no object is created half and filled in
later), registers the Kafka subscribers on the broker before the broker starts, and returns
what the app serves and starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_common.deadletter import ConsumerGuard
from parley_common.runtime import Runtime

from parley_sender.cloudapi import CloudApiClient
from parley_sender.consuming import SendConsumer
from parley_sender.delivery import Metrics, Sender
from parley_sender.effects import Effects
from parley_sender.handlers import register
from parley_sender.pacing import NumberStates
from parley_sender.settings import SenderSettings
from parley_sender.store import SenderStore
from parley_sender.sweeper import InDoubtSweeper


@dataclass(frozen=True)
class SenderParts:
    sender: Sender
    send_consumer: SendConsumer  # the send requests' own consumer, started after the broker
    sweeper: InDoubtSweeper
    guards: dict[str, ConsumerGuard]  # the FastStream subscribers' failure guards, by consumer


async def bootstrap(rt: Runtime, settings: SenderSettings, client: CloudApiClient, metrics: Metrics) -> SenderParts:
    store = SenderStore(rt.require_pool())
    sender = Sender(
        settings=settings,
        store=store,
        client=client,
        tenants=lambda: rt.tenants,
        metrics=metrics,
        effects=Effects(store=store, producer=rt.producer),
        numbers=NumberStates(idle_s=settings.number_idle_s),
        tracer=rt.tracer_provider.get_tracer("parley.sender"),
    )
    guards = register(rt.broker, sender, not_ready=rt.not_ready)
    return SenderParts(sender, SendConsumer(sender), InDoubtSweeper(sender), guards)
