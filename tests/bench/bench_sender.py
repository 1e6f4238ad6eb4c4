"""Benchmark of the sender (``make bench-sender``).

1. Accepted sends per second of ONE sender process against the Cloud API simulator (run in its
   own process), over real Kafka and PostgreSQL: a backlog of template requests to distinct
   customers on four numbers of 1,000 msg/s each.
2. The governor's accuracy with a backlog on one number limited to 80/s and one to 1,000/s: the
   highest count of grants in any sliding 1-second window (must not exceed the limit) and the
   utilisation (grants / (limit x seconds)).

Writes bench-results/sender.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import orjson
import yaml
from aiokafka import AIOKafkaProducer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

N_SENDS = int(os.environ.get("BENCH_SENDER_N", "12000"))
NUMBERS = {f"88{i:02d}": 1000 for i in range(4)}
GOVERNOR_SECONDS = float(os.environ.get("BENCH_SENDER_GOVERNOR_S", "6"))


def infra_env() -> dict[str, str]:
    if os.environ.get("PARLEY_KAFKA_BOOTSTRAP") and os.environ.get("PARLEY_DATABASE_URL"):
        return {k: os.environ[k] for k in ("PARLEY_KAFKA_BOOTSTRAP", "PARLEY_DATABASE_URL")}
    out = subprocess.run(
        ["bash", str(REPO / "deploy/local/infra.sh"), "env"], capture_output=True, text=True, check=True
    ).stdout
    values = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            values[k] = v.strip("'\"")
    return values


def max_in_any_second(times: list[float]) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


async def governor_accuracy(limit: int, seconds: float) -> tuple[int, float]:
    """A backlog of concurrent senders on one number, through the async pacer, on the real clock."""
    from parley_sender.domain.governor import ThroughputLimit
    from parley_sender.pacing import NumberPacer

    pacer = NumberPacer(ThroughputLimit(limit=limit))
    grants: list[float] = []
    start = time.monotonic()
    stop_at = start + seconds

    async def worker() -> None:
        while time.monotonic() < stop_at:
            await pacer.acquire(0)
            now = time.monotonic()
            if now < stop_at:
                grants.append(now)

    await asyncio.gather(*(worker() for _ in range(min(limit, 200))))
    await pacer.close()
    grants.sort()
    return max_in_any_second(grants), len(grants) / (limit * seconds)


async def throughput(kafka: str, server_db: str) -> dict[str, float]:
    ns = "bench" + uuid.uuid4().hex[:8]
    os.environ["PARLEY_TOPIC_NAMESPACE"] = f"{ns}."
    from parley_common.topics import MESSAGES_OUT
    from parley_common.topics_cli import ensure_topics

    from tests.sender.harness import (
        TEMPLATES,
        free_port,
        seed_tenants,
        sender_settings,
        start_sender,
        sync_catalogue,
    )

    await ensure_topics(kafka, partitions=12)
    admin = await asyncpg.connect(server_db)
    await admin.execute(f'CREATE DATABASE "{ns}"')
    await admin.close()
    db = server_db.rsplit("/", 1)[0] + "/" + ns
    port = free_port()
    sim_url = f"http://127.0.0.1:{port}"
    config = {
        "apps": [{"app_id": "app-sender", "app_secret": "s3cret"}],
        "wabas": [
            {
                "id": "waba-s1",
                "app_id": "app-sender",
                "token": "sim-token-sender-tests",
                "templates": TEMPLATES,
            }
        ],
        "phone_numbers": [
            {"id": pn, "display_phone_number": f"1555{pn}", "waba_id": "waba-s1", "throughput": mps}
            for pn, mps in NUMBERS.items()
        ],
    }
    cfg = Path(tempfile.mkdtemp()) / "sim.yaml"
    cfg.write_text(yaml.safe_dump(config))
    sim = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, uvicorn; from parley_simulator.app import create_app;"
            "from parley_simulator.config import SimulatorConfig;"
            f"uvicorn.run(create_app(SimulatorConfig.from_yaml({str(cfg)!r})), host='127.0.0.1',"
            f" port={port}, log_level='warning', loop='uvloop', http='httptools')",
        ]
    )
    sender = None
    try:
        async with httpx.AsyncClient(base_url=sim_url) as c:
            for _ in range(100):
                try:
                    if (await c.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        await seed_tenants(db, NUMBERS, tenant="bench", other_tenant="bench-other", messaging_limit=None)
        await sync_catalogue(db, sim_url, "bench")
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=10)
        await producer.start()
        now = datetime.now(UTC).isoformat()
        pns = list(NUMBERS)
        futures = []
        for i in range(N_SENDS):
            pn = pns[i % len(pns)]
            mid = f"b{i}"
            rec = {
                "event_id": mid,
                "message_id": mid,
                "phone_number_id": pn,
                "occurred_at": now,
                "to": f"44207{i:07d}",
                "type": "template",
                "priority": "utility",
                "template": {
                    "name": "order_update",
                    "language": "en_US",
                    "components": [
                        {
                            "type": "body",
                            "parameters": [
                                {"type": "text", "text": "Ann"},
                                {"type": "text", "text": f"A-{i}"},
                            ],
                        }
                    ],
                },
            }
            futures.append(await producer.send(MESSAGES_OUT.name, orjson.dumps(rec), key=pn.encode()))
        await asyncio.gather(*futures)
        await producer.stop()
        settings = sender_settings(
            kafka,
            db,
            sim_url,
            log_level="ERROR",
            max_in_flight_per_number=int(os.environ.get("BENCH_SENDER_IN_FLIGHT", "4")),
        )
        sender = await start_sender(settings)
        first = last = None
        async with httpx.AsyncClient(base_url=sim_url) as c:
            deadline = time.monotonic() + 180
            accepted = 0
            while time.monotonic() < deadline:
                stats = (await c.get("/_sim/stats")).json()
                accepted = stats["requests"]["accepted"]
                if accepted and first is None:
                    first = (time.monotonic(), accepted)
                if accepted >= N_SENDS:
                    last = (time.monotonic(), accepted)
                    break
                await asyncio.sleep(0.05)
            errors = stats["errors_by_code"]
        if first is None or last is None:
            raise RuntimeError(f"only {accepted} of {N_SENDS} accepted")
        rate = (last[1] - first[1]) / (last[0] - first[0])
        return {
            "sends_per_s": round(rate, 1),
            "sends_total": N_SENDS,
            "throttled_130429": int(errors.get("130429", 0)),
            "duplicates": stats.get("duplicate_biz_opaque_callback_data", 0),
        }
    finally:
        if sender is not None:
            await sender.shutdown()
        sim.terminate()
        sim.wait(10)
        admin = await asyncpg.connect(server_db)
        await admin.execute(f'DROP DATABASE IF EXISTS "{ns}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    env = infra_env()
    results: dict[str, float] = {}
    for limit in (80, 1000):
        peak, util = await governor_accuracy(limit, GOVERNOR_SECONDS)
        results[f"max_rate_limit_{limit}"] = peak
        results[f"utilisation_limit_{limit}"] = round(util, 4)
        print(f"governor limit {limit}/s: max in any 1 s window {peak}, utilisation {util:.1%}")
    results.update(await throughput(env["PARLEY_KAFKA_BOOTSTRAP"], env["PARLEY_DATABASE_URL"]))
    print(f"accepted sends per second (one sender process): {results['sends_per_s']}")
    out = REPO / "bench-results" / "sender.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
