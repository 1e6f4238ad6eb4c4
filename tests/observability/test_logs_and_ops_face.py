"""JSON log lines (trace ids on every line, nothing personal in messages, values or tracebacks), the
redaction key required outside the demo, and the operations face on a port of its own."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import httpx
import pydantic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from parley_common.redaction import Redactor
from parley_common.settings import CommonSettings, MissingRedactionKey

PHONE = "8801712345678"
BSUID = "US.13491208655302741918"
TEXT = "please refund order 42 to my card"


@pytest.fixture
def json_log() -> tuple[logging.Logger, io.StringIO]:
    from parley_common.telemetry import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("test", "INFO", Redactor("k"))
    buf = io.StringIO()
    root.handlers[0].setStream(buf)  # type: ignore[attr-defined]
    yield logging.getLogger("parley.test"), buf
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


class Message(pydantic.BaseModel):
    count: int


def test_every_line_is_json_with_trace_ids_and_nothing_personal(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = json_log
    tracer = TracerProvider().get_tracer("t")
    logger.info("outside a span, for %s", PHONE)
    with tracer.start_as_current_span("inside") as span:
        logger.warning("customer %s wrote", BSUID, extra={"text": TEXT, "detail": {"to": PHONE, "n": 3},
                                                          "ids": [BSUID, "ok"]})
        try:
            Message.model_validate({"count": TEXT})
        except pydantic.ValidationError:
            logger.exception("could not decode a record from +%s", PHONE)
    out = lines(buf)
    assert [line["level"] for line in out] == ["INFO", "WARNING", "ERROR"]
    assert out[0]["trace_id"] is None and out[0]["span_id"] is None
    ctx = span.get_span_context()
    assert out[1]["trace_id"] == out[2]["trace_id"] == format(ctx.trace_id, "032x")
    assert out[1]["span_id"] == format(ctx.span_id, "016x")
    assert "ValidationError" in str(out[2]["exc_info"])  # the traceback is kept, its input is not
    raw = buf.getvalue()
    for secret in (PHONE, BSUID, TEXT, "refund"):
        assert secret not in raw
    assert str(out[1]["text"]).startswith("h:")
    assert out[1]["detail"] == {"to": Redactor("k").pseudonym(PHONE), "n": 3}


@pytest.mark.infra
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_faststream_writes_through_the_json_logger_and_per_message_lines_only_at_debug(
        json_log: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str], level: str,
        kafka_bootstrap: str) -> None:
    from parley_common.broker import CONSUMER_DEFAULTS, make_broker
    from parley_common.topics import MESSAGES_ROUTED

    _, buf = json_log
    logging.getLogger().setLevel(level)
    broker = make_broker(kafka_bootstrap, service="test")
    seen = asyncio.Event()

    @broker.subscriber(MESSAGES_ROUTED.name, group_id=f"observability-{level}", **CONSUMER_DEFAULTS)
    async def handle(body: dict[str, object]) -> None:
        if body == {"level": level}:
            seen.set()

    async with broker:
        await broker.start()
        await broker.publish({"level": level}, MESSAGES_ROUTED.name, key=b"k")
        await asyncio.wait_for(seen.wait(), 60)
    out = lines(buf)  # every line JSON
    per_message = [line for line in out if line["message"] in ("Received", "Processed")
                   and line.get("topic") == MESSAGES_ROUTED.name]
    assert bool(per_message) == (level == "DEBUG")
    assert all(line["logger"] == "parley.faststream" and "trace_id" in line for line in per_message)
    assert capsys.readouterr().err == ""  # nothing in FastStream's own coloured format


def test_a_service_refuses_to_start_without_a_redaction_key_outside_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from parley_common.runtime import build_runtime

    monkeypatch.delenv("PARLEY_REDACTION_KEY", raising=False)
    monkeypatch.delenv("PARLEY_DEMO", raising=False)
    with pytest.raises(MissingRedactionKey, match="PARLEY_REDACTION_KEY is not set"):
        build_runtime("test", CommonSettings(), configure_logs=False)
    monkeypatch.setenv("PARLEY_DEMO", "true")
    assert build_runtime("test", CommonSettings(), configure_logs=False).redactor.pseudonym("x").startswith("h:")


async def test_metrics_and_docs_leave_the_public_face_when_an_ops_port_is_set() -> None:
    from parley_common.runtime import build_runtime, make_app, ops_app

    rt = build_runtime("test", CommonSettings(ops_port=9999), configure_logs=False)
    public = make_app(rt, title="t")
    ops = ops_app(rt, public)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(public), base_url="http://p") as p, \
            httpx.AsyncClient(transport=httpx.ASGITransport(ops), base_url="http://o") as o:
        for path in ("/metrics", "/docs", "/openapi.json"):
            assert (await p.get(path)).status_code == 404, path
            assert (await o.get(path)).status_code == 200, path
        assert (await p.get("/healthz")).status_code == 200
        assert "parley_http_requests_total" in (await o.get("/metrics")).text
    rt = build_runtime("test", CommonSettings(), configure_logs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(make_app(rt, title="t")), base_url="http://p") as p:
        assert (await p.get("/metrics")).status_code == 200  # the demo: one port
        assert (await p.get("/docs")).status_code == 200
