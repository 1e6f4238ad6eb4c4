"""Sending: a batch of send requests in, the policy decides, the Cloud API is called, outcomes out.

Exactly-once in effect (docs/adr/0030-sender-exactly-once.md): the intent of each attempt is
recorded before the HTTP call and the outcome after it, both keyed by message_id, and the Kafka
offsets are committed only after that. A redelivered request whose outcome is recorded is not
sent again (its result is re-published, idempotent by event_id); one found still "sending" was
cut off mid-call by a crash and becomes ``in_doubt``: never re-sent blindly, resolved when a
status webhook carrying its callback data arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer
from parley_common.contracts import ConsentChange, OutboundMessage, SendResult, body_hash
from parley_common.deadletter import dead_letter_record, is_transient, publish_dead_letter
from parley_common.redaction import Redactor
from parley_common.telemetry import traceparent_of
from parley_common.tenancy.directory import TenantDirectory
from parley_common.tenancy.models import Tenant
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_OUT, MESSAGES_OUT_RETRY, SENDS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tenacity import RetryCallState, wait_exponential_jitter

from parley_sender.cloudapi import CloudApiClient, SendResponse
from parley_sender.domain.consent import ConsentState
from parley_sender.domain.errors import Action, action_for
from parley_sender.domain.governor import MessagingLimit, PairRateLimit, ThroughputLimit, priority_rank
from parley_sender.domain.policy import Refusal, SendContext, SendPlan, decide
from parley_sender.domain.templates import TemplateCatalogue
from parley_sender.domain.windows import ConversationWindows
from parley_sender.pacing import Gate, NumberPacer
from parley_sender.producing import RecordProducer
from parley_sender.settings import SenderSettings
from parley_sender.store import FINAL_STATES, MessageRow, SenderStore

log = logging.getLogger("parley.sender")
SERVICE = "sender"
RESULT_STATES = frozenset({"accepted", "refused", "failed", "dead"})
ROOT = Context()  # a request without trace headers starts its own trace


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outcome:
    row: MessageRow
    publish_result: bool = True
    retry: OutboundMessage | None = None
    dead_letter_reason: str | None = None
    consent_stop: bool = False
    reached: bool = False
    fep_started: bool = False
    released: bool = False  # not sent: its partition was revoked (or the process stopped) first
    send_span: str | None = None  # traceparent of the Cloud API call's span, for links by wamid


@dataclass
class Batch:
    """One partition's records after the Cloud API calls, before their effects are recorded."""

    outcomes: list[Outcome]
    message_ids: list[str]  # registered in ``Sender.inflight`` until :meth:`Sender.finish`
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
            number_sends=Counter("parley_sender_number_sends_total", "Sends accepted by the Cloud API, per number",
                                 ["phone_number_id"], registry=registry),
            number_limit=Gauge("parley_sender_number_limit_mps", "Messages per second the governor grants a number",
                               ["phone_number_id"], registry=registry),
            number_quality=Gauge("parley_number_quality_event",
                                 "Latest phone_number_quality_update event of a number (1 on the current one)",
                                 ["phone_number_id", "event"], registry=registry),
            number_messaging_limit=Gauge("parley_number_messaging_limit",
                                         "Messaging limit tier of a number from Meta (unique users per 24 h)",
                                         ["phone_number_id"], registry=registry),
            in_doubt=Gauge("parley_sender_in_doubt_messages", "Sends in doubt (cut off mid-call, unresolved)",
                           registry=registry),
            in_doubt_oldest=Gauge("parley_sender_in_doubt_oldest_seconds", "Age of the oldest send in doubt",
                                  registry=registry),
        )


def retry_delay(attempt: int, minimum: float, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter (tenacity's), never below what Meta's error asks for."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return max(
        minimum, float(wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)(state))
    )


def result_json(row: MessageRow, send_span: str | None = None) -> bytes:
    """``result_of(row).model_dump_json()`` without building and validating the model (hot path:
    one per send). The same JSON, field for field (tests/sender/test_fast_paths.py checks it)."""
    outcome = "failed" if row.state == "dead" else row.state
    now = now_utc()
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": f"{row.message_id}:{outcome}",
            "tenant_id": row.tenant_id,
            "phone_number_id": row.phone_number_id,
            "occurred_at": now,
            "received_at": now,
            "message_id": row.message_id,
            "outcome": outcome,
            "wamid": row.wamid,
            "recipient": row.recipient,
            "is_template": row.is_template,
            "template_name": row.template_name,
            "category": row.category,
            "free_window": row.free_window,
            "reason": row.reason,
            "error_code": row.error_code,
            "attempt": row.attempt,
            "send_span": send_span,
        },
        option=orjson.OPT_UTC_Z,
    )


def result_of(row: MessageRow) -> SendResult:
    outcome = "failed" if row.state == "dead" else row.state
    return SendResult(
        event_id=f"{row.message_id}:{outcome}",
        tenant_id=row.tenant_id,
        phone_number_id=row.phone_number_id,
        occurred_at=now_utc(),
        message_id=row.message_id,
        outcome=outcome,
        wamid=row.wamid,
        recipient=row.recipient,
        is_template=row.is_template,
        template_name=row.template_name,
        category=row.category,
        free_window=row.free_window,
        reason=row.reason,
        error_code=row.error_code,
        attempt=row.attempt,
    )


@dataclass
class Sender:
    settings: SenderSettings
    broker: KafkaBroker
    store: SenderStore
    client: CloudApiClient
    tenants: Any  # a callable returning the current TenantDirectory
    redactor: Redactor
    metrics: Metrics
    pacers: dict[str, NumberPacer] = field(default_factory=dict)
    pairs: dict[str, PairRateLimit] = field(default_factory=lambda: defaultdict(PairRateLimit))
    limits: dict[str, MessagingLimit] = field(default_factory=dict)
    catalogues: dict[str, tuple[float, TemplateCatalogue]] = field(default_factory=dict)
    recent: OrderedDict[str, MessageRow] = field(default_factory=OrderedDict)
    recent_max: int = 200_000
    producer: RecordProducer | None = None  # the hot-path producer; broker.publish without it
    tracer: Tracer = field(default_factory=lambda: trace.get_tracer("parley.sender"))
    # Trace context of each request being sent (from its Kafka headers), so that the Cloud API
    # call joins the trace of the customer message or API request that caused it.
    carriers: dict[str, dict[str, str]] = field(default_factory=dict)
    # Requests between "picked up" and "outcome recorded" in this process (partitions run
    # concurrently and pipelined): a second copy waits for the first instead of reading a
    # half-done row ("sending") and taking it for a crash.
    inflight: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    # --- state kept with the process ------------------------------------------------------
    def directory(self) -> TenantDirectory:
        d = self.tenants()
        assert isinstance(d, TenantDirectory)
        return d

    def pacer(self, phone_number_id: str) -> NumberPacer:
        number = self.directory().numbers.get(phone_number_id)
        mps = number.throughput_mps if number else self.settings.default_throughput_mps
        limit = max(1, int(mps * self.settings.throughput_headroom))
        pacer = self.pacers.get(phone_number_id)
        if pacer is None:
            pacer = self.pacers[phone_number_id] = NumberPacer(ThroughputLimit(limit=limit))
            if self.metrics.number_limit is not None:
                self.metrics.number_limit.labels(phone_number_id).set(limit)
        elif pacer.limit.limit != limit:
            pacer.limit.set_limit(limit)
            if self.metrics.number_limit is not None:
                self.metrics.number_limit.labels(phone_number_id).set(limit)
        return pacer

    async def catalogue(self, tenant_id: str) -> TemplateCatalogue:
        cached = self.catalogues.get(tenant_id)
        if cached and time.monotonic() - cached[0] < self.settings.template_cache_ttl_s:
            return cached[1]
        cat = await self.store.catalogue(tenant_id)
        self.catalogues[tenant_id] = (time.monotonic(), cat)
        return cat

    def invalidate_catalogue(self, tenant_id: str) -> None:
        self.catalogues.pop(tenant_id, None)

    async def messaging_limit(self, tenant: Tenant) -> MessagingLimit:
        lim = self.limits.get(tenant.tenant_id)
        if lim is None:
            reached = await self.store.reached(tenant.tenant_id, now_utc() - timedelta(hours=24))
            lim = self.limits[tenant.tenant_id] = MessagingLimit(
                limit=tenant.messaging_limit, reached=reached
            )
        lim.limit = tenant.messaging_limit
        return lim

    def _remember(self, row: MessageRow) -> None:
        self.recent[row.message_id] = row
        self.recent.move_to_end(row.message_id)
        while len(self.recent) > self.recent_max:
            self.recent.popitem(last=False)

    # --- the batch --------------------------------------------------------------------------
    async def handle_records(self, records: Sequence[ConsumerRecord[Any, Any]], *, from_retry: bool) -> None:
        """One batch start to end: the calls, then their effects (see :meth:`send_batch`)."""
        await self.finish(await self.send_batch(records, from_retry=from_retry))

    async def send_batch(
        self, records: Sequence[ConsumerRecord[Any, Any]], *, from_retry: bool, gate: Gate | None = None
    ) -> Batch:
        """Decode, deduplicate, decide, record the intents and call the Cloud API.

        The outcomes are returned, not yet recorded: :meth:`finish` records them and publishes the
        results; the caller commits the offsets only after that (``release_offset`` bounds the
        commit when ``gate`` closed before some calls started).
        """
        msgs: dict[str, OutboundMessage] = {}
        raw: dict[str, bytes] = {}
        first_offset: dict[str, int] = {}
        for rec in records:
            try:
                msg = OutboundMessage.model_validate_json(rec.value or b"")
            except Exception as exc:
                await self._dead_letter_record(rec, exc)
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
                raw[mid] = rec.value or b""
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
            self._settle(batch)
            raise
        released = [first_offset[o.row.message_id] for o in batch.outcomes if o.released]
        batch.release_offset = min(released, default=None)
        return batch

    async def finish(self, batch: Batch) -> None:
        """Record the outcomes and publish the results (durable when this returns)."""
        try:
            await self._apply(batch.outcomes)
        finally:
            self._settle(batch)

    def _settle(self, batch: Batch) -> None:
        for mid in batch.message_ids:
            self.carriers.pop(mid, None)
            fut = self.inflight.pop(mid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _decide_and_send(
        self, msgs: dict[str, OutboundMessage], gate: Gate | None = None, raw: dict[str, bytes] | None = None
    ) -> list[Outcome]:
        existing = await self.store.messages(list(msgs))
        outcomes: list[Outcome] = []
        to_send: list[OutboundMessage] = []
        for m in msgs.values():
            row = self.recent.get(m.message_id) or existing.get(m.message_id)
            if row is None:
                to_send.append(m)
            elif row.state in FINAL_STATES and not (row.state == "dead" and m.origin == "replay"):
                if row.state in RESULT_STATES:
                    outcomes.append(Outcome(row))  # re-publish: idempotent by event_id
            elif row.state == "in_doubt" or (row.state == "retrying" and m.attempt < row.attempt):
                continue
            elif row.state == "sending" and m.attempt <= row.attempt:
                outcomes.append(await self._cut_off_mid_send(m, row))
            else:
                to_send.append(m)
        outcomes.extend(await self._send_all(to_send, gate, raw or {}))
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
        later: list[OutboundMessage] = []
        for mid, m in msgs.items():
            if m.not_before and (m.not_before - now).total_seconds() > 0.01:
                later.append(m)
            else:
                ready[mid] = m
        await asyncio.gather(*(self._publish_retry(m) for m in later))
        return ready

    async def _cut_off_mid_send(self, m: OutboundMessage, row: MessageRow) -> Outcome:
        """A previous process recorded the intent but not the outcome: maybe sent, maybe not."""
        callback = row.callback_data or m.biz_opaque_callback_data or m.message_id
        wamid = await self.store.delivered_wamid_for(m.phone_number_id, callback)
        if wamid:
            return Outcome(replace(row, state="accepted", wamid=wamid, reason=None))
        log.warning("send outcome unknown after a restart; held in doubt", extra={"message_id": m.message_id})
        return Outcome(
            replace(row, state="in_doubt", reason="in_doubt: the process stopped during the call"),
            publish_result=False,
        )

    async def _send_all(
        self, to_send: list[OutboundMessage], gate: Gate | None = None, raw: dict[str, bytes] | None = None
    ) -> list[Outcome]:
        if not to_send:
            return []
        d = self.directory()
        now = now_utc()
        tenants: dict[str, Tenant | None] = {}
        for m in to_send:
            tenants[m.message_id] = d.tenants.get(m.tenant_id or "") or d.tenant_for_number(m.phone_number_id)
        # Order matters: the window tracker saves a window before it records the inbound wamid, so
        # reading the known wamids first and the windows second never sees a known reference
        # without its window (the other order could refuse a fresh reply in between).
        refs = [m.reply_to_wamid for m in to_send if m.reply_to_wamid]
        known = await self.store.known_inbound(refs) if refs else set()
        windows = await self.store.windows((m.phone_number_id, m.recipient) for m in to_send)
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for m in to_send:
            t = tenants[m.message_id]
            if t is not None:
                by_tenant[t.tenant_id].append(m.recipient)
        consent: dict[tuple[str, str], ConsentState] = {}
        catalogues: dict[str, TemplateCatalogue] = {}
        for tid, customers in by_tenant.items():
            for c, st in (await self.store.consent(tid, customers)).items():
                consent[(tid, c)] = st
            catalogues[tid] = await self.catalogue(tid)

        outcomes: list[Outcome] = []
        plans: list[tuple[OutboundMessage, SendPlan, Tenant]] = []
        for m in to_send:
            tenant = tenants[m.message_id]
            if tenant is None:
                outcomes.append(
                    self._refused(
                        m, None, Refusal("unknown_phone_number", "no tenant owns this phone_number_id")
                    )
                )
                continue
            ctx = SendContext(
                now=now,
                windows=windows.get((m.phone_number_id, m.recipient), ConversationWindows()),
                unseen_reply_reference=bool(m.reply_to_wamid and m.reply_to_wamid not in known),
                catalogue=catalogues[tenant.tenant_id],
                consent=consent.get((tenant.tenant_id, m.recipient), ConsentState()),
                messaging_limit=await self.messaging_limit(tenant),
                language_fallbacks=self.settings.template_language_fallbacks,
            )
            try:
                decision = decide(m, ctx)
            except Exception as exc:  # a bug or a malformed record: dead-letter it, keep the partition moving
                outcomes.append(
                    self._failed(m, tenant.tenant_id, None, f"invalid request: {exc}"[:500], None, dead=True)
                )
                continue
            if isinstance(decision, Refusal):
                outcomes.append(self._refused(m, tenant.tenant_id, decision))
            else:
                plans.append((m, decision, tenant))

        raw = raw or {}
        intents = [
            self._row(m, plan, tenant.tenant_id, "sending", request_json=raw.get(m.message_id))
            for m, plan, tenant in plans
        ]
        await self.store.record_intents(intents)

        # Per number, per customer: one chain each (order kept per customer). Each number's chains
        # are drained by up to max_in_flight_per_number workers (not one task per chain: a task and
        # a semaphore round per request cost more CPU than the request's own bookkeeping).
        chains: dict[tuple[str, str], list[tuple[OutboundMessage, SendPlan, Tenant]]] = defaultdict(list)
        for item in sorted(plans, key=lambda p: priority_rank(p[0].priority)):
            chains[(item[0].phone_number_id, item[0].recipient)].append(item)
        by_number: dict[str, deque[list[tuple[OutboundMessage, SendPlan, Tenant]]]] = defaultdict(deque)
        for (number, _), chain in chains.items():
            by_number[number].append(chain)

        async def drain(queue: deque[list[tuple[OutboundMessage, SendPlan, Tenant]]]) -> list[Outcome]:
            out = []
            while queue:
                for m, plan, tenant in queue.popleft():
                    out.append(await self._send_one(m, plan, tenant, gate))
            return out

        width = self.settings.max_in_flight_per_number
        jobs = [drain(q) for q in by_number.values() for _ in range(min(width, len(q)))]
        for result in await asyncio.gather(*jobs):
            outcomes.extend(result)
        return outcomes

    def _row(
        self,
        m: OutboundMessage,
        plan: SendPlan | None,
        tenant_id: str | None,
        state: str,
        *,
        keep_request: bool = True,
        request_json: bytes | None = None,
        **kw: Any,
    ) -> MessageRow:
        """``keep_request=False`` when the intent already stored this request (the upsert keeps it);
        ``request_json``: the request as received (its record's value), stored without re-encoding."""
        return MessageRow(
            message_id=m.message_id,
            tenant_id=tenant_id,
            phone_number_id=m.phone_number_id,
            recipient=m.recipient,
            state=state,
            attempt=m.attempt,
            callback_data=m.biz_opaque_callback_data or m.message_id,
            is_template=plan.is_template if plan else m.type == "template",
            template_name=plan.template_name if plan else (m.template.name if m.template else None),
            category=plan.category if plan else None,
            free_window=plan.free_window if plan else None,
            request=m.model_dump(mode="json") if keep_request and request_json is None else None,
            request_json=request_json.decode() if request_json is not None else None,
            **kw,
        )

    def _refused(self, m: OutboundMessage, tenant_id: str | None, refusal: Refusal) -> Outcome:
        self.metrics.sends.labels("refused", refusal.reason).inc()
        return Outcome(
            self._row(
                m,
                None,
                tenant_id,
                "refused",
                reason=f"{refusal.reason}: {refusal.detail}",
                error_code=refusal.error_code,
            )
        )

    def _failed(
        self,
        m: OutboundMessage,
        tenant_id: str | None,
        plan: SendPlan | None,
        reason: str,
        code: int | None,
        *,
        dead: bool = False,
    ) -> Outcome:
        self.metrics.sends.labels("failed", str(code or "none")).inc()
        row = self._row(m, plan, tenant_id, "dead" if dead else "failed", reason=reason, error_code=code)
        return Outcome(row, dead_letter_reason=reason if dead else None)

    def _retry(
        self,
        m: OutboundMessage,
        plan: SendPlan | None,
        tenant_id: str,
        reason: str,
        code: int | None,
        min_delay: float,
        *,
        counts_as_attempt: bool = True,
    ) -> Outcome:
        attempt = m.attempt + 1 if counts_as_attempt else m.attempt
        if attempt >= self.settings.max_attempts:
            return self._failed(m, tenant_id, plan, f"attempts exhausted: {reason}", code, dead=True)
        delay = (
            retry_delay(attempt, min_delay, self.settings.retry_initial_s, self.settings.retry_max_s)
            if counts_as_attempt
            else min_delay
        )
        nxt = m.model_copy(update={"attempt": attempt, "not_before": now_utc() + timedelta(seconds=delay)})
        self.metrics.sends.labels("retrying", str(code or "none")).inc()
        row = self._row(nxt, plan, tenant_id, "retrying", reason=reason, error_code=code)
        return Outcome(row, publish_result=False, retry=nxt)

    def _released(self, m: OutboundMessage, plan: SendPlan, tenant: Tenant) -> Outcome:
        """Not sent: the partition went to another consumer (or the process is stopping) first.

        Recorded as ``retrying`` at the same attempt (not ``sending``, which would read as a crash
        mid-call), so the next owner, re-reading from the committed offset, sends it normally.
        """
        row = self._row(m, plan, tenant.tenant_id, "retrying", reason="released: partition handed over")
        return Outcome(row, publish_result=False, released=True)

    async def _send_one(
        self, m: OutboundMessage, plan: SendPlan, tenant: Tenant, gate: Gate | None = None
    ) -> Outcome:
        number = m.phone_number_id
        pairs = self.pairs[number]
        while True:
            if gate is not None and gate.closed:
                return self._released(m, plan, tenant)
            wait = pairs.reserve(m.recipient, time.monotonic())
            if wait == 0.0:
                break
            if wait > self.settings.max_inline_wait_s:
                return self._retry(
                    m, plan, tenant.tenant_id, "pair_rate", None, wait, counts_as_attempt=False
                )
            await asyncio.sleep(wait)
        granted = await self.pacer(number).acquire(priority_rank(m.priority), gate)
        if not granted or (gate is not None and gate.closed):
            return self._released(m, plan, tenant)
        body = dict(plan.body)
        body["biz_opaque_callback_data"] = m.biz_opaque_callback_data or m.message_id
        app = self.directory().app_for_tenant(tenant.tenant_id)
        started = time.perf_counter()
        carrier = self.carriers.get(m.message_id)
        parent = propagate.extract(carrier) if carrier else ROOT
        # Started and ended explicitly (no context attach/detach per request: nothing below the
        # call is traced), attributes given at creation (one validation pass).
        span = self.tracer.start_span(
            "cloudapi send",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={
                "parley.message_id": m.message_id,
                "parley.phone_number_id": number,
                "parley.category": plan.category,
                "parley.attempt": m.attempt,
            },
        )
        try:
            resp = await self.client.send_message(app, number, body)
            span.set_attribute("parley.outcome", "accepted" if resp.accepted else "not_accepted")
        finally:
            span.end()
        self.metrics.latency.observe(time.perf_counter() - started)
        outcome = self._classify(m, plan, tenant, resp)
        if span.get_span_context().trace_flags.sampled:  # a link to an unsampled span leads nowhere
            outcome.send_span = traceparent_of(span.get_span_context())
        return outcome

    def _classify(self, m: OutboundMessage, plan: SendPlan, tenant: Tenant, resp: SendResponse) -> Outcome:
        tid = tenant.tenant_id
        if resp.accepted:
            self.pairs[m.phone_number_id].on_success(m.recipient)
            self.metrics.accepted(plan.category).inc()
            self.metrics.accepted_on(m.phone_number_id)
            row = self._row(
                m,
                plan,
                tid,
                "accepted",
                keep_request=False,
                wamid=resp.wamid,
                reason=None if resp.message_status in (None, "accepted") else resp.message_status,
            )
            return Outcome(
                row, reached=plan.business_initiated, fep_started=plan.free_window == "free_entry_point"
            )
        if resp.in_doubt:
            self.metrics.sends.labels("in_doubt", "in_doubt").inc()  # the error text is no label
            return Outcome(
                self._row(m, plan, tid, "in_doubt", reason=f"in_doubt: {resp.error_message}"),
                publish_result=False,
            )
        rule = action_for(resp.error_code, resp.http_status)
        code = resp.error_code
        reason = f"{rule.meaning} ({resp.error_details or resp.error_message or ''})"[:500]
        if rule.action == Action.THROTTLE_NUMBER:
            self.metrics.throttled.labels(m.phone_number_id, str(code)).inc()
            self.pacer(m.phone_number_id).on_throttled()
            return self._retry(m, plan, tid, reason, code, rule.delay_s)
        if rule.action == Action.THROTTLE_PAIR:
            self.metrics.throttled.labels(m.phone_number_id, str(code)).inc()
            backoff = self.pairs[m.phone_number_id].on_throttled(m.recipient, time.monotonic())
            return self._retry(m, plan, tid, reason, code, backoff)
        if rule.action == Action.PAUSE_NUMBER:
            self.pacer(m.phone_number_id).pause(rule.delay_s)
            return self._retry(m, plan, tid, reason, code, rule.delay_s)
        if rule.action == Action.RETRY:
            return self._retry(m, plan, tid, reason, code, rule.delay_s)
        if (
            rule.action == Action.SWITCH_TO_TEMPLATE
            and m.fallback_template is not None
            and m.type != "template"
        ):
            nxt = m.model_copy(
                update={
                    "type": "template",
                    "template": m.fallback_template,
                    "fallback_template": None,
                    "attempt": m.attempt + 1,
                    "not_before": None,
                }
            )
            row = self._row(nxt, plan, tid, "retrying", reason=reason, error_code=code)
            return Outcome(row, publish_result=False, retry=nxt)
        failed = self._failed(m, tid, plan, reason, code)
        failed.consent_stop = rule.action == Action.SUPPRESS_CONTACT
        return failed

    # --- effects ----------------------------------------------------------------------------
    async def _apply(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        await self.store.record_outcomes([o.row for o in outcomes])
        now = now_utc()
        reached = [
            (o.row.tenant_id, o.row.recipient, now)
            for o in outcomes
            if o.reached and o.row.tenant_id and o.row.recipient
        ]
        for tid, customer, at in reached:
            lim = self.limits.get(tid)
            if lim is not None:
                lim.record(customer, at.timestamp())
        await self.store.record_reached(reached)
        await self.store.start_free_entry_points(
            [
                (o.row.phone_number_id, o.row.recipient, now)
                for o in outcomes
                if o.fep_started and o.row.recipient
            ]
        )
        for o in outcomes:
            self._remember(o.row)
        records: list[tuple[str, bytes, bytes]] = []
        jobs = []
        for o in outcomes:
            key = o.row.phone_number_id.encode()
            if o.publish_result:
                records.append((SENDS.name, key, result_json(o.row, o.send_span)))
            if o.retry is not None:
                records.append((MESSAGES_OUT_RETRY.name, key, o.retry.model_dump_json().encode()))
            if o.dead_letter_reason is not None:
                jobs.append(self._dead_letter_request(o.row, o.dead_letter_reason))
            if o.consent_stop and o.row.tenant_id and o.row.recipient:
                jobs.append(
                    self._stop_marketing(
                        o.row.tenant_id,
                        o.row.phone_number_id,
                        o.row.recipient,
                        "error_131050",
                        o.row.message_id,
                    )
                )
        jobs.append(self._produce(records))
        await asyncio.gather(*jobs)

    async def _produce(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Every record handed over at once, acknowledgements gathered (order kept per key)."""
        if not records:
            return
        if self.producer is not None and self.producer.started:
            await self.producer.send_all(records)
            return
        await asyncio.gather(
            *(self.broker.publish(orjson.loads(value), topic, key=key) for topic, key, value in records)
        )

    async def _publish_retry(self, m: OutboundMessage) -> None:
        await self._produce(
            [(MESSAGES_OUT_RETRY.name, m.phone_number_id.encode(), m.model_dump_json().encode())]
        )

    async def _stop_marketing(
        self, tenant_id: str, phone_number_id: str, customer: str, source: str, source_event: str
    ) -> None:
        at = now_utc()
        await self.store.apply_consent(tenant_id, customer, "stop", at, source)
        change = ConsentChange(
            event_id=body_hash(tenant_id, customer, "stop", source_event),
            tenant_id=tenant_id,
            phone_number_id=phone_number_id,
            occurred_at=at,
            customer_id=customer,
            action="stop",
            source=source,
        )
        await self.broker.publish(
            change.model_dump(mode="json"), ACCOUNT_EVENTS.name, key=phone_number_id.encode()
        )

    async def _dead_letter_request(self, row: MessageRow, reason: str) -> None:
        value = orjson.dumps(row.request or {})
        letter = dead_letter_record(
            service=SERVICE,
            topic=MESSAGES_OUT.name,
            value=value,
            key=row.phone_number_id.encode(),
            exc=RuntimeError(reason),
            attempts=row.attempt + 1,
            event_id=f"{SERVICE}:{row.message_id}",
        )
        await publish_dead_letter(self.broker, letter)

    async def _dead_letter_record(self, rec: ConsumerRecord[Any, Any], exc: Exception) -> None:
        if is_transient(exc):
            raise exc
        log.warning(
            "dead-lettering an undecodable send request",
            extra={"topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
        )
        await publish_dead_letter(
            self.broker,
            dead_letter_record(
                service=SERVICE,
                topic=rec.topic,
                value=rec.value or b"",
                key=rec.key,
                exc=exc,
                attempts=1,
                partition=rec.partition,
                offset=rec.offset,
            ),
        )
