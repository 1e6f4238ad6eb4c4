"""Span links by wamid (docs/adr/0090-span-links-by-wamid.md).

The sender puts the traceparent of each sampled Cloud API call on its result (``send_span`` on
wa.sends). Billing keeps it by wamid; when statuses of that message arrive, each gets a span in the
trace of its status webhook (the record's ``traceparent`` header) linked to the send span, and
the batch's pricing gets a span linked to the send spans it priced. An SRE opening a send sees its
delivery, read and charge among the spans that link to it. Nothing here runs for a status when
tracing is off or its message was not sent by Parley with a sampled span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Tracer
from parley_common.telemetry import link_to

RETENTION_DAYS = 35  # Meta redelivers a status for up to 7 days; reads come later, rarely after a month


@dataclass
class StatusRef:
    wamid: str
    status: str
    phone_number_id: str
    tenant_id: str | None
    carrier: dict[str, str]  # the status record's trace headers (its webhook's trace)


def status_ref(record: dict[str, Any], headers: Sequence[tuple[str, bytes]] | None) -> StatusRef | None:
    wamid = record.get("wamid")
    if not isinstance(wamid, str) or not wamid:
        return None
    carrier = {k: v.decode("latin-1") for k, v in headers or () if k in ("traceparent", "tracestate")}
    return StatusRef(wamid, str(record.get("status") or ""), str(record.get("phone_number_id") or ""),
                     record.get("tenant_id") if isinstance(record.get("tenant_id"), str) else None, carrier)


class SendSpanLinks:
    def __init__(self, tracer: Tracer, pool: asyncpg.Pool) -> None:
        self.tracer = tracer
        self.pool = pool

    @staticmethod
    def tracing() -> bool:
        """Whether the handler runs in a recorded span (tracing on and this batch sampled)."""
        return trace.get_current_span().is_recording()

    async def remember(self, sends: Sequence[tuple[str, str]]) -> None:
        """Keep (wamid, send_span) of results that carry one (idempotent)."""
        if not sends:
            return
        await self.pool.execute(
            "INSERT INTO billing.send_spans (wamid, send_span)"
            " SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (wamid) DO NOTHING",
            [w for w, _ in sends], [s for _, s in sends])

    async def spans_of(self, wamids: Sequence[str]) -> dict[str, str]:
        if not wamids:
            return {}
        rows = await self.pool.fetch(
            "SELECT wamid, send_span FROM billing.send_spans WHERE wamid = ANY($1::text[])", list(set(wamids)))
        return {r["wamid"]: r["send_span"] for r in rows}

    @contextlib.contextmanager
    def pricing(self, statuses: Sequence[StatusRef], spans: dict[str, str]) -> Iterator[trace.Span]:
        """The span of a status batch's metering and pricing (the billing decision), linked to the
        send spans of its messages (as many as the SDK's link limit keeps)."""
        wamids = {s.wamid for s in statuses}
        with self._pricing("billing price statuses", [spans[w] for w in wamids if w in spans],
                           len(statuses)) as span:
            yield span

    @contextlib.contextmanager
    def pricing_sends(self, sends: Sequence[tuple[str, str]]) -> Iterator[trace.Span]:
        """The same for a batch of send results: a send recorded after its delivery is priced then."""
        with self._pricing("billing price sends", list({w: s for w, s in sends}.values()), len(sends)) as span:
            yield span

    @contextlib.contextmanager
    def _pricing(self, name: str, send_spans: list[str], records: int) -> Iterator[trace.Span]:
        links = [link for link in (link_to(s, **{"parley.link": "priced send"}) for s in send_spans)
                 if link is not None]
        with self.tracer.start_as_current_span(name, kind=SpanKind.INTERNAL, links=links,
                                               attributes={"parley.records": records}) as span:
            yield span

    def record_statuses(self, statuses: Sequence[StatusRef], spans: dict[str, str]) -> int:
        """One span per status of a message Parley sent, in the trace of the status's webhook, linked
        to the send span. Returns how many were recorded."""
        n = 0
        for s in statuses:
            link: Link | None = link_to(spans.get(s.wamid), **{"parley.link": "send of this status"})
            if link is None:
                continue
            parent = propagate.extract(s.carrier) if s.carrier else None
            attributes = {"parley.status": s.status, "parley.phone_number_id": s.phone_number_id}
            if s.tenant_id:
                attributes["parley.tenant_id"] = s.tenant_id
            span = self.tracer.start_span(f"billing status {s.status}", context=parent, kind=SpanKind.CONSUMER,
                                          links=[link], attributes=attributes)
            span.end()
            n += 1
        return n

    async def prune(self) -> int:
        if self.pool is None:
            return 0
        done = await self.pool.execute(
            f"DELETE FROM billing.send_spans WHERE stored_at < now() - interval '{int(RETENTION_DAYS)} days'")
        return int(done.split()[-1]) if done.startswith("DELETE") else 0
