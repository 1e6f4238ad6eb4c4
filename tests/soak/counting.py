"""What the soak counts once the pipeline has drained: every record read back from Kafka, the
Cloud API simulator's own record of what it accepted, and billing's ledger.

- lost: an inbound message the simulator posted (and ingest answered 200) that never reached the
  router's decisions; a status the simulator posted that never reached ``wa.statuses``;
- duplicated_sends: for each customer, messages the simulator accepted beyond the number of send
  requests Parley had for that customer (a request sent twice shows up here, whatever its ids);
- final states: every send request has exactly one final outcome on ``wa.sends``;
- misbilled: a delivered business message whose Meta pricing object says billable without a
  billable ledger row, or a billable ledger row Meta did not charge.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from parley_sender.domain.outcomes import FINAL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
from topic_reading import read_topic  # deploy/local/topic_reading.py, shared with the demo's summary

# The outcomes the sender publishes for its final states (a dead request is published as failed).
FINAL_OUTCOMES = frozenset(state.outcome for state in FINAL)
RESOLVED_AFTER_DOUBT = {"in_doubt", "accepted"}


async def consumer_lag(bootstrap: str, namespace: str, groups: list[str]) -> dict[str, int]:
    """Records not yet committed per consumer group (by base name), over every topic of the
    namespace it reads."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=5000)
    await admin.start()
    await consumer.start()
    try:
        lag: dict[str, int] = {}
        for group in groups:
            committed = await admin.list_consumer_group_offsets(namespace + group)  # groups live in it too
            tps = [tp for tp in committed if tp.topic.startswith(namespace)]
            if not tps:
                lag[group] = -1
                continue
            end = await consumer.end_offsets(tps)
            lag[group] = sum(max(0, end[tp] - committed[tp].offset) for tp in tps)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


@dataclass
class Counts:
    inbound_posted: int = 0
    inbound_routed: int = 0
    lost_inbound: int = 0
    statuses_posted: int = 0
    lost_statuses: int = 0
    send_requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    without_final_state: int = 0
    conflicting_final_states: int = 0
    resolved_after_doubt: int = 0
    simulator_accepted: int = 0
    duplicated_sends: int = 0
    delivered_billable_by_meta: int = 0
    ledger_rows: int = 0
    misbilled: int = 0
    unpriced: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.lost_inbound + self.lost_statuses + self.without_final_state

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

        return {
            "inbound_posted": self.inbound_posted, "inbound_routed": self.inbound_routed,
            "lost_inbound": self.lost_inbound, "statuses_posted": self.statuses_posted,
            "lost_statuses": self.lost_statuses, "send_requests": self.send_requests,
            "outcomes": dict(self.outcomes), "without_final_state": self.without_final_state,
            "conflicting_final_states": self.conflicting_final_states,
            "resolved_after_doubt": self.resolved_after_doubt,
            "simulator_accepted": self.simulator_accepted, "duplicated_sends": self.duplicated_sends,
            "delivered_billable_by_meta": self.delivered_billable_by_meta, "ledger_rows": self.ledger_rows,
            "misbilled": self.misbilled, "unpriced": self.unpriced, "lost": self.lost,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "latency_samples": len(lat),
        }


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def count(bootstrap: str, namespace: str, database_url: str, posted_inbound: set[str],
                sim_messages: list[dict[str, Any]]) -> Counts:
    c = Counts()
    topic = {name: namespace + name for name in
             ("wa.messages.in", "wa.messages.routed", "wa.messages.out", "wa.sends", "wa.statuses")}
    inbound = {r["event_id"]: r for r in await read_topic(bootstrap, topic["wa.messages.in"])}
    routed = {r["event_id"] for r in await read_topic(bootstrap, topic["wa.messages.routed"])}
    requests = {r["message_id"]: r for r in await read_topic(bootstrap, topic["wa.messages.out"])}
    results = await read_topic(bootstrap, topic["wa.sends"])
    statuses = {r["event_id"]: r for r in await read_topic(bootstrap, topic["wa.statuses"])}

    c.inbound_posted = len(posted_inbound)
    c.inbound_routed = len(posted_inbound & routed)
    c.lost_inbound = len(posted_inbound - routed)

    # Statuses the simulator planned for the messages it accepted, and posted.
    planned = {f"{m['wamid']}:{s['status']}" for m in sim_messages for s in m.get("statuses", [])}
    c.statuses_posted = len(planned)
    c.lost_statuses = len(planned - set(statuses))

    # One final state per request.
    finals: dict[str, set[str]] = defaultdict(set)
    first_result: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["outcome"] in FINAL_OUTCOMES:
            finals[r["message_id"]].add(r["outcome"])
            first_result.setdefault(r["message_id"], r)
    c.send_requests = len(requests)
    c.without_final_state = sum(1 for mid in requests if not finals.get(mid))
    # Reported in doubt at the deadline, then a status proved it sent: the designed resolution
    # (docs/adr/0030), one outcome ("accepted") and no conflict.
    for outs in finals.values():
        if outs == RESOLVED_AFTER_DOUBT:
            c.resolved_after_doubt += 1
            outs.discard("in_doubt")
    c.conflicting_final_states = sum(1 for s in finals.values() if len(s) > 1)
    c.outcomes = Counter(next(iter(s)) if len(s) == 1 else "conflicting" for s in finals.values())

    # At most one accepted message per request, counted per customer.
    c.simulator_accepted = len(sim_messages)
    wanted = Counter((r["phone_number_id"], r.get("to") or r.get("to_user_id")) for r in requests.values())
    got = Counter((m["phone_number_id"], m.get("to") or m.get("wa_id")) for m in sim_messages)
    c.duplicated_sends = sum(max(0, n - wanted.get(k, 0)) for k, n in got.items())

    # Webhook (ingest's receipt of the customer's message) to the Cloud API's answer.
    for mid, res in first_result.items():
        req = requests.get(mid)
        if res["outcome"] == "accepted" and req and req.get("reply_to_wamid") in inbound:
            c.latencies_ms.append(1000 * (_ts(res["received_at"]) - _ts(inbound[req["reply_to_wamid"]]["received_at"])))

    # Billing against Meta's pricing objects on delivered statuses.
    meta_billable: dict[str, bool] = {}
    for s in statuses.values():
        pricing = s.get("pricing") or {}
        if s.get("status") in ("delivered", "read") and "billable" in pricing:
            meta_billable[s["wamid"]] = meta_billable.get(s["wamid"], False) or bool(pricing["billable"])
    c.delivered_billable_by_meta = sum(meta_billable.values())
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT wamid, billable, amount FROM billing.ledger")
    finally:
        await conn.close()
    ledger = {r["wamid"]: r for r in rows}
    c.ledger_rows = len(rows)
    for wamid, billable in meta_billable.items():
        row = ledger.get(wamid)
        if billable and (row is None or not row["billable"]):
            c.misbilled += 1
        elif not billable and row is not None and row["billable"]:
            c.misbilled += 1
    c.unpriced = sum(1 for r in rows if r["billable"] and r["amount"] is None)
    return c
