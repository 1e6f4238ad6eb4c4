"""Benchmark: how long a revoked API key keeps working, across two ingest replicas.

    uv run python tests/bench/bench_key_revocation.py [--rounds N]

Two ingest apps run in this process (each its own runtime: pool, tenant directory, producer) on
a fresh database and the real broker. Each round adds a key, waits until both replicas accept it,
revokes it with the same UPDATE as ``parley-tenants key revoke``, then polls both replicas every
10 ms with ``POST /v1/messages`` (an empty body: 422 while the key works, 401 once it is refused)
and records the time until *both* refuse it. Writes bench-results/key_revocation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

os.environ.setdefault("PARLEY_DEMO", "true")  # a local measurement: the demo redaction key will do

REPO = Path(__file__).resolve().parents[2]
SERVER_URL = os.environ.get("PARLEY_DATABASE_URL", "postgresql://parley:parley@127.0.0.1:55432/parley")
KAFKA = os.environ.get("PARLEY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


async def _status(client: httpx.AsyncClient, key: str) -> int:
    r = await client.post("/v1/messages", headers={"Authorization": f"Bearer {key}"}, json={})
    return r.status_code


async def main(rounds: int) -> dict[str, object]:
    from contextlib import AsyncExitStack

    from parley_common.db import connect, migrate
    from parley_common.runtime import TENANCY_MIGRATIONS
    from parley_common.tenancy.cli import RegistryFile, add_api_key, import_registry
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    name = f"bench_keys_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(SERVER_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    p = urlsplit(SERVER_URL)
    url = urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))
    os.environ["PARLEY_BENCH_APP_SECRET"] = "bench-secret"
    conn = await connect(url)
    latencies: list[float] = []
    try:
        await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
        await import_registry(conn, RegistryFile.model_validate({
            "apps": [{"app_id": "bench-app", "app_secret_refs": ["env:PARLEY_BENCH_APP_SECRET"]}],
            "tenants": [{"tenant_id": "bench", "name": "Bench", "app_id": "bench-app", "business_country": "IN",
                         "time_zone": "Asia/Kolkata", "wabas": ["w1"], "settings": {"ingest_rate_limit": "1000/second"},
                         "phone_numbers": [{"phone_number_id": "1", "display_phone_number": "1", "waba_id": "w1"}]}]}))
        async with AsyncExitStack() as stack:
            clients = []
            for _ in range(2):
                app = create_app(IngestSettings(kafka_bootstrap=KAFKA, database_url=url, log_level="WARNING"))
                await stack.enter_async_context(app.router.lifespan_context(app))
                clients.append(await stack.enter_async_context(
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")))
            for _ in range(rounds):
                key_id, key = await add_api_key(conn, "bench", "bench")
                while {await _status(c, key) for c in clients} != {422}:
                    await asyncio.sleep(0.01)
                await conn.execute("UPDATE tenancy.api_keys SET revoked_at = now() WHERE key_id = $1", key_id)
                revoked = time.perf_counter()
                pending = set(range(len(clients)))
                while pending:
                    for i in list(pending):
                        if await _status(clients[i], key) == 401:
                            pending.discard(i)
                    if pending:
                        await asyncio.sleep(0.01)
                latencies.append(time.perf_counter() - revoked)
    finally:
        await conn.close()
        from cleanup import drop_database  # tests/bench/cleanup.py

        await drop_database(SERVER_URL, name)
    latencies.sort()
    return {
        "rounds": rounds, "replicas": 2, "check_interval_s": IngestSettings().tenants_check_interval_s,
        "revoked_to_refused_everywhere_s": {
            "median": round(statistics.median(latencies), 3),
            "p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
            "max": round(latencies[-1], 3)},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    out = asyncio.run(main(ap.parse_args().rounds))
    print(json.dumps(out, indent=2))
    (REPO / "bench-results").mkdir(exist_ok=True)
    (REPO / "bench-results" / "key_revocation.json").write_text(json.dumps(out, indent=2) + "\n")
