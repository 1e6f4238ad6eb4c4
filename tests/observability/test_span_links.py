"""A send's later statuses and its charge link to the send span (found by wamid), on the real
pipeline (Kafka, PostgreSQL, the four services and the simulator) with an in-memory span exporter."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import httpx
import pytest
from e2e.conftest import NUMBERS, PN1, SECRET, WABAS, Pipeline
from parley_simulator import sign
from support.waiting import eventually

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

CUSTOMER = "14155550177"
RUN = str(int(time.time() * 1000))


def status_webhook(wamid: str, status: str) -> bytes:
    display, _ = NUMBERS[PN1]
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": WABAS[0], "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": display, "phone_number_id": PN1},
            "statuses": [{"id": wamid, "status": status, "timestamp": str(int(time.time()) + 5),
                          "recipient_id": CUSTOMER,
                          "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular",
                                      "category": "utility"}}]}}]}]}).encode()


async def test_statuses_and_the_charge_of_a_send_link_to_its_send_span(pipeline: Pipeline) -> None:
    exporter = pipeline.exporter
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{pipeline.ingest.url}/v1/messages", headers={
            "Authorization": f"Bearer {pipeline.api_key}"}, json={
            "from": PN1, "to": CUSTOMER, "type": "template", "biz_opaque_callback_data": f"links-{RUN}",
            "template": {"name": "order_update", "language": {"code": "en"}, "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "A1"}]}]}})
        assert r.status_code == 202, r.text
        message_id = r.json()["id"]

        def send_span() -> Any:
            return next((s for s in exporter.get_finished_spans() if s.name == "cloudapi send"
                         and (s.attributes or {}).get("parley.message_id") == message_id), None)

        async def stored() -> tuple[str, str] | None:
            conn = await asyncpg.connect(pipeline.database_url)
            try:
                row = await conn.fetchrow(
                    "SELECT s.wamid, s.send_span FROM billing.send_spans s JOIN billing.sends USING (wamid)"
                    " WHERE s.wamid IN (SELECT wamid FROM billing.ledger)"
                    " AND s.send_span LIKE '%' || $1 || '%'", format(send_span().context.span_id, "016x"))
                return (row["wamid"], row["send_span"]) if row else None
            finally:
                await conn.close()

        async def sent() -> Any:
            return send_span()

        await eventually(sent, what="the Cloud API send span")
        wamid, stored_span = await eventually(stored, what="billing keeping the send span by wamid, and pricing it")
        send = send_span()
        assert stored_span.startswith(f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-")

        # A later status webhook for that wamid (a read, as Meta sends it hours later).
        body = status_webhook(wamid, "read")
        r = await client.post(pipeline.webhook_url, content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})
        assert r.status_code == 200, r.text

    def linked(name_prefix: str) -> list[Any]:
        return [s for s in exporter.get_finished_spans() if s.name.startswith(name_prefix)
                and any(link.context.span_id == send.context.span_id
                        and link.context.trace_id == send.context.trace_id for link in s.links)]

    async def read_linked() -> list[Any]:
        return [s for s in linked("billing status ") if s.name == "billing status read"]

    status_spans = await eventually(read_linked, what="a span of the read status linked to the send")
    status = status_spans[0]
    # The status span is in the trace of its own webhook (ingest's POST), not in the send's trace.
    webhook_traces = {s.context.trace_id for s in exporter.get_finished_spans() if s.name == "webhook receive"}
    assert status.context.trace_id in webhook_traces
    assert status.context.trace_id != send.context.trace_id
    # The billing decision (pricing of its batch) links to the send too.
    assert linked("billing price "), "no pricing span links to the send"
    # Nothing personal in the new spans: no phone number, no wamid (it encodes the number).
    for span in [*linked("billing "), send]:
        for value in (span.attributes or {}).values():
            assert CUSTOMER not in str(value) and wamid not in str(value)
