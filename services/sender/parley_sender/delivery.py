"""Sending: a batch of send requests in, the policy decides, the Cloud API is called, outcomes out.

Crash semantics (docs/adr/0030-sender-exactly-once.md): a request's row says ``sending`` only
while its own Cloud API call may be in flight. The row is written just before the call, after the
request's rate grant, and its outcome just after the call (:mod:`parley_sender.journal` groups
the writes of concurrent calls). Results, retries and other effects follow per batch, then the
offsets are committed. A redelivered request is handled by its recorded row alone
(:mod:`parley_sender.redelivery`): sent, its effects re-applied, re-queued, skipped while in
doubt, or - when a process died during its call - declared in doubt. The rules live in
``domain/``; this module gathers what they need, paces, calls and hands outcomes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer
from parley_common.contracts import OutboundMessage
from parley_common.deadletter import dead_letter_consumed, is_transient
from parley_common.producer import JSON_HEADERS, Record
from parley_common.telemetry import traceparent_of
from parley_common.tenancy.directory import TenantDirectory
from parley_common.tenancy.models import Tenant
from parley_common.topics import MESSAGES_OUT_RETRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from parley_sender.cloudapi import CloudApiClient, SendResponse
from parley_sender.contact_merges import as_kept
from parley_sender.domain.consent import ConsentState
from parley_sender.domain.governor import UNLIMITED, priority_rank
from parley_sender.domain.outcomes import (
    MessageState,
)
from parley_sender.domain.policy import Refusal, SendContext, SendPlan, decide, messaging_limit_reached
from parley_sender.domain.standing import NumberStanding, TenantSending, number_throughput
from parley_sender.domain.storable import UnstorableRecord, unstorable_reason
from parley_sender.domain.templates import TemplateCatalogue
from parley_sender.domain.windows import ConversationWindows
from parley_sender.effects import SERVICE, Effects, Outcome
from parley_sender.journal import NotClaimed, RowJournal
from parley_sender.outcome_builder import OutcomeBuilder
from parley_sender.pacing import Gate, NumberPacer, NumberStates
from parley_sender.redelivery import Redeliveries
from parley_sender.results import now_utc
from parley_sender.settings import SenderSettings
from parley_sender.standings import NumberStandings
from parley_sender.store import SenderStore

log = logging.getLogger("parley.sender")
ROOT = Context()  # a request without trace headers starts its own trace
S = MessageState
Plan = tuple[OutboundMessage, SendPlan, Tenant]


@dataclass
class Batch:
    """One partition's records after the Cloud API calls, before their effects are applied."""

    outcomes: list[Outcome]
    message_ids: list[str]  # registered in ``Sender.inflight`` until :meth:`Sender.complete`
    # Offset of the first record whose request was released unsent: the commit must stop there.
    release_offset: int | None = None


@dataclass
class Metrics:
    """The sender's metrics; labels are bounded (outcome, reason, error code, business number,
    quality event), never a customer."""

    sends: Counter
    throttled: Counter
    latency: Histogram
    number_sends: Counter | None = None
    number_limit: Gauge | None = None
    number_quality: Gauge | None = None
    number_messaging_limit: Gauge | None = None
    in_doubt: Gauge | None = None
    in_doubt_oldest: Gauge | None = None
    _accepted: dict[str, Any] = field(default_factory=dict)
    _per_number: dict[str, Any] = field(default_factory=dict)
    _limits: dict[str, int] = field(default_factory=dict)

    def accepted(self, category: str) -> Any:
        """The accepted-sends counter of a category (children cached: one per send otherwise)."""
        child = self._accepted.get(category)
        if child is None:
            child = self._accepted[category] = self.sends.labels("accepted", category)
        return child

    def accepted_on(self, phone_number_id: str) -> None:
        if self.number_sends is None:
            return
        child = self._per_number.get(phone_number_id)
        if child is None:
            child = self._per_number[phone_number_id] = self.number_sends.labels(phone_number_id)
        child.inc()

    def limit_of(self, phone_number_id: str, limit: int) -> None:
        if self.number_limit is not None and self._limits.get(phone_number_id) != limit:
            self._limits[phone_number_id] = limit
            self.number_limit.labels(phone_number_id).set(limit)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        return cls(
            Counter("parley_sender_sends_total", "Send outcomes", ["outcome", "reason"], registry=registry),
            Counter(
                "parley_sender_throttled_total",
                "Throttling answers from the Cloud API (130429 throughput, 131056 pair rate), per number",
                ["phone_number_id", "code"],
                registry=registry,
            ),
            Histogram(
                "parley_sender_cloudapi_seconds",
                "Cloud API send latency",
                registry=registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ),
            number_sends=Counter(
                "parley_sender_number_sends_total",
                "Sends accepted by the Cloud API, per number",
                ["phone_number_id"],
                registry=registry,
            ),
            number_limit=Gauge(
                "parley_sender_number_limit_mps",
                "Messages per second the governor grants a number",
                ["phone_number_id"],
                registry=registry,
            ),
            number_quality=Gauge(
                "parley_number_quality_event",
                "Latest phone_number_quality_update event of a number (1 on the current one)",
                ["phone_number_id", "event"],
                registry=registry,
            ),
            number_messaging_limit=Gauge(
                "parley_number_messaging_limit",
                "Messaging limit tier of a number from Meta (unique users per 24 h)",
                ["phone_number_id"],
                registry=registry,
            ),
            in_doubt=Gauge(
                "parley_sender_in_doubt_messages", "Sends in doubt (cut off mid-call, unresolved)", registry=registry
            ),
            in_doubt_oldest=Gauge(
                "parley_sender_in_doubt_oldest_seconds", "Age of the oldest send in doubt", registry=registry
            ),
        )


@dataclass
class Sender:
    settings: SenderSettings
    store: SenderStore
    client: CloudApiClient
    tenants: Callable[[], TenantDirectory]  # the current directory (reloaded by the runtime)
    metrics: Metrics
    effects: Effects
    numbers: NumberStates = field(default_factory=NumberStates)
    tracer: Tracer = field(default_factory=lambda: trace.get_tracer("parley.sender"))
    journal: RowJournal = field(init=False)
    outcomes: OutcomeBuilder = field(init=False)
    redeliveries: Redeliveries = field(init=False)
    catalogues: dict[str, tuple[float, TemplateCatalogue]] = field(default_factory=dict)
    # Trace context of each request being sent (from its Kafka headers), so that the Cloud API
    # call joins the trace of the customer message or API request that caused it.
    carriers: dict[str, dict[str, str]] = field(default_factory=dict)
    # Requests between "picked up" and "effects applied" in this process (partitions run
    # concurrently and pipelined): a second copy waits for the first instead of reading a
    # half-done row ("sending") and taking it for a crash.
    inflight: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # Throughput Meta reported per number (docs/adr/0118-throughput-from-meta.md), over the registry's.
    reported_mps: dict[str, int] = field(default_factory=dict)
    # Quality and coexistence Meta reported per number (docs/adr/0121-quality-acts-on-sending.md),
    # and the numbers held at the coexistence rate (reported, or named in their tenant's settings).
    standings: dict[str, NumberStanding] = field(default_factory=dict)
    coexistence: frozenset[str] = frozenset()
    _mps_read_at: float = float("-inf")

    def __post_init__(self) -> None:
        # Each group's 'sending' rows claim their calls with a token of their own (docs/adr/0030).
        self.journal = RowJournal(
            lambda rows, conn: self.store.record_outcomes(rows, conn, claim=uuid.uuid4().hex),
            connect=lambda: self.store.pool.acquire(),
        )
        self.outcomes = OutcomeBuilder(self.settings, self.metrics, self.numbers, self.pacer)
        self.redeliveries = Redeliveries(lambda: self.store, self.journal)

    # --- state kept with the process ------------------------------------------------------
    def directory(self) -> TenantDirectory:
        return self.tenants()

    @property
    def number_standings(self) -> NumberStandings:
        return NumberStandings(self.store.pool)

    def pacer(self, phone_number_id: str) -> NumberPacer:
        number = self.directory().numbers.get(phone_number_id)
        mps = number_throughput(
            number.throughput_mps if number else self.settings.default_throughput_mps,
            self.reported_mps.get(phone_number_id),
            coexistence=phone_number_id in self.coexistence,
        )
        limit = max(1, int(mps * self.settings.throughput_headroom))
        self.metrics.limit_of(phone_number_id, limit)
        return self.numbers.pacer(phone_number_id, limit)

    async def catalogue(self, tenant_id: str) -> TemplateCatalogue:
        cached = self.catalogues.get(tenant_id)
        if cached and time.monotonic() - cached[0] < self.settings.template_cache_ttl_s:
            return cached[1]
        cat = await self.store.catalogue(tenant_id)
        self.catalogues[tenant_id] = (time.monotonic(), cat)
        return cat

    async def reload_throughput(self, *, force: bool = False) -> None:
        """Re-read the throughput, quality and coexistence Meta reported per number (every few
        seconds: any replica may record them), and the tenants' coexistence numbers."""
        if force or time.monotonic() - self._mps_read_at >= self.settings.throughput_reload_s:
            self.reported_mps = await self.store.reported_throughputs()
            self.standings = await self.number_standings.all()
            tenants = self.directory().tenants.values()
            named = {n for t in tenants for n in TenantSending.of(t.settings).coexistence_numbers}
            self.coexistence = frozenset(named | {n for n, st in self.standings.items() if st.coexistence})
            self._mps_read_at = time.monotonic()

    def invalidate_catalogue(self, tenant_id: str) -> None:
        self.catalogues.pop(tenant_id, None)

    def forget_numbers(self, numbers: set[str]) -> None:
        """Their partition was revoked: whatever happens there next is not seen by this process."""
        self.numbers.drop(numbers)

    # --- the batch --------------------------------------------------------------------------
    async def send_batch(
        self, records: Sequence[ConsumerRecord[Any, Any]], *, from_retry: bool, gate: Gate | None = None
    ) -> Batch:
        """Decode, deduplicate, decide, and call the Cloud API (each call's row written around it).

        The effects are not applied yet: :meth:`complete` applies them; the caller commits the
        offsets only after that (``release_offset`` bounds the commit when ``gate`` closed
        before some calls started, or a call could not be recorded).
        """
        msgs, raw, first_offset = await self._read(records)
        if not msgs:
            return Batch([], [])
        if from_retry:
            msgs = await self._hold_until_due(msgs)
        busy = [self.inflight[mid] for mid in msgs if mid in self.inflight]
        if busy:  # the same request is being handled by another batch (a redelivery): let it finish
            await asyncio.wait(busy)
        loop = asyncio.get_running_loop()
        for mid in msgs:
            self.inflight[mid] = loop.create_future()
        batch = Batch([], list(msgs))
        try:
            batch.outcomes = await self._decide_and_send(msgs, gate, raw)
        except BaseException:
            self.settle(batch)
            raise
        released = [first_offset[o.row.message_id] for o in batch.outcomes if o.released]
        batch.release_offset = min(released, default=None)
        return batch

    async def complete(self, batch: Batch) -> None:
        """Apply the batch's effects (durable when this returns) and let its requests go."""
        await self._outcomes_written(batch.outcomes)
        await self.effects.apply(batch.outcomes)
        self.settle(batch)

    def settle(self, batch: Batch) -> None:
        for mid in batch.message_ids:
            self.carriers.pop(mid, None)
            fut = self.inflight.pop(mid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _read(
        self, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> tuple[dict[str, OutboundMessage], dict[str, bytes], dict[str, int]]:
        """The batch's requests (the latest attempt of each), their raw JSON and first offset.
        A record that cannot be decoded, or holds what PostgreSQL cannot store, is dead-lettered."""
        msgs: dict[str, OutboundMessage] = {}
        raw: dict[str, bytes] = {}
        first_offset: dict[str, int] = {}
        for rec in records:
            value = rec.value or b""
            try:
                msg = OutboundMessage.model_validate_json(value)
                reason = unstorable_reason(value)
                if reason is not None:
                    raise UnstorableRecord(f"a value PostgreSQL cannot store: {reason}")
            except Exception as exc:
                await dead_letter_consumed(self.effects.producer, rec, exc, service=SERVICE)
                continue
            mid = msg.message_id
            if rec.headers:
                carrier = {k: v.decode() for k, v in rec.headers if k in ("traceparent", "tracestate")}
                if carrier:
                    self.carriers[mid] = carrier
            first_offset.setdefault(mid, rec.offset)
            prev = msgs.get(mid)
            if prev is None or msg.attempt >= prev.attempt:
                msgs[mid] = msg
                raw[mid] = value
        return msgs, raw, first_offset

    async def _decide_and_send(
        self, msgs: dict[str, OutboundMessage], gate: Gate | None, raw: dict[str, bytes]
    ) -> list[Outcome]:
        to_send, outcomes = await self.redeliveries.sort(msgs)
        outcomes.extend(await self._send_all(to_send, gate, raw))
        return outcomes

    async def _hold_until_due(self, msgs: dict[str, OutboundMessage]) -> dict[str, OutboundMessage]:
        """Retry records wait for their not_before; far-off ones go back on the retry topic."""
        now = now_utc()
        due_in = [(m.not_before - now).total_seconds() for m in msgs.values() if m.not_before]
        hold = min(max(due_in, default=0.0), self.settings.max_inline_wait_s * 2)
        if hold > 0:
            await asyncio.sleep(hold)
        now = now_utc()
        ready: dict[str, OutboundMessage] = {}
        later: list[Record] = []
        for mid, m in msgs.items():
            if m.not_before and (m.not_before - now).total_seconds() > 0.01:
                later.append(Record(MESSAGES_OUT_RETRY.name, m.phone_number_id.encode(), m.model_dump_json().encode(),
                                    JSON_HEADERS))
            else:
                ready[mid] = m
        await self.effects.produce(later)
        return ready

    # --- deciding ---------------------------------------------------------------------------
    def _tenant_of(self, d: TenantDirectory, m: OutboundMessage) -> Tenant | None:
        # the request's own tenant, and only for one of its numbers: a tenant's access token is
        # never used for a number it does not own (ADR 0100)
        return d.bound_tenant(m.tenant_id, m.phone_number_id)

    async def _send_all(
        self, to_send: list[OutboundMessage], gate: Gate | None, raw: dict[str, bytes]
    ) -> list[Outcome]:
        if not to_send:
            return []
        to_send = await as_kept(self.store.pool, to_send)  # stamped before a merge (ADR 0117)
        d = self.directory()
        await self.reload_throughput()
        now = now_utc()
        tenants = {m.message_id: self._tenant_of(d, m) for m in to_send}
        # Order matters: the window tracker saves a window before it records the inbound wamid, so
        # reading the known wamids first and the windows second never sees a known reference
        # without its window (the other order could refuse a fresh reply in between).
        refs = [m.reply_to_wamid for m in to_send if m.reply_to_wamid]
        known = await self.store.known_inbound(refs) if refs else set()
        windows = await self.store.windows((m.phone_number_id, m.customer_id) for m in to_send)
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for m in to_send:
            t = tenants[m.message_id]
            if t is not None:
                by_tenant[t.tenant_id].append(m.customer_id)
        consent: dict[tuple[str, str], ConsentState] = {}
        catalogues: dict[str, TemplateCatalogue] = {}
        through_mm_api: set[str] = set()  # tenants sending marketing via the Marketing Messages API
        for tid, customers in by_tenant.items():
            for c, st in (await self.store.consent(tid, customers)).items():
                consent[(tid, c)] = st
            catalogues[tid] = await self.catalogue(tid)
            if TenantSending.of(d.tenants[tid].settings).marketing_messages_api:
                through_mm_api.add(tid)
        no_standing = NumberStanding()

        outcomes: list[Outcome] = []
        plans: list[Plan] = []
        for m in to_send:
            tenant = tenants[m.message_id]
            if tenant is None:
                refusal = Refusal("not_tenants_number", "the request's tenant does not own this phone_number_id")
                outcomes.append(self.outcomes.refused(m, None, refusal))
                continue
            ctx = SendContext(
                now=now,
                windows=windows.get((m.phone_number_id, m.customer_id), ConversationWindows()),
                unseen_reply_reference=bool(m.reply_to_wamid and m.reply_to_wamid not in known),
                catalogue=catalogues[tenant.tenant_id],
                consent=consent.get((tenant.tenant_id, m.customer_id), ConsentState()),
                language_fallbacks=self.settings.template_language_fallbacks,
                number=self.standings.get(m.phone_number_id, no_standing),
                marketing_messages_api=tenant.tenant_id in through_mm_api,
            )
            try:
                decision = decide(m, ctx)
            except Exception as exc:  # a bug or a malformed record: dead-letter it, keep the partition moving
                outcomes.append(
                    self.outcomes.failed(m, tenant.tenant_id, None, f"invalid request: {exc}"[:500], None, dead=True)
                )
                continue
            if isinstance(decision, Refusal):
                outcomes.append(self.outcomes.refused(m, tenant.tenant_id, decision))
            else:
                plans.append((m, decision, tenant))
        plans = await self._reserve_reach(plans, outcomes, now)
        outcomes.extend(await self._dispatch(plans, gate, raw))
        return outcomes

    async def _reserve_reach(self, plans: list[Plan], outcomes: list[Outcome], now: datetime) -> list[Plan]:
        """Business-initiated sends take their customer's place in the portfolio's messaging limit
        before any call, in one transaction per portfolio shared with every replica; the ones left
        without a place are refused (docs/adr/0115-portfolio-messaging-limit.md)."""
        initiating = {t.tenant_id: t for _, plan, t in plans if plan.business_initiated}
        if not initiating:
            return plans
        # Meta's latest report of the portfolio's limit, else the registry's starting value.
        reported = await self.store.reported_limits(list(initiating))
        limits: dict[str, int] = {}
        for tid, tenant in initiating.items():
            limit = reported.get(tid, tenant.messaging_limit)
            if limit is not None and limit != UNLIMITED:
                limits[tid] = limit
        wanted: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for m, plan, tenant in plans:
            if plan.business_initiated and tenant.tenant_id in limits:
                wanted[tenant.tenant_id].append((m.message_id, m.customer_id))
        if not wanted:
            return plans
        granted: set[str] = set()
        for tid, items in wanted.items():
            granted |= await self.store.reserve_reach(tid, limits[tid], items, now)
        kept: list[Plan] = []
        for m, plan, tenant in plans:
            if tenant.tenant_id in wanted and plan.business_initiated and m.message_id not in granted:
                refusal = messaging_limit_reached(limits[tenant.tenant_id])
                outcomes.append(self.outcomes.refused(m, tenant.tenant_id, refusal))
            else:
                kept.append((m, plan, tenant))
        return kept

    async def _dispatch(self, plans: list[Plan], gate: Gate | None, raw: dict[str, bytes]) -> list[Outcome]:
        """Per number, per customer: one chain each (order kept per customer). Each number's chains
        are drained by up to max_in_flight_per_number workers (not one task per chain: a task and
        a semaphore round per request cost more CPU than the request's own bookkeeping)."""
        chains: dict[tuple[str, str], list[Plan]] = defaultdict(list)
        for item in sorted(plans, key=lambda p: priority_rank(p[0].priority)):
            chains[(item[0].phone_number_id, item[0].customer_id)].append(item)
        by_number: dict[str, deque[list[Plan]]] = defaultdict(deque)
        for (number, _), chain in chains.items():
            by_number[number].append(chain)

        async def drain(queue: deque[list[Plan]]) -> list[Outcome]:
            out = []
            while queue:
                for m, plan, tenant in queue.popleft():
                    out.append(await self._send_one(m, plan, tenant, gate, raw.get(m.message_id)))
            return out

        width = self.settings.max_in_flight_per_number
        jobs = [drain(q) for q in by_number.values() for _ in range(min(width, len(q)))]
        return [o for result in await asyncio.gather(*jobs) for o in result]

    # --- one call ---------------------------------------------------------------------------
    async def _send_one(
        self, m: OutboundMessage, plan: SendPlan, tenant: Tenant, gate: Gate | None, raw: bytes | None
    ) -> Outcome:
        number = m.phone_number_id
        pairs = self.numbers.pair(number)
        while True:
            if gate is not None and gate.closed:
                return self.outcomes.released(m, plan, tenant)
            wait = pairs.reserve(m.customer_id, time.monotonic())
            if wait == 0.0:
                break
            if wait > self.settings.max_inline_wait_s:
                return self.outcomes.retry(m, plan, tenant.tenant_id, "pair_rate", None, wait, counts_as_attempt=False)
            await asyncio.sleep(wait)
        granted = await self.pacer(number).acquire(priority_rank(m.priority), gate)
        if not granted or (gate is not None and gate.closed):
            return self.outcomes.released(m, plan, tenant)
        # From here until its outcome is written, and only here, the row says "sending".
        sending = self.outcomes.row(m, plan, tenant.tenant_id, S.SENDING, request_json=raw)
        try:
            await self.journal.write(sending)
        except NotClaimed:
            # Another process holds this request (it claimed the call first, or settled it): no
            # call and no effect here; its owner writes and publishes the outcome.
            log.info("request claimed by another process; not sent", extra={"message_id": m.message_id})
            return Outcome(sending, written=True, publish_result=False)
        except Exception as exc:
            return self.outcomes.not_recorded(m, plan, tenant, raw, exc)
        send_span = None
        try:
            resp, send_span = await self._call(m, plan, tenant)
        except Exception as exc:  # a fault while handling the call: it may have been sent
            resp = SendResponse(error_message=f"unexpected {type(exc).__name__} during the call", in_doubt=True)
        outcome = self.outcomes.conclude(m, plan, tenant, resp)
        outcome.send_span = send_span
        # Queued, not awaited: the next request's "sending" row goes in the same statement, and
        # :meth:`complete` waits for it before any effect (or offset) follows.
        outcome.pending = self.journal.submit(outcome.row)
        return outcome

    async def _call(self, m: OutboundMessage, plan: SendPlan, tenant: Tenant) -> tuple[SendResponse, str | None]:
        """The call, and the traceparent of its span when sampled (results carry it, so later
        statuses can link to it by wamid: a link to an unsampled span leads nowhere)."""
        body = dict(plan.body)
        body["biz_opaque_callback_data"] = m.message_id  # the identifier a status brings back
        app = self.directory().app_for_tenant(tenant.tenant_id)
        started = time.perf_counter()
        carrier = self.carriers.get(m.message_id)
        # Started and ended explicitly (no context attach/detach per request: nothing below the
        # call is traced), attributes given at creation (one validation pass).
        span = self.tracer.start_span(
            "cloudapi send",
            context=propagate.extract(carrier) if carrier else ROOT,
            kind=SpanKind.CLIENT,
            attributes={
                "parley.message_id": m.message_id,
                "parley.phone_number_id": m.phone_number_id,
                "parley.category": plan.category,
                "parley.attempt": m.attempt,
            },
        )
        try:
            resp = await self.client.send_message(app, m.phone_number_id, body, endpoint=plan.endpoint)
            span.set_attribute("parley.outcome", "accepted" if resp.accepted else "not_accepted")
        finally:
            span.end()
        self.metrics.latency.observe(time.perf_counter() - started)
        ctx = span.get_span_context()
        return resp, traceparent_of(ctx) if ctx.trace_flags.sampled else None

    async def _outcomes_written(self, outcomes: Sequence[Outcome]) -> None:
        """Wait for the rows written right after the calls. A row whose write failed is written
        again with the batch's effects (retried with backoff while the database is away); one the
        database refuses for good stays 'sending' and is reported in doubt by the deadline sweep."""
        for o in outcomes:
            if o.pending is None:
                continue
            try:
                await o.pending
                o.written = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    log.error("outcome refused by the database", extra={"error_type": type(exc).__name__})
                    o.written = True  # nothing more to write; the effects still follow
            o.pending = None

