"""The Kafka side of the router: a batch of wa.messages.in in, decisions and their effects out.

Per batch: decode (a record that does not decode is dead-lettered alone), drop wamids already
routed (durable, ``router.routed``) and duplicates inside the batch, decide, then publish every
record (routed, replies, agent tasks, consent changes) keyed by ``phone_number_id`` in input
order, then queue the tenant endpoint calls and mark the wamids routed in one transaction (the
calls are made off this path by ``webhooks.WebhookDispatcher``, ADR 0105). The offsets are
committed after the handler returns (NACK_ON_ERROR): a crash in between re-routes the batch,
and every id is derived from the wamid, so downstream dedupe absorbs the repeat.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, set_span_in_context
from parley_common.contracts import InboundMessage
from parley_common.deadletter import ConsumerGuard, dead_letter_record, publish_dead_letter
from parley_common.endpoint_calls import (
    EndpointOutbox,
    EndpointTarget,
    PendingDelivery,
    TenantEndpointClient,
    WebhookDispatcher,
)
from parley_common.producer import Record, RecordProducer
from parley_common.runtime import Runtime
from parley_common.tenancy.models import Tenant
from parley_common.topics import ACCOUNT_EVENTS, AGENT_QUEUE, MESSAGES_IN, MESSAGES_OUT, MESSAGES_ROUTED
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ValidationError

from parley_router.domain.config import TenantRouting
from parley_router.domain.pipeline import MessageRouter, TenantContext
from parley_router.domain.routing import RoutingDecision
from parley_router.settings import RouterSettings
from parley_router.store import RouterStore

log = logging.getLogger("parley.router")
SERVICE = "router"
_NO_PARENT = Context()  # what extracting an empty carrier gives: a root span, not the batch's
TENANT_INTENT_LABEL = "tenant_intent"  # the metric label of every tenant-defined intent


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.routed = Counter("parley_router_routed_total", "Inbound messages routed",
                              ["intent", "destination", "signal"], registry=registry)
        self.duplicates = Counter("parley_router_duplicates_total", "Inbound duplicates skipped",
                                  registry=registry)
        self.classify_seconds = Histogram(
            "parley_router_decide_seconds_per_message", "Understanding and routing time per message",
            buckets=(1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1e-2), registry=registry)


def _dump(model: BaseModel) -> bytes:
    # pydantic's own JSON serializer: the same bytes as orjson.dumps(model_dump(mode="json")),
    # without building the intermediate dict.
    return model.__pydantic_serializer__.to_json(model)


class RouterService:
    def __init__(self, rt: Runtime, router: MessageRouter, store: RouterStore, producer: RecordProducer,
                 outbox: EndpointOutbox, endpoints: TenantEndpointClient, settings: RouterSettings) -> None:
        self.rt = rt
        self.router = router
        self.store = store
        self.producer = producer
        # Calls to the tenants' endpoints, queued in the store and made off the routing path (ADR 0105).
        self.dispatcher = WebhookDispatcher(
            outbox, endpoints, self.endpoint_target, self.dead_letter_call, rt.registry,
            attempts=settings.webhook_attempts, backoff_s=settings.webhook_backoff_s,
            backoff_cap_s=settings.webhook_backoff_cap_s, per_tenant=settings.webhook_per_tenant_concurrency,
            max_in_flight=settings.webhook_max_in_flight, poll_interval_s=settings.webhook_poll_interval_s,
            lease_s=settings.webhook_timeout_s * 2 + 30, metric="parley_router_webhook_attempts_total")
        self.metrics = RouterMetrics(rt.registry)
        self._routing_cache: dict[str, tuple[int, TenantRouting]] = {}
        self._tracer = rt.tracer_provider.get_tracer("parley.router")
        self._carriers: dict[str, dict[str, Any]] = {}
        self._builtin: frozenset[str] | None = None
        # An unreachable database or broker is retried with backoff (readiness false meanwhile);
        # a batch that fails otherwise is narrowed to the records that fail alone, dead-lettered.
        self.guard = ConsumerGuard(producer, service=SERVICE, consumer="router:messages.in",
                                   not_ready=rt.not_ready)

    @property
    def builtin_intents(self) -> frozenset[str]:
        """The default model's intents: the only intent names used as metric labels."""
        if self._builtin is None:
            self._builtin = frozenset(self.router.model_for(None).intents)
        return self._builtin

    def routing_of(self, tenant: Tenant) -> TenantRouting:
        cached = self._routing_cache.get(tenant.tenant_id)
        if cached and cached[0] == id(tenant.settings):
            return cached[1]
        try:
            cfg = TenantRouting.from_tenant_settings(tenant.settings)
        except ValidationError as exc:
            log.error("invalid router settings; using defaults",
                      extra={"tenant_id": tenant.tenant_id, "errors": exc.error_count()})
            cfg = TenantRouting()
        self._routing_cache[tenant.tenant_id] = (id(tenant.settings), cfg)
        return cfg

    def context_for(self, msg: InboundMessage) -> TenantContext:
        """The message's own tenant (bound by ingest from the verified app), never the number's
        owner looked up again; ``UnboundEvent`` when it has none or the number is not its."""
        tenant = self.rt.tenants.resolve(msg.tenant_id, msg.phone_number_id)
        return TenantContext(tenant.tenant_id, tenant.time_zone, self.routing_of(tenant))

    async def consume(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """The subscriber's entry point: ``handle_batch`` under the consumer's failure guard."""
        await self.guard.run(records, self.handle_batch)

    async def _dead_letter_unroutable(self, m: InboundMessage, exc: BaseException) -> None:
        """A message that decoded but fails to route on its own (its record is gone by then)."""
        await publish_dead_letter(self.producer, dead_letter_record(
            service=SERVICE, topic=MESSAGES_IN.name, value=m.model_dump_json().encode(),
            key=m.phone_number_id.encode(), exc=exc, attempts=1))

    async def handle_batch(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[RoutingDecision]:
        """Route one batch of raw records; a record that is not an inbound message is dead-lettered
        (decoded here, not by the framework, so a poison record can never block the partition)."""
        # Each record's own trace context (W3C traceparent from ingest), so that one customer
        # message stays one trace even though the router consumes in batches.
        self._carriers = {}
        directory = self.rt.tenants

        def decode(rec: ConsumerRecord[Any, Any]) -> InboundMessage:
            m = InboundMessage.model_validate_json(rec.value or b"")
            directory.resolve(m.tenant_id, m.phone_number_id)  # unbound: kept and reported, never routed
            self._carriers[m.wamid] = {
                k: v.decode() for k, v in (rec.headers or ()) if k in ("traceparent", "tracestate")}
            return m

        messages = await self.guard.decoded(records, decode)
        seen = await self.store.already_routed([m.wamid for m in messages])
        fresh: list[InboundMessage] = []
        for m in messages:
            if m.wamid in seen:
                self.metrics.duplicates.inc()
                continue
            seen.add(m.wamid)
            fresh.append(m)
        if not fresh:
            return []
        t0 = asyncio.get_running_loop().time()
        decisions = await self._route(fresh)
        self.metrics.classify_seconds.observe((asyncio.get_running_loop().time() - t0) / max(len(fresh), 1))
        if not decisions:
            return []
        await self.publish(decisions)
        if await self.store.mark_routed_with_deliveries(decisions):
            self.dispatcher.wake()
        # Tenant intent names are tenant data, not a bounded label set: they count as one label.
        builtin = self.builtin_intents
        per_label = collections.Counter(
            (d.routed.intent if d.routed.intent in builtin else TENANT_INTENT_LABEL,
             d.routed.destination.kind, d.routed.signal) for d in decisions)
        for labels, count in per_label.items():
            self.metrics.routed.labels(*labels).inc(count)
        return decisions

    async def _route(self, messages: list[InboundMessage]) -> list[RoutingDecision]:
        """Route the batch; if that fails, route one by one and dead-letter the messages that fail."""
        # Classification (the sentence encoder above all) runs in a worker thread: the event loop
        # keeps fetching, producing and answering HTTP meanwhile.
        try:
            return await asyncio.to_thread(self.router.route, [(m, self.context_for(m)) for m in messages])
        except Exception:
            log.exception("routing a batch failed; routing its messages one by one")
        decisions: list[RoutingDecision] = []
        for m in messages:
            try:
                decisions.extend(await asyncio.to_thread(self.router.route, [(m, self.context_for(m))]))
            except Exception as exc:
                await self._dead_letter_unroutable(m, exc)
        return decisions

    def _trace_headers(self, wamid: str) -> list[tuple[str, bytes]]:
        """A ``route`` span, child of the inbound message's own trace, injected into the outputs.

        Started and ended directly (never made the current span: nothing runs inside it), and
        its context injected explicitly: the same span and headers without attach/detach.
        """
        carrier_in = self._carriers.get(wamid)
        parent = propagate.extract(carrier_in) if carrier_in else _NO_PARENT
        span = self._tracer.start_span("route", context=parent, kind=SpanKind.INTERNAL)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=set_span_in_context(span))
        span.end()
        return [(k, v.encode()) for k, v in carrier.items()]

    async def publish(self, decisions: Sequence[RoutingDecision]) -> None:
        records: list[Record] = []
        # Topic names read the namespace from the environment: once per batch, not per record.
        out_topic, account_topic = MESSAGES_OUT.name, ACCOUNT_EVENTS.name
        agent_topic, routed_topic = AGENT_QUEUE.name, MESSAGES_ROUTED.name
        for d in decisions:
            key = d.routed.phone_number_id.encode()
            trace_headers = self._trace_headers(d.routed.wamid)
            # Side effects first, the decision record last: a consumer of wa.messages.routed
            # may rely on the reply / task already being on its topic.
            for out in d.outbound:
                records.append(Record(out_topic, key, _dump(out), trace_headers))
            if d.consent is not None:
                records.append(Record(account_topic, key, _dump(d.consent), trace_headers))
            if d.agent_task is not None:
                t = d.agent_task
                headers = [*trace_headers, ("x-parley-tenant", (t.tenant_id or "").encode()),
                           ("x-parley-skill", t.skill.encode()),
                           ("x-parley-language", (t.language or "").encode())]
                records.append(Record(agent_topic, key, _dump(t), headers))
            records.append(Record(routed_topic, key, _dump(d.routed), trace_headers))
        await self.producer.send_all(records)

    def endpoint_target(self, tenant_id: str, name: str) -> EndpointTarget | None:
        """The endpoint as the tenant's settings have it now (a changed URL or secret applies to
        calls still waiting)."""
        tenant = self.rt.tenants.tenants.get(tenant_id)
        if tenant is None:
            return None
        cfg = self.routing_of(tenant)
        endpoint = cfg.endpoints.get(name)
        if endpoint is None:
            return None
        return EndpointTarget(endpoint.url, endpoint.secret_ref, cfg.endpoint_policy.policy())

    async def dead_letter_call(self, p: PendingDelivery, exc: BaseException) -> None:
        attempts = self.dispatcher.attempts
        await publish_dead_letter(self.producer, dead_letter_record(
            service=SERVICE, topic=MESSAGES_ROUTED.name, value=p.body, key=p.phone_number_id.encode(),
            exc=exc, attempts=min(p.attempt, attempts), event_id=f"router:webhook:{p.delivery_id}"))
