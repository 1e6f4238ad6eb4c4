"""OpenTelemetry, Prometheus and JSON logs, configured the same way in every service.

Traces: a TracerProvider configured by the standard ``OTEL_*`` variables; OTLP over HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces variant) is set. Logs: one JSON object per line on
stderr, every line with ``trace_id`` and ``span_id`` (null outside a span), through a filter and a
formatter that redact phone numbers, user ids and message text in the message, in structured
values and in tracebacks. Metrics: RED per HTTP route (:class:`HttpMetrics`), consumer lag per
group and partition and readiness (:class:`OpsMonitor`); the Kafka handlers' RED comes from
FastStream's Prometheus middleware (``faststream_received_processed_messages_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

from parley_common.redaction import Redactor

log = logging.getLogger("parley.telemetry")

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}
# Buckets of every HTTP latency histogram: Meta's guidance for webhook answers is a median under
# 250 ms and under 1 % over 1 s, so both edges are buckets.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def make_tracer_provider(service: str) -> TracerProvider:
    """Build (and register globally, once) the tracer provider of this process."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"parley-{service}")})
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true" and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    return provider


def make_registry() -> CollectorRegistry:
    return CollectorRegistry()


# --- span links by wamid ---------------------------------------------------------------------------


def traceparent_of(span_context: SpanContext) -> str | None:
    """A span's context as a W3C ``traceparent`` value, to be stored with the wamid it produced."""
    if not span_context.is_valid:
        return None
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def link_to(traceparent: str | None, **attributes: str) -> Link | None:
    """A span link to the span whose ``traceparent`` was stored (None when there is none, or it
    is not a valid W3C value: a link is a help for whoever reads the trace, never a failure)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        ctx = SpanContext(int(parts[1], 16), int(parts[2], 16), is_remote=True,
                          trace_flags=TraceFlags(int(parts[3], 16) & 0xFF))
    except ValueError:
        return None
    return Link(ctx, attributes or None) if ctx.is_valid else None


# --- logs ------------------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Pseudonymise sensitive fields and phone-number-looking text in every record, and put the
    current trace and span ids on it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args or isinstance(record.msg, str):
            # The message as it will read, then scrubbed: arguments of any type (an exception,
            # a model) are formatted first, so nothing reaches the line unscrubbed.
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            record.msg = self._redactor.scrub_text(message)
            record.args = None
        if hasattr(record, "color_message"):  # uvicorn's copy of the message with terminal colours
            del record.color_message
        for key, value in list(vars(record).items()):
            if key not in _STD_ATTRS:
                setattr(record, key, self._redactor.scrub_value(key, value))
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        else:
            record.trace_id = None
            record.span_id = None
        return True


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines whose tracebacks and stacks are scrubbed like messages (an exception's text can
    carry the input that caused it)."""

    def __init__(self, redactor: Redactor, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redactor = redactor

    def formatException(self, ei: ExcInfo) -> str | list[str]:  # type: ignore[override]
        return self._scrub(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str | list[str]:  # type: ignore[override]
        return self._scrub(super().formatStack(stack_info))

    def _scrub(self, text: str | list[str]) -> str | list[str]:
        if isinstance(text, list):
            return [self._redactor.scrub_text(t) for t in text]
        return self._redactor.scrub_text(text)


def configure_logging(service: str, level: str, redactor: Redactor) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingJsonFormatter(
        redactor,
        "{asctime}{levelname}{name}{message}{trace_id}{span_id}", style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"service": f"parley-{service}"},
    ))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Libraries that install handlers of their own write through the root's JSON handler instead.
    for name in ("uvicorn", "uvicorn.error", "faststream", "parley.faststream"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def span_attrs(redactor: Redactor, **attrs: Any) -> dict[str, Any]:
    """Span attributes with sensitive values pseudonymised."""
    return {k: redactor.scrub_value(k, v) for k, v in attrs.items() if v is not None}


# --- metrics ---------------------------------------------------------------------------------------


class HttpMetrics:
    """RED of every HTTP route, as a pure ASGI middleware: requests by method, route template (never
    the raw path: it can carry ids) and status, and latency histograms by method and route."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("parley_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=registry)
        self.seconds = Histogram("parley_http_request_duration_seconds", "HTTP answer time by route",
                                 ["method", "route"], buckets=HTTP_BUCKETS, registry=registry)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.requests.labels(method, route, str(status[0])).inc()
            self.seconds.labels(method, route).observe(time.perf_counter() - started)


class OpsMonitor:
    """A background task that keeps gauges current for alerts that must fire when nothing else
    moves: ``parley_consumer_lag`` (committed offsets of each consumer group behind the end of each
    partition, read from Kafka as KEDA does, so a stuck or dead consumer still shows),
    ``parley_ready`` (the /readyz checks, by check) and ``parley_topic_end_offset`` of the
    dead-letter topic (whoever wrote to it: services, replays, ingest's own producer)."""

    def __init__(self, registry: CollectorRegistry, bootstrap: str, *, interval_s: float = 10.0,
                 readiness: Callable[[], Awaitable[Mapping[str, bool]]] | None = None,
                 **kafka_options: Any) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.readiness = readiness
        self.kafka_options = kafka_options
        self.groups: dict[str, list[str]] = {}  # group -> topics (names read when registered)
        self.ends: list[str] = []  # topics whose end offsets are shown (the dead-letter topic)
        self.lag = Gauge("parley_consumer_lag", "Records of a partition not yet committed by a group",
                         ["group", "topic", "partition"], registry=registry)
        self.ready = Gauge("parley_ready", "Readiness checks (1 ready, 0 not)", ["check"], registry=registry)
        self.end_offset = Gauge("parley_topic_end_offset", "End offset of a partition (records ever written)",
                                ["topic", "partition"], registry=registry)
        self.lag_errors = Counter("parley_consumer_lag_errors_total", "Consumer lag reads that failed",
                                  registry=registry)
        self._task: asyncio.Task[None] | None = None

    def watch(self, group: str, topics: Sequence[str]) -> None:
        known = self.groups.setdefault(group, [])
        known.extend(t for t in topics if t not in known)

    def watch_end(self, topic: str) -> None:
        if topic not in self.ends:
            self.ends.append(topic)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="parley-ops-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        admin = consumer = None
        try:
            while True:
                if self.readiness is not None:
                    with contextlib.suppress(Exception):
                        for check, ok in (await self.readiness()).items():
                            self.ready.labels(check).set(1 if ok else 0)
                if self.groups or self.ends:
                    try:
                        if admin is None or consumer is None:
                            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.kafka_options)
                            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                                        enable_auto_commit=False, **self.kafka_options)
                            await admin.start()
                            await consumer.start()
                        await asyncio.wait_for(self.read_lag(admin, consumer), self.interval_s * 3)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        self.lag_errors.inc()
                        log.warning("could not read consumer lag", extra={"error_type": type(exc).__name__})
                await asyncio.sleep(self.interval_s)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            if admin is not None:
                with contextlib.suppress(Exception):
                    await admin.close()

    async def _partitions(self, consumer: Any, topic: str) -> list[Any]:
        from aiokafka import TopicPartition

        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def read_lag(self, admin: Any, consumer: Any) -> None:
        from aiokafka import TopicPartition

        watched: list[TopicPartition] = [tp for topic in self.ends for tp in await self._partitions(consumer, topic)]
        if watched:
            for tp, end in (await consumer.end_offsets(watched)).items():
                self.end_offset.labels(tp.topic, str(tp.partition)).set(end)
        for group, topics in self.groups.items():
            committed = await admin.list_consumer_group_offsets(group)
            tps: list[TopicPartition] = []
            for topic in topics:
                tps.extend(await self._partitions(consumer, topic))
            if not tps:
                continue
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else starts.get(tp, 0)
                self.lag.labels(group, tp.topic, str(tp.partition)).set(max(0, ends.get(tp, 0) - done))
