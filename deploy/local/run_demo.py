"""`make run`: the whole pipeline on local infrastructure, driven by demo traffic.

Starts the four services and the Cloud API simulator as processes (logs in .parley/logs/), loads
the demo tenants, drives inbound customer traffic (several tenants, languages, ad referrals) and
template campaigns through the business API, waits until the pipeline is quiet, prints what
happened at every stage, and stops everything on Ctrl-C (or at the end, unless --keep-running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).parent))
import demo_commerce
from topic_reading import end_offsets, read_range

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".parley"
LOGS = STATE / "logs"
DEMO = REPO / "deploy" / "demo"
BILLING_DATA = REPO / "services/billing/parley_billing/data"
PORTS = {"simulator": 8090, "ingest": 8081, "router": 8082, "sender": 8083, "billing": 8084}
PROMETHEUS_PORT = 19090  # not 9090: a system Prometheus from the same package may listen there
SECRET_NAMES = ("PARLEY_DEMO_APP_SECRET", "PARLEY_DEMO_ACCESS_TOKEN", "PARLEY_DEMO_VERIFY_TOKEN",
                "PARLEY_DEMO_APP2_SECRET", "PARLEY_DEMO_APP2_OLD_SECRET", "PARLEY_DEMO_APP2_ACCESS_TOKEN",
                "PARLEY_REDACTION_KEY", "PARLEY_DEMO_CONVERSIONS_SECRET")


def say(msg: str) -> None:
    print(f"[parley] {msg}", flush=True)


def demo_secrets() -> dict[str, str]:
    """Random secrets for the demo apps, generated once into .parley/secrets.env (git-ignored)."""
    path = STATE / "secrets.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition("=")
            if k:
                values[k] = v
    changed = False
    for name in SECRET_NAMES:
        if name not in values:
            values[name] = secrets.token_hex(24)
            changed = True
    if changed:
        STATE.mkdir(exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
    return values


def infra_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "env"], check=True,
                         capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = shlex.split(v)[0] if v else ""
    return env


def run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"[parley] `{' '.join(cmd)}` failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def start_prometheus() -> Any:
    """`make run-observed`: a Prometheus (OS packages) scraping the four services, with the alerts."""
    from observed import Prometheus, ensure_installed  # deploy/local/observed.py

    ensure_installed()
    prometheus = Prometheus(PROMETHEUS_PORT, STATE / "prometheus",
                            {f"parley-{svc}": f"127.0.0.1:{PORTS[svc]}" for svc in ("ingest", "router", "sender",
                                                                                     "billing")})
    prometheus.start()
    prometheus.wait_ready()
    say(f"Prometheus on {prometheus.url} scrapes every service every 5 s and evaluates the alerts of "
        "deploy/observability/alerts; import deploy/observability/dashboards/*.json into a Grafana pointed at it")
    return prometheus


@dataclass
class Stack:
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    on_stop: list[Any] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = (LOGS / f"{name}.log").open("ab")
        env = {**self.env, **(extra_env or {})}
        self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    async def wait_ready(self, stop: asyncio.Event, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            for name, port in PORTS.items():
                path = "/readyz" if name != "simulator" else "/_sim/stats"
                while not stop.is_set():
                    proc = self.procs[name]
                    if proc.poll() is not None:
                        tail = (LOGS / f"{name}.log").read_text(errors="replace")[-3000:]
                        raise SystemExit(f"[parley] {name} exited with {proc.returncode}:\n{tail}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"[parley] {name} not ready after {timeout:.0f}s; see {LOGS / name}.log")
                    await asyncio.sleep(0.5)

    def stop(self) -> None:
        for stop in self.on_stop:
            stop()
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


async def ledger_rows(wamids: set[str]) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(os.environ.get("PARLEY_DATABASE_URL") or infra_env()["PARLEY_DATABASE_URL"])
    try:
        return list(await conn.fetch(
            "SELECT wamid, tenant_id, category, type, billable, amount, currency FROM billing.ledger "
            "WHERE wamid = ANY($1::text[])", list(wamids)))
    finally:
        await conn.close()


async def print_service_charges(statuses: list[dict[str, Any]], sends: list[dict[str, Any]]) -> None:
    """Free-form replies (service messages) and utility templates sent inside the customer's window,
    per tenant, as billing's ledger priced them by the rules of today's date, and whether each ledger
    row agrees with the pricing object the simulator (standing in for Meta) reported."""
    from parley_billing.domain.rules import rules_at

    rules = rules_at(datetime.now(UTC))
    meta: dict[str, dict[str, Any]] = {}
    for s in statuses:  # Meta's pricing object: the delivered/read one wins over "sent"
        if s.get("pricing") and (s["status"] in ("delivered", "read") or s["wamid"] not in meta):
            meta[s["wamid"]] = s["pricing"]
    kind: dict[str, str] = {}
    for s in sends:
        if s["outcome"] == "accepted" and s.get("wamid"):
            if not s.get("is_template"):
                kind[s["wamid"]] = "service replies"
            elif s.get("category") == "utility" and s.get("free_window") == "customer_service":
                kind[s["wamid"]] = "in-window utility"
    rows = await ledger_rows(set(kind))
    print(f"\nService replies and in-window utility templates (rules in force today: {rules.name}; "
          f"service {'charged' if rules.service_charged else 'free'}, in-window utility "
          f"{'charged' if rules.utility_in_window_charged else 'free'}):")
    per: dict[tuple[str, str], list[Any]] = {}
    agree = disagree = 0
    for r in rows:
        per.setdefault((r["tenant_id"] or "?", kind[r["wamid"]]), []).append(r)
        m = meta.get(r["wamid"])
        if m is not None:
            same = bool(m.get("billable")) == r["billable"] and \
                m.get("category") in (r["category"], "referral_conversion")
            agree += same
            disagree += not same
    for (tenant, what), items in sorted(per.items()):
        charged = [r for r in items if r["billable"]]
        amount = sum((r["amount"] or Decimal(0) for r in charged), Decimal(0))
        unpriced = sum(1 for r in charged if r["amount"] is None)
        print(f"  {tenant:<18} {what:<18} delivered={len(items):<5} charged={len(charged):<5} "
              f"amount={amount:.4f} {items[0]['currency']}" + (f"  unpriced={unpriced}" if unpriced else ""))
    print(f"  ledger vs the simulator's pricing objects: {agree} agree, {disagree} differ"
          + ("" if not disagree else "  (MISMATCH)"))


async def stage_spans(bootstrap: str, before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]
                      ) -> dict[str, tuple[float, float]]:
    """Per topic, the Kafka timestamps (s) of the first and the last record it received this run:
    the time that stage was busy. Reads two records per partition, not the whole range."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    spans: dict[str, tuple[float, float]] = {}
    try:
        for topic, end in after.items():
            start = before.get(topic, {})
            tps = [TopicPartition(topic, p) for p in end if end[p] > start.get(p, 0)]
            if not tps:
                continue
            consumer.assign(tps)
            stamps: list[int] = []
            for tp in tps:
                for offset in (start.get(tp.partition, 0), end[tp.partition] - 1):
                    consumer.seek(tp, offset)
                    got = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
                    stamps += [r.timestamp for r in got.get(tp, [])]
            if stamps:
                spans[topic] = (min(stamps) / 1000, max(stamps) / 1000)
        return spans
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


def print_stage_speeds(counts: dict[str, int], spans: dict[str, tuple[float, float]], took_s: float) -> None:
    """How long the demo took and how fast each stage went while it was busy."""
    print(f"\nThe demo took {took_s:.1f} s (from starting the services until the pipeline was quiet).")
    if spans:
        first, last = min(s[0] for s in spans.values()), max(s[1] for s in spans.values())
        print(f"Records flowed for {last - first:.1f} s, from the first webhook to the last record of any stage.")
    print("Records per stage (this run; Kafka records, duplicates included) and how fast each went\n"
          "(its records / the time between its first and last record):")
    for topic, n in counts.items():
        if topic not in spans or n == 0:
            print(f"  {topic:<26} {n:>8} records")
            continue
        busy = spans[topic][1] - spans[topic][0]
        rate = f"{n / busy:>8,.0f} records/s" if busy > 0 else "       - (one instant)"
        print(f"  {topic:<26} {n:>8} records in {busy:>6.1f} s = {rate}")


def delta(before: dict[int, int], after: dict[int, int]) -> int:
    return sum(after.get(p, 0) - before.get(p, 0) for p in after)


async def wait_quiet(bootstrap: str, topics: list[str], quiet_s: float, timeout_s: float,
                     stop: asyncio.Event) -> dict[str, dict[int, int]]:
    """Wait until no topic grew for ``quiet_s`` seconds (the pipeline has drained), or Ctrl-C."""
    last = await end_offsets(bootstrap, topics)
    stable_since = time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        await asyncio.sleep(1.0)
        now = await end_offsets(bootstrap, topics)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            break
    return last


def api_keys(env: dict[str, str]) -> dict[str, str]:
    """One API key per demo tenant, created once and kept in .parley/demo-keys.json."""
    path = STATE / "demo-keys.json"
    keys: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    listed = json.loads(run(["parley-tenants", "list", "--json"], env))
    for tenant in (t["tenant_id"] for t in listed):
        if tenant not in keys:
            keys[tenant] = run(["parley-tenants", "key", "add", tenant, "--label", "make-run demo"], env).split()[1]
    path.write_text(json.dumps(keys, indent=1))
    path.chmod(0o600)
    return keys


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inbound", type=int, default=3000, help="inbound customer messages to drive")
    parser.add_argument("--templates", type=int, default=300, help="template messages per tenant")
    parser.add_argument("--rate", type=float, default=300.0, help="inbound messages per second")
    parser.add_argument("--keep-running", action="store_true", help="keep the stack running after the demo")
    parser.add_argument("--ticket-buyers", type=int, default=24,
                        help="customers who buy a ticket in the chat (in-chat commerce, issue 11)")
    parser.add_argument("--username-customers", type=int, default=10,
                        help="customers who write by username, then share their number (ADR 0117)")
    parser.add_argument("--observed", action="store_true",
                        help=f"also run a Prometheus on 127.0.0.1:{PROMETHEUS_PORT} scraping every service")
    args = parser.parse_args()

    env = {**os.environ, **infra_env(), **demo_secrets()}
    env.pop("PARLEY_TOPIC_NAMESPACE", None)
    bootstrap = env["PARLEY_KAFKA_BOOTSTRAP"]
    env["PARLEY_DEMO_FLOWS_KEY"] = demo_commerce.flows_private_key_pem(STATE)  # tenants.yaml: settings.flows
    say("preparing the database and topics")
    run(["parley-tenants", "migrate"], env)
    run(["parley-tenants", "import", str(DEMO / "tenants.yaml")], env)
    run(["parley-topics", "create"], env)
    keys = api_keys(env)

    from parley_common.topics import (
        ACCOUNT_EVENTS,
        MESSAGES_IN,
        MESSAGES_OUT,
        MESSAGES_ROUTED,
        SENDS,
        STATUSES,
        WEBHOOKS_RAW,
    )
    topics = [t.name for t in (WEBHOOKS_RAW, MESSAGES_IN, MESSAGES_ROUTED, MESSAGES_OUT, SENDS, STATUSES,
                                ACCOUNT_EVENTS)]
    before = await end_offsets(bootstrap, topics)
    started_at = datetime.now(UTC)

    stack = Stack(env)
    ingest_url = f"http://127.0.0.1:{PORTS['ingest']}"
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        say("starting the Cloud API simulator and the four services (logs in .parley/logs/)")
        stack.start("simulator", ["parley-simulator", "run", "--port", str(PORTS["simulator"]),
                                  "--config", str(DEMO / "simulator.yaml"),
                                  "--webhook-url", ingest_url + "/webhooks/meta/{app_id}"],
                    # the simulator stands in for Meta's Conversions API (ADR 0113): it checks the
                    # signature billing puts on each click-to-WhatsApp purchase
                    {"PARLEY_SIM_CONVERSIONS_SECRET": env["PARLEY_DEMO_CONVERSIONS_SECRET"]})
        for svc in ("ingest", "router", "sender", "billing"):
            stack.start(svc, [f"parley-{svc}", "run"], {
                f"PARLEY_{svc.upper()}_HTTP_PORT": str(PORTS[svc]),
                "PARLEY_SENDER_GRAPH_API_BASE": f"http://127.0.0.1:{PORTS['simulator']}",
                "OTEL_SERVICE_NAME": f"parley-{svc}",
            })
        await stack.wait_ready(stop)
        if stop.is_set():
            return 130
        if args.observed:
            prometheus = start_prometheus()
            stack.on_stop.append(prometheus.stop)
        run(["parley-billing", "ratecard", "import", str(BILLING_DATA / "example_rate_card.csv")], env)
        run(["parley-sender", "templates", "sync"], {**env, "PARLEY_SENDER_GRAPH_API_BASE":
                                                     f"http://127.0.0.1:{PORTS['simulator']}"})
        say(f"driving {args.inbound} inbound messages and {args.templates} templates per tenant")
        from demo_contacts import username_customers  # deploy/local/demo_contacts.py
        from demo_traffic import drive  # deploy/local/demo_traffic.py

        driven = await drive(env=env, keys=keys, ingest_url=ingest_url, sim_url=f"http://127.0.0.1:{PORTS['simulator']}",
                             inbound=args.inbound, templates=args.templates, rate=args.rate, stop=stop)
        usernames = await username_customers(ingest_url=ingest_url, sim_url=f"http://127.0.0.1:{PORTS['simulator']}",
                                             keys=keys, count=args.username_customers) \
            if args.username_customers and not stop.is_set() else {}
        commerce = await sell_tickets(env, keys, args.ticket_buyers, stop)
        say("waiting for the pipeline to drain")
        after = await wait_quiet(bootstrap, topics, quiet_s=8, timeout_s=240, stop=stop)
        if stop.is_set():
            say("interrupted: no summary")
            return 130
        await print_summary(bootstrap, before, after, keys, started_at, driven, usernames, env)
        await print_commerce_summary(env, keys, commerce)
        if args.keep_running and not stop.is_set():
            say("everything keeps running; Ctrl-C stops it")
            await stop.wait()
    finally:
        say("stopping the services")
        stack.stop()
    return 0


def demo_shops(env: dict[str, str], keys: dict[str, str]) -> list[demo_commerce.Shop]:
    """The demo tenants that sell tickets in the chat (their Flows key: settings.flows in tenants.yaml)."""
    token, token2 = env["PARLEY_DEMO_ACCESS_TOKEN"], env["PARLEY_DEMO_APP2_ACCESS_TOKEN"]
    return [
        demo_commerce.Shop("dhaka-tickets", "100000000000001", keys["dhaka-tickets"], token, "BDT",
                           ("bn", "bn-latn", "en"),
                           (("DHK-CTG", "Dhaka → Chattogram 08:00", 120000),
                            ("DHK-SYL", "Dhaka → Sylhet 10:30", 90000))),
        demo_commerce.Shop("istanbul-events", "100000000000002", keys["istanbul-events"], token, "TRY",
                           ("tr", "en"), (("IST-ANK", "İstanbul → Ankara 09:00", 75000),)),
        demo_commerce.Shop("jakarta-shop", "100000000000004", keys["jakarta-shop"], token2, "IDR",
                           ("id", "en"), (("JKT-BDG", "Jakarta → Bandung 07:30", 15000000),)),
    ]


async def sell_tickets(env: dict[str, str], keys: dict[str, str], buyers: int, stop: asyncio.Event) -> dict[str, Any]:
    """In-chat commerce: product list, cart, seat Flow, payment, ticket, some refunds (demo_commerce.py)."""
    import random

    from demo_traffic import fictional_number

    if buyers <= 0:
        return {}
    shops = demo_shops(env, keys)
    run = datetime.now(UTC).strftime("%H%M%S")
    rng = random.Random(run)
    await demo_commerce.add_trips(env["PARLEY_DATABASE_URL"], shops, run)
    customers = {s.tenant_id: [fictional_number(rng) for _ in range(buyers // len(shops))] for s in shops}
    say(f"selling tickets in the chat to {sum(map(len, customers.values()))} customers")
    sim_url = f"http://127.0.0.1:{PORTS['simulator']}"
    async with httpx.AsyncClient(timeout=30) as client:
        for shop in shops:
            await demo_commerce.upload_flows_public_key(client, sim_url, shop, env["PARLEY_DEMO_FLOWS_KEY"])
        return await demo_commerce.sell_tickets(
            client=client, shops=shops, customers=customers, ingest_url=f"http://127.0.0.1:{PORTS['ingest']}",
            billing_url=f"http://127.0.0.1:{PORTS['billing']}", sim_url=sim_url, run=run, rng=rng, stop=stop)


async def print_commerce_summary(env: dict[str, str], keys: dict[str, str], result: dict[str, Any]) -> None:
    if not result:
        return
    async with httpx.AsyncClient(timeout=10) as client:
        lines = await demo_commerce.commerce_summary(
            client, shops=demo_shops(env, keys), ingest_url=f"http://127.0.0.1:{PORTS['ingest']}",
            billing_url=f"http://127.0.0.1:{PORTS['billing']}", result=result,
            sim_url=f"http://127.0.0.1:{PORTS['simulator']}")
    print("\n".join(lines))
    print("=" * 72)


async def print_summary(bootstrap: str, before: dict[str, dict[int, int]], after: dict[str, dict[int, int]],
                        keys: dict[str, str], since: datetime, driven: dict[str, Any],
                        usernames: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
    from parley_common.topics import MESSAGES_ROUTED, SENDS, STATUSES

    took_s = (datetime.now(UTC) - since).total_seconds()  # before reading the topics back
    counts = {t: delta(before.get(t, {}), after[t]) for t in after}
    routed = await read_range(bootstrap, MESSAGES_ROUTED.name, before.get(MESSAGES_ROUTED.name, {}),
                              after[MESSAGES_ROUTED.name])
    # At-least-once on the wire: a record may be on a topic twice; count each event id once.
    sends = list({r["event_id"]: r for r in await read_range(
        bootstrap, SENDS.name, before.get(SENDS.name, {}), after[SENDS.name])}.values())
    statuses = list({r["event_id"]: r for r in await read_range(
        bootstrap, STATUSES.name, before.get(STATUSES.name, {}), after[STATUSES.name])}.values())
    print()
    print("=" * 72)
    print("Parley demo summary")
    print("=" * 72)
    print("Driven:", ", ".join(f"{k}={v}" for k, v in driven.items()))
    print_stage_speeds(counts, await stage_spans(bootstrap, before, after), took_s)
    intents = Counter(r["intent"] for r in routed)
    languages = Counter(r.get("language") or "?" for r in routed)
    print("\nIntents:   " + ", ".join(f"{k}={v}" for k, v in intents.most_common()))
    print("Languages: " + ", ".join(f"{k}={v}" for k, v in languages.most_common()))
    print("Destinations: " + ", ".join(f"{k}={v}" for k, v in Counter(
        r["destination"]["kind"] for r in routed).most_common()))
    outcome = Counter((s["outcome"], "template" if s.get("is_template") else "free-form") for s in sends)
    print(f"\nSend results (unique): {len(sends)}")
    print("Sends:     " + ", ".join(f"{o}/{k}={v}" for (o, k), v in sorted(outcome.items())))
    reasons = Counter(s.get("reason") or str(s.get("error_code")) for s in sends if s["outcome"] != "accepted")
    if reasons:
        print("Not sent:  " + ", ".join(f"{k}={v}" for k, v in reasons.most_common(6)))
    print("Statuses:  " + ", ".join(f"{k}={v}" for k, v in Counter(s["status"] for s in statuses).most_common()))
    delivered_templates = {s["wamid"] for s in statuses if s["status"] in ("delivered", "read")} & {
        s["wamid"] for s in sends if s.get("is_template") and s.get("wamid")}
    print(f"Delivered template messages: {len(delivered_templates)}")
    template_wamids = {s["wamid"] for s in sends if s.get("is_template") and s.get("wamid")}
    print("\nBilled this run (billing's ledger, for this run's template messages):")
    rows = await ledger_rows(template_wamids)
    per_tenant: dict[str, list[Any]] = {}
    for r in rows:
        per_tenant.setdefault(r["tenant_id"] or "?", []).append(r)
    for tenant, items in sorted(per_tenant.items()):
        billable = [r for r in items if r["billable"]]
        amount = sum((r["amount"] or Decimal(0) for r in billable), Decimal(0))
        by_cat = Counter(f"{r['category']}/{r['type']}" for r in items)
        print(f"  {tenant:<18} ledger rows={len(items):<5} billable={len(billable):<5} amount={amount:.4f} "
              f"{items[0]['currency']}  ({', '.join(f'{k}={v}' for k, v in sorted(by_cat.items()))})")
    unpriced = sum(1 for r in rows if r["billable"] and r["amount"] is None)
    print(f"  ledger rows for this run's templates: {len(rows)} = delivered templates seen on Kafka: "
          f"{len(delivered_templates)}" + ("" if len(rows) == len(delivered_templates) else "  (MISMATCH)")
          + (f"; {unpriced} billable but without a rate in the card" if unpriced else ""))
    await print_service_charges(statuses, sends)
    from demo_contacts import contacts_summary  # deploy/local/demo_contacts.py

    print("\nCustomers known by username (one contact, whatever Meta calls them):")
    database_url = (env or {}).get("PARLEY_DATABASE_URL") or infra_env()["PARLEY_DATABASE_URL"]
    for line in await contacts_summary(database_url, usernames or {}, routed, sends):
        print(line)
    print("\nUsage API today (GET /v1/usage, includes earlier runs of the day):")
    today = datetime.now(UTC).date()
    async with httpx.AsyncClient(timeout=10) as client:
        for tenant, key in keys.items():
            r = await client.get(f"http://127.0.0.1:{PORTS['billing']}/v1/usage",
                                 params={"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()},
                                 headers={"Authorization": f"Bearer {key}"})
            if r.status_code != 200:
                print(f"  {tenant:<18} usage unavailable ({r.status_code}: {r.text[:120]})")
                continue
            groups = r.json()["groups"]
            total = sum((Decimal(g.get("amount", g["list_amount"])) for g in groups), Decimal(0))
            print(f"  {tenant:<18} messages={sum(g['messages'] for g in groups):<6} "
                  f"billable={sum(g['billable'] for g in groups):<6} to be invoiced={total:.4f}")
    print("=" * 72)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(asyncio.run(main()))
