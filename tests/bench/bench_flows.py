"""Benchmark of the WhatsApp Flows data endpoint (make bench-flows).

    uv run python tests/bench/bench_flows.py [--seconds 5] [--connections 32]

The ingest server runs as its own process (uvicorn, one worker, uvloop + httptools, as
``parley-ingest run``) against the local PostgreSQL and Kafka; this process plays Meta: every
request is signed with the app secret and encrypted as Meta does (a fresh AES-128 key under the
number's RSA-2048 public key, AES-GCM body). Each request is a ``data_exchange`` from the SEATS
screen, so the server verifies, decrypts (RSA-OAEP + AES-GCM), holds a seat in PostgreSQL (one
conditional UPDATE; a seat already held by another customer answers the seats again), and
encrypts the answer. Phases:

1. the maximum rate (closed loop): requests/s per ingest process, every answer 200;
2. latency p50/p99 at half that rate (open loop, fixed schedule: queueing counts).

Writes bench-results/flows.json (requests_per_s, p50_ms, p99_ms at half load, CPU per request).
The machine may be shared: ``requests_per_cpu_s`` (requests per CPU-second of the ingest process,
the rate one free core would allow) is reported beside the wall-clock rate, with the 1-minute
load average before and after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

os.environ.setdefault("PARLEY_DEMO", "true")  # a local measurement: the demo redaction key will do

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "benchflows."
APP_ID = "bench-flows-app"
SECRET = "bench-flows-secret"
TENANT, NUMBER, WABA = "bench-flows", "770000000091", "770000000191"
BENCH_DB = "parley_bench_flows"
KEY_FILE = Path(os.environ.get("TMPDIR", "/tmp")) / "parley-bench-flows-key.pem"
TRIPS, SEATS_PER_TRIP = 100, 40

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import Connection, fixed_rate, max_rate, ms, percentile  # noqa: E402


def _db_url() -> str:
    from parley_common.settings import CommonSettings

    return CommonSettings().database_url.rsplit("/", 1)[0] + "/" + BENCH_DB


def serve(port: int) -> None:
    import uvicorn
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    os.environ["PARLEY_TOPIC_NAMESPACE"] = NAMESPACE
    os.environ["BENCH_FLOWS_SECRET"] = SECRET
    app = create_app(IngestSettings(database_url=_db_url(), http_port=port, log_level="WARNING"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, loop="uvloop",
                http="httptools", lifespan="on")


async def prepare() -> Any:
    import asyncpg
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from parley_common.db import create_pool, migrate
    from parley_common.runtime import TENANCY_MIGRATIONS
    from parley_common.settings import CommonSettings
    from parley_common.tenancy.cli import RegistryFile, import_registry
    from parley_common.topics_cli import ensure_topics
    from parley_ingest.app import MIGRATIONS
    from parley_ingest.seats import SeatStore, Trip

    os.environ["PARLEY_TOPIC_NAMESPACE"] = NAMESPACE
    common = CommonSettings()
    await ensure_topics(common.kafka_bootstrap)
    admin = await asyncpg.connect(common.database_url)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", BENCH_DB):
            await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await admin.close()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    KEY_FILE.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    KEY_FILE.chmod(0o600)
    pool = await create_pool(_db_url(), min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
            await migrate(conn, "ingest", MIGRATIONS)
            await import_registry(conn, RegistryFile.model_validate({
                "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:BENCH_FLOWS_SECRET"]}],
                "tenants": [{"tenant_id": TENANT, "name": "Bench flows", "app_id": APP_ID, "business_country": "IN",
                             "time_zone": "Asia/Kolkata", "wabas": [WABA],
                             "phone_numbers": [{"phone_number_id": NUMBER, "display_phone_number": "918000000091",
                                                "waba_id": WABA}],
                             "settings": {"flows": {"private_key_refs": [f"file:{KEY_FILE}"], "hold_seconds": 600}}}],
            }))
            await conn.execute("DELETE FROM ingest.flow_trips WHERE tenant_id = $1", TENANT)
        store = SeatStore(pool)
        seats = [f"{row}{col}" for row in range(1, SEATS_PER_TRIP // 4 + 1) for col in "ABCD"]
        for t in range(TRIPS):
            await store.add_trip(TENANT, Trip(f"T{t:03d}", f"Trip {t}", datetime(2026, 12, 24, tzinfo=UTC),
                                              "INR", 45000), seats)
    finally:
        await pool.close()
    return key.public_key(), seats


def requests(public_key: Any, seats: list[str], count: int, seed: int) -> list[bytes]:
    """Signed, encrypted HTTP requests: customers picking random seats of random trips."""
    from parley_common.meta.signature import sign
    from parley_ingest.domain.flows import encrypt_request

    rng = random.Random(seed)
    out = []
    for n in range(count):
        payload = {"version": "3.0", "action": "data_exchange", "screen": "SEATS",
                   "flow_token": f"bench-{seed}-{n}",
                   "data": {"trip_id": f"T{rng.randrange(TRIPS):03d}", "seat_id": rng.choice(seats)}}
        body = orjson.dumps(encrypt_request(payload, public_key, os.urandom(16), os.urandom(16)))
        head = (f"POST /flows/{NUMBER} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
                f"X-Hub-Signature-256: {sign(body, SECRET.encode())}\r\nContent-Length: {len(body)}\r\n\r\n")
        out.append(head.encode() + body)
    return out


class Server:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen([sys.executable, __file__, "serve", "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"ingest server exited: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError("ingest server did not start")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def check_answer(port: int, request: bytes) -> int:
    c = await Connection.open(port)
    try:
        return await c.send(request)
    finally:
        c.writer.close()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    public_key, seats = await prepare()
    server = Server()
    try:
        warm = requests(public_key, seats, 200, seed=0)
        assert await check_answer(server.port, warm[0]) == 200, "the endpoint does not answer 200"
        await max_rate(server.port, warm, 1.0, args.connections)
        load = requests(public_key, seats, 6000, seed=1)
        cpu0 = server.cpu_s()
        rate, errors = await max_rate(server.port, load, args.seconds, args.connections)
        cpu_per_request_ms = (server.cpu_s() - cpu0) / max(1, rate * args.seconds) * 1000
        half = rate / 2
        paced = requests(public_key, seats, int(half * args.seconds) + 10, seed=2)
        latencies, late, half_errors = await fixed_rate(server.port, paced, half, args.seconds, args.connections)
    finally:
        server.stop()
    return {
        "requests_per_s": round(rate, 1),
        "errors_at_max": errors,
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "half_load_rate": round(half, 1),
        "errors_at_half_load": half_errors,
        "generator_late_p99_ms": ms(percentile(late, 99)),
        "server_cpu_ms_per_request": round(cpu_per_request_ms, 3),
        "requests_per_cpu_s": round(1000 / cpu_per_request_ms, 1) if cpu_per_request_ms else None,
        "request": "data_exchange from SEATS: signature, RSA-OAEP-SHA256 (2048) + AES-GCM, a seat hold in "
                   "PostgreSQL, encrypted answer",
        "seconds": args.seconds,
        "connections": args.connections,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_1m_before": round(load_before, 2), "loadavg_1m": round(os.getloadavg()[0], 2)},
        "server": "uvicorn 1 worker, uvloop, httptools",
    }


async def clean_up() -> None:
    """Leave nothing behind on the shared servers: this benchmark's database and topics."""
    from cleanup import delete_namespace_topics, drop_database  # tests/bench/cleanup.py
    from parley_common.settings import CommonSettings

    common = CommonSettings()
    await drop_database(common.database_url, BENCH_DB)
    await delete_namespace_topics(common.kafka_bootstrap, NAMESPACE)
    KEY_FILE.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve")
    srv.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port)
        return
    try:
        result = asyncio.run(bench(args))
    finally:
        asyncio.run(clean_up())
    out = REPO / "bench-results" / "flows.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
