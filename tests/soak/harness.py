"""The soak: the whole pipeline at a steady load, faults injected on a schedule, everything counted.

``run_soak`` starts two replicas of each service and the simulator (``stack.py``), drives customer
conversations through the simulator (each an inbound webhook, routing, an auto-reply sent through
the Cloud API, up to three status webhooks, billing), applies each fault of the schedule and
watches consumer lag return afterwards, then stops the load, lets the pipeline drain and counts
(``counting.py``). The result is a Jepsen-style table per fault and one JSON document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import phonenumbers

from .counting import consumer_lag, count
from .stack import REPO, TENANTS, PrivateInfra, Stack, infra_env

GROUPS = ["parley-router", "parley-sender", "parley-billing"]


@dataclass
class Fault:
    name: str
    at_s: float  # seconds after the load started
    apply: Callable[[Stack], Awaitable[str]]
    detail: str = ""
    recovered_after_s: float | None = None
    lag_trace: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # (s after the fault, lag)
    note: str = ""


def kill9(name: str) -> Callable[[Stack], Awaitable[str]]:
    async def apply(stack: Stack) -> str:
        proc = stack.procs[name]
        proc.kill9()
        await asyncio.sleep(1.0)
        proc.start()
        await proc.wait_ready()
        return f"kill -9 {name} (pid gone), restarted"
    return apply


def pause(name: str, seconds: float) -> Callable[[Stack], Awaitable[str]]:
    async def apply(stack: Stack) -> str:
        proc = stack.procs[name]
        proc.signal(signal.SIGSTOP)
        await asyncio.sleep(seconds)
        proc.signal(signal.SIGCONT)
        return f"SIGSTOP {name} for {seconds:.0f} s, then SIGCONT"
    return apply


def simulator_misbehaves(seconds: float, **behaviour: Any) -> Callable[[Stack], Awaitable[str]]:
    async def apply(stack: Stack) -> str:
        before = await stack.sim("GET", "/_sim/behaviour")
        await stack.sim("PATCH", "/_sim/behaviour", json=behaviour)
        await asyncio.sleep(seconds)
        await stack.sim("PATCH", "/_sim/behaviour", json={k: before[k] for k in behaviour})
        return f"simulator {behaviour} for {seconds:.0f} s"
    return apply


def throttle_numbers(seconds: float, mps: int) -> Callable[[Stack], Awaitable[str]]:
    """Meta answers 130429 when a number sends over its throughput: lower it for a while."""
    async def apply(stack: Stack) -> str:
        for n in stack.numbers:
            await stack.sim("PATCH", f"/_sim/numbers/{n}", json={"throughput": mps})
        await asyncio.sleep(seconds)
        for n in stack.numbers:
            await stack.sim("PATCH", f"/_sim/numbers/{n}", json={"throughput": 1000})
        return f"every number throttled to {mps} mps for {seconds:.0f} s (130429 bursts)"
    return apply


def infra_restart(component: str) -> Callable[[Stack], Awaitable[str]]:
    """Stop and start the soak's private broker or database (never the shared ones)."""
    async def apply(stack: Stack) -> str:
        if stack.private is None:
            raise RuntimeError("only the soak's private infrastructure is restarted")
        away = await asyncio.to_thread(stack.private.restart, component)
        return f"{component} stopped and started again ({away:.1f} s away)"
    return apply


def schedule(kind: str, duration_s: float, session_timeout_s: float = 45.0, *,
             restart_infra: bool = False) -> list[Fault]:
    """The faults of a run, spread evenly over its first three quarters; the broker and database
    restarts only with ``restart_infra`` (the run has its own private infrastructure)."""
    faults: list[tuple[str, Callable[[Stack], Awaitable[str]]]] = []
    if kind == "none":
        return []
    if kind == "pause":  # a sender replica stopped past the session timeout, then resumed (zombie)
        faults = [("SIGSTOP sender past the session timeout", pause("sender-1", session_timeout_s + 10)),
                  ("SIGSTOP sender past the session timeout", pause("sender-2", session_timeout_s + 10))]
    elif kind == "short":
        faults = [
            ("kill -9 sender", kill9("sender-1")),
            ("simulator 5xx and timeouts", simulator_misbehaves(8, error_5xx_rate=0.2, timeout_rate=0.05,
                                                                hang_seconds=3.0)),
            ("kill -9 ingest", kill9("ingest-1")),
            ("kill -9 billing", kill9("billing-2")),
        ]
    else:
        faults = [(f"kill -9 {name}", kill9(name)) for name in
                  ("ingest-1", "router-1", "sender-1", "billing-1", "ingest-2", "router-2", "sender-2", "billing-2")]
        faults += [
            ("SIGSTOP router past the session timeout", pause("router-2", session_timeout_s + 10)),
            ("SIGSTOP sender past the session timeout", pause("sender-1", session_timeout_s + 10)),
            ("simulator 5xx burst", simulator_misbehaves(10, error_5xx_rate=0.5)),
            ("simulator timeouts", simulator_misbehaves(10, timeout_rate=0.05, timeout_accepted_rate=0.05,
                                                        hang_seconds=5.0)),
            ("130429 throttling", throttle_numbers(10, 20)),
        ]
        if restart_infra:
            faults += [("Kafka broker restart", infra_restart("kafka")),
                       ("PostgreSQL restart", infra_restart("postgres"))]
    step = 0.75 * duration_s / (len(faults) + 1)
    return [Fault(name, step * (i + 1), apply) for i, (name, apply) in enumerate(faults)]


@dataclass
class Load:
    """Conversations at a steady rate: the simulator posts each customer's message to ingest, as Meta
    does; for a share of them the business also sends a template through Parley's API (utility, to a
    customer who just wrote, or marketing), so that charged templates flow beside the replies."""

    stack: Stack
    rate: float
    template_share: float = 0.5
    posted: set[str] = field(default_factory=set)
    templates_requested: int = 0
    templates_refused_at_api: Counter[int] = field(default_factory=Counter)
    started: float = 0.0
    stopped: float = 0.0
    ticks_late: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        tick = 0.2
        per_tick = self.rate * tick
        carry = 0.0
        rng = random.Random(7)
        seed = rng.randrange(1 << 20)
        owner = {n: t for t, (_, ns) in TENANTS.items() for n in ns}
        self.started = time.monotonic()
        next_at = self.started
        async with httpx.AsyncClient(timeout=10) as api:
            while not stop.is_set():
                carry += per_tick
                n, carry = int(carry), carry - int(carry)
                if n:
                    seed += 1
                    with contextlib.suppress(Exception):
                        r = await self.stack.sim("POST", "/_sim/inbound", json={
                            "count": n, "seed": seed, "phone_number_ids": self.stack.numbers})
                        self.posted.update(m["wamid"] for m in r["messages"])
                        for m in r["messages"]:
                            if m["username_only"] or rng.random() >= self.template_share \
                                    or not _valid_number(m["customer_id"]):
                                continue
                            await self._template(api, owner[m["phone_number_id"]], m, rng)
                next_at += tick
                delay = next_at - time.monotonic()
                if delay < 0:
                    self.ticks_late += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, delay))
        self.stopped = time.monotonic()

    async def _template(self, api: httpx.AsyncClient, tenant: str, inbound: dict[str, Any],
                        rng: random.Random) -> None:
        name = "order_update" if rng.random() < 0.7 else "weekly_offer"
        body = {"from": inbound["phone_number_id"], "to": inbound["customer_id"], "type": "template",
                "template": {"name": name, "language": {"code": "en"}, "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": f"A{rng.randrange(10**6)}"}]}]},
                "biz_opaque_callback_data": "soak-campaign"}  # shared by the whole campaign, as tenants do
        with contextlib.suppress(httpx.HTTPError):
            r = await api.post(f"{self.stack.ingest_url}/v1/messages", json=body,
                               headers={"Authorization": f"Bearer {self.stack.api_keys[tenant]}"})
            self.templates_requested += 1
            if r.status_code >= 300:
                self.templates_refused_at_api[r.status_code] += 1


def _valid_number(digits: str) -> bool:
    """The simulator's customers have random digits; the business API takes only real numbering plans."""
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits)))
    except phonenumbers.NumberParseException:
        return False


async def wait_recovered(stack: Stack, rate: float, timeout_s: float,
                         trace: list[tuple[float, dict[str, int]]] | None = None) -> float | None:
    """Seconds until every consumer group's lag is below one second of load (None: not within
    timeout); each group's lag is appended to ``trace`` every few seconds, to see which lagged."""
    t0 = time.monotonic()
    bootstrap = stack.infra["PARLEY_KAFKA_BOOTSTRAP"]
    last_traced = -1e9
    while time.monotonic() - t0 < timeout_s:
        with contextlib.suppress(Exception):
            lag = await consumer_lag(bootstrap, stack.namespace, GROUPS)
            now = time.monotonic() - t0
            if trace is not None and now - last_traced >= 5:
                trace.append((round(now, 1), lag))
                last_traced = now
            if all(0 <= v <= max(50, rate) for v in lag.values()):
                if trace is not None:
                    trace.append((round(now, 1), lag))
                return now
        await asyncio.sleep(1.0)
    return None


async def unsettled_requests(database_url: str) -> int:
    """Send requests the sender has not settled yet (its call in flight, waiting to retry, or in
    doubt before its deadline): the only states from which it still acts on its own."""
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM sender.messages WHERE state IN ('sending', 'retrying', 'in_doubt')")
        return count
    finally:
        await conn.close()


async def drain(stack: Stack, timeout_s: float) -> bool:
    """Until the simulator has posted every webhook, the sender has settled every request (in doubt
    ones included, by their deadline) and no consumer group has lag."""
    t0 = time.monotonic()
    bootstrap = stack.infra["PARLEY_KAFKA_BOOTSTRAP"]
    quiet_since: float | None = None
    while time.monotonic() - t0 < timeout_s:
        with contextlib.suppress(Exception):
            pending = (await stack.sim("POST", "/_sim/drain", params={"timeout_s": 5}))["pending"]
            lag = await consumer_lag(bootstrap, stack.namespace, GROUPS)
            unsettled = await unsettled_requests(stack.database_url)
            if pending == 0 and unsettled == 0 and all(v == 0 for v in lag.values()):
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 5:
                    return True
            else:
                quiet_since = None
        await asyncio.sleep(1.0)
    return False


def kafka_tools() -> Path | str:
    """Kafka's tools jars (not part of the broker's runtime), resolved once from Maven Central into
    .parley/kafka/tools with deploy/local/kafka/tools-pom.xml; a reason string if that fails."""
    out = REPO / ".parley" / "kafka" / "tools"
    marker = out / ".complete"
    if marker.exists():
        return out
    pom = REPO / "deploy" / "local" / "kafka" / "pom.xml"
    version = pom.read_text().split("<kafka.version>")[1].split("</kafka.version>")[0].strip()
    tmp = out.with_name(f"tools.tmp.{os.getpid()}")
    proc = subprocess.run(["mvn", "-q", "-B", "-f", str(pom.with_name("tools-pom.xml")), f"-Dkafka.version={version}",
                           "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
                           "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not any(tmp.glob("kafka-tools-*.jar")):
        return f"could not resolve Kafka's tools with Maven: {(proc.stdout + proc.stderr)[-300:]}"
    marker_tmp = tmp / ".complete"
    marker_tmp.write_text(version + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def kafka_alone(bootstrap: str, records: int = 200_000, size: int = 600) -> dict[str, Any]:
    """What this machine's broker does on its own: Kafka's ProducerPerformance tool, same settings."""
    libs = REPO / ".parley" / "kafka" / "libs"
    if not libs.is_dir():
        return {"skipped": "the broker's jars are not under .parley/kafka/libs"}
    tools = kafka_tools()
    if isinstance(tools, str):
        return {"skipped": tools}
    classpath = f"{tools}/*:{libs}/*"
    topic = f"soak-producer-perf-{random.randrange(1 << 30)}"
    topics = ["java", "-cp", classpath, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bootstrap]
    # The broker creates no topic on its own: one with the pipeline's partition count.
    subprocess.run([*topics, "--create", "--topic", topic, "--partitions", "12", "--replication-factor", "1"],
                   capture_output=True, timeout=120)
    cmd = ["java", "-cp", classpath, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
           "--num-records", str(records), "--record-size", str(size), "--throughput", "-1",
           "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", "compression.type=lz4",
           "enable.idempotence=true", "linger.ms=5"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    last = [line for line in out.stdout.splitlines() if "records sent" in line][-1:] or [out.stderr[-300:]]
    result: dict[str, Any] = {"command": "ProducerPerformance " + " ".join(cmd[5:]), "summary": last[0]}
    with contextlib.suppress(Exception):
        result["records_per_s"] = float(last[0].split("(")[0].split(",")[1].split()[0])
    subprocess.run([*topics, "--delete", "--topic", topic], capture_output=True, timeout=120)
    return result


async def run_soak(*, duration_s: float, rate: float, faults: str, keep: bool = False,
                   drain_timeout_s: float = 300, log: Callable[[str], None] = print,
                   private: PrivateInfra | None = None) -> dict[str, Any]:
    """One run; on ``private`` infrastructure (then restarted by the "all" schedule) or else on the
    broker and database of the environment, which are never restarted."""
    stack = Stack(private.env() if private else infra_env(), private=private)
    log(f"soak {stack.run_id}: {duration_s:.0f} s at {rate:.0f} conversations/s, faults={faults} "
        f"(logs in {stack.dir.relative_to(REPO)})")
    stop = asyncio.Event()
    try:
        await stack.start()
        plan = schedule(faults, duration_s, restart_infra=private is not None)
        load = Load(stack, rate)
        load_task = asyncio.create_task(load.run(stop))
        t0 = time.monotonic()
        cpu_start = _cpu_seconds(stack)

        loads: list[float] = []

        async def sample_memory() -> None:
            while not stop.is_set():
                loads.append(os.getloadavg()[0])
                for p in stack.procs.values():
                    p.sample_rss()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)

        mem_task = asyncio.create_task(sample_memory())
        for fault in plan:
            await asyncio.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
            fault.at_s = time.monotonic() - t0
            log(f"  t={fault.at_s:5.0f}s fault: {fault.name}")
            try:
                fault.detail = await fault.apply(stack)
            except Exception as exc:  # a fault that could not be applied is reported, not hidden
                fault.note = f"could not apply: {type(exc).__name__}: {exc}"
            fault.recovered_after_s = await wait_recovered(stack, rate, timeout_s=180, trace=fault.lag_trace)
        await asyncio.sleep(max(0.0, t0 + duration_s - time.monotonic()))
        stop.set()
        await load_task
        await mem_task
        load_s = load.stopped - load.started
        log(f"  load stopped after {load_s:.0f} s ({len(load.posted)} conversations); draining")
        drained = await drain(stack, drain_timeout_s)
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds(stack, since=cpu_start)
        for p in stack.procs.values():
            p.sample_rss()
        sim_messages = (await stack.sim("GET", "/_sim/messages", params={"limit": 10_000_000, "compact": True}))["data"]
        sim_stats = await stack.sim("GET", "/_sim/stats")
        counts = await count(stack.infra["PARLEY_KAFKA_BOOTSTRAP"], stack.namespace, stack.database_url,
                             load.posted, sim_messages)
        crashed = [n for n, p in stack.procs.items() if not p.alive()]
        result = {
            "run_id": stack.run_id, "infra": "private" if private else "shared",
            "duration_s": duration_s, "target_rate_per_s": rate, "faults_kind": faults,
            "drained": drained, "elapsed_s": round(elapsed, 1),
            "throughput_per_s": round(counts.inbound_routed / elapsed, 1) if elapsed else 0.0,
            "offered_per_s": round(len(load.posted) / load_s, 1) if load_s else 0.0,
            "load_ticks_late": load.ticks_late,
            "templates_requested": load.templates_requested,
            "templates_refused_at_api": dict(load.templates_refused_at_api),
            "faults_injected": sum(1 for f in plan if not f.note),
            "faults": [{"name": f.name, "at_s": round(f.at_s, 1), "detail": f.detail, "note": f.note,
                        "lag_recovered_after_s": None if f.recovered_after_s is None
                        else round(f.recovered_after_s, 1), "lag_trace": f.lag_trace} for f in plan],
            **counts.as_dict(),
            "max_rss_mb": {n: round(p.peak_rss_mb, 1) for n, p in stack.procs.items()},
            "cpu_s": cpu,
            "load_average_1m": {"mean": round(sum(loads) / len(loads), 2) if loads else None,
                                "max": round(max(loads), 2) if loads else None},
            "cpu_ms_per_conversation": round(1000 * sum(cpu.values()) / max(1, counts.inbound_routed), 2),
            "simulator": {k: v for k, v in sim_stats.items() if k.startswith(("webhook", "send", "status_"))},
            "processes_not_running_at_end": crashed,
        }
        return result
    finally:
        with contextlib.suppress(Exception):
            stop.set()
        await stack.stop(keep=keep)


def _cpu_seconds(stack: Stack, since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds (user+system) per process role since ``since``, read from /proc (a process killed
    during the run takes its CPU with it: compare CPU per conversation on a run without faults)."""
    tick = float(os.sysconf("SC_CLK_TCK"))
    out: dict[str, float] = {}
    for name, p in stack.procs.items():
        role = name.split("-")[0]
        with contextlib.suppress(OSError, AssertionError):
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    if since is not None:
        return {k: round(v - since.get(k, 0.0), 2) for k, v in out.items()}
    return out


def report(result: dict[str, Any]) -> str:
    lines = ["", "Faults (Jepsen-style: what was done, and how long consumer lag took to come back)",
             f"  {'fault':<44} {'at':>6} {'lag back after':>15}  detail"]
    for f in result["faults"]:
        back = "not within 180 s" if f["lag_recovered_after_s"] is None else f"{f['lag_recovered_after_s']} s"
        lines.append(f"  {f['name']:<44} {f['at_s']:>5}s {back:>15}  {f['note'] or f['detail']}")
    lines += [
        "", "Counted end to end",
        f"  conversations posted {result['inbound_posted']}, routed {result['inbound_routed']}, "
        f"lost inbound {result['lost_inbound']}",
        f"  statuses posted {result['statuses_posted']}, lost {result['lost_statuses']}",
        f"  send requests {result['send_requests']}: {result['outcomes']}; without a final state "
        f"{result['without_final_state']}, with two {result['conflicting_final_states']}; in doubt at the "
        f"deadline then proved sent by a status {result.get('resolved_after_doubt', 0)}",
        f"  simulator accepted {result['simulator_accepted']}; duplicated sends {result['duplicated_sends']}",
        f"  delivered messages Meta charged {result['delivered_billable_by_meta']}, ledger rows "
        f"{result['ledger_rows']}, misbilled {result['misbilled']}, unpriced {result['unpriced']}",
        f"  LOST {result['lost']}  DUPLICATED {result['duplicated_sends']}  MISBILLED {result['misbilled']}"
        + ("" if result["drained"] else "  (NOT DRAINED: the simulator still had webhooks to post or the sender "
           "requests to settle; lost statuses and final states are not final counts)"),
        "", f"Throughput {result['throughput_per_s']}/s (offered {result['offered_per_s']}/s); webhook to "
        f"Cloud API p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
        f"CPU {result['cpu_ms_per_conversation']} ms per conversation ({result['cpu_s']}); "
        f"load average {result.get('load_average_1m')}",
        "Peak RSS (MB): " + ", ".join(f"{k}={v}" for k, v in result["max_rss_mb"].items()),
    ]
    if result.get("kafka_alone"):
        lines.append(f"Kafka alone (ProducerPerformance): {result['kafka_alone'].get('summary')}")
    return "\n".join(lines)


def write(result: dict[str, Any], name: str = "soak") -> Path:
    out = REPO / "bench-results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    return out
