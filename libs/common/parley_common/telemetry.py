"""OpenTelemetry, Prometheus and JSON logs, configured the same way in every service.

Traces: a TracerProvider configured by the standard ``OTEL_*`` variables; OTLP over HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces variant) is set. Logs: JSON with trace ids,
through a filter that redacts phone numbers and message text.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry
from pythonjsonlogger.json import JsonFormatter

from parley_common.redaction import Redactor

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


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


class RedactingFilter(logging.Filter):
    """Pseudonymise sensitive fields and phone-number-looking text in every record."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self._redactor.scrub_text(record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(self._redactor.scrub_text(a) if isinstance(a, str) else a for a in args)
        for key, value in list(vars(record).items()):
            if key not in _STD_ATTRS:
                setattr(record, key, self._redactor.scrub_value(key, value))
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


def configure_logging(service: str, level: str, redactor: Redactor) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
        "{asctime}{levelname}{name}{message}", style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"service": f"parley-{service}"},
    ))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def span_attrs(redactor: Redactor, **attrs: Any) -> dict[str, Any]:
    """Span attributes with sensitive values pseudonymised."""
    return {k: redactor.scrub_value(k, v) for k, v in attrs.items() if v is not None}
