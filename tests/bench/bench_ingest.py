"""Benchmark of ingest's webhook intake against the real local Kafka (make bench-ingest).

    uv run python tests/bench/bench_ingest.py [--seconds 8] [--connections 32]

The ingest server runs as its own process (uvicorn, one worker, uvloop + httptools as in
production); this process is the load generator (a small keep-alive HTTP/1.1 client on asyncio).
For two shapes, signed single-message webhooks and 50-message batches, it measures:

1. the maximum rate (closed loop), every request answered 200 only after Kafka (acks=all,
   idempotent producer) acknowledged all its records: events/s per ingest process;
2. latency p50/p99 at half that rate (open loop, fixed schedule: queueing counts);
3. the same server with the Kafka write replaced by an immediate answer (same HTTP stack,
   same verification and normalisation), in the same run: the ratio of 1 to this.

Writes bench-results/ingest.json (events_per_s, p50_ms_half_load, p99_ms_half_load,
ratio_vs_no_kafka for the 50-message batches, and the same per shape). The machine's cores are
shared by server, load generator and broker; the figures say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench."
APP_ID = "bench-app"
SECRET = "bench-app-secret"
NUMBER, WABA = "770000000001", "770000000101"
BENCH_DB = "parley_bench_ingest"


# --- server process ------------------------------------------------------------------------


def serve(port: int, mode: str, stack: str = "bare", gc_tuning: bool = False) -> None:
    os.environ["PARLEY_TOPIC_NAMESPACE"] = NAMESPACE
    os.environ["BENCH_APP_SECRET"] = SECRET
    import uvicorn
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    settings = IngestSettings(http_port=port, database_url=_db_url(), log_level="WARNING")
    app = create_app(settings)
    if stack == "fastapi":  # the same app with the webhook POST served by its FastAPI route
        app.webhook_route = None
    if gc_tuning:
        import gc
        gc.set_threshold(50_000, 20, 100)
    if mode == "nokafka":
        writer = app.state.ingest.writer

        async def answer_without_kafka(records: Any) -> None:
            return None

        writer.write_all = answer_without_kafka
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        workers=None,
    )


def _db_url() -> str:
    from parley_common.settings import CommonSettings

    base = CommonSettings().database_url
    return base.rsplit("/", 1)[0] + "/" + BENCH_DB


async def prepare() -> None:
    import asyncpg
    from parley_common.db import migrate
    from parley_common.runtime import TENANCY_MIGRATIONS
    from parley_common.settings import CommonSettings
    from parley_common.tenancy.cli import RegistryFile, import_registry
    from parley_common.topics_cli import ensure_topics

    os.environ["PARLEY_TOPIC_NAMESPACE"] = NAMESPACE
    common = CommonSettings()
    await ensure_topics(common.kafka_bootstrap)
    admin = await asyncpg.connect(common.database_url)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", BENCH_DB):
            await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_db_url())
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
        await import_registry(
            conn,
            RegistryFile.model_validate(
                {
                    "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:BENCH_APP_SECRET"]}],
                    "tenants": [
                        {
                            "tenant_id": "bench",
                            "name": "Bench",
                            "app_id": APP_ID,
                            "business_country": "US",
                            "time_zone": "UTC",
                            "wabas": [WABA],
                            "phone_numbers": [
                                {
                                    "phone_number_id": NUMBER,
                                    "display_phone_number": "15550700001",
                                    "waba_id": WABA,
                                }
                            ],
                        }
                    ],
                }
            ),
        )
    finally:
        await conn.close()


# --- payloads ------------------------------------------------------------------------------


def webhook_body(run: str, seq: int, messages: int) -> bytes:
    msgs = [
        {
            "from": f"1650555{(seq * messages + i) % 10000:04d}",
            "id": f"wamid.bench.{run}.{seq}.{i}",
            "timestamp": "1763700000",
            "type": "text",
            "text": {"body": f"order status please {seq}-{i}"},
        }
        for i in range(messages)
    ]
    contacts = [{"profile": {"name": "Bench Customer"}, "wa_id": m["from"]} for m in msgs]
    return orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550700001",
                                    "phone_number_id": NUMBER,
                                },
                                "contacts": contacts,
                                "messages": msgs,
                            },
                        }
                    ],
                }
            ],
        }
    )


def signed_request(body: bytes) -> bytes:
    from parley_common.meta.signature import sign

    head = (
        f"POST /webhooks/meta/{APP_ID} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: {sign(body, SECRET.encode())}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --- load generator ------------------------------------------------------------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status


async def max_rate(port: int, requests: list[bytes], seconds: float, connections: int) -> tuple[float, int]:
    """Closed loop: every connection sends its next request as soon as the last is answered."""
    conns = [await Connection.open(port) for _ in range(connections)]
    done = 0
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def loop(c: Connection, offset: int) -> None:
        nonlocal done, errors
        i = offset
        while time.perf_counter() < stop_at:
            status = await c.send(requests[i % len(requests)])
            i += connections
            done += 1
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(loop(c, k) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.writer.close()
    return done / elapsed, errors


async def fixed_rate(
    port: int, requests: list[bytes], rate: float, seconds: float, connections: int
) -> tuple[list[float], int]:
    """Open loop: requests start on a fixed schedule; latency runs from the scheduled time."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i * interval
        conn = await idle.get()
        try:
            status = await conn.send(requests[i % len(requests)])
        finally:
            idle.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)
        errors += status != 200

    tasks = []
    for i in range(total):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().writer.close()
    return latencies, errors


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start_server(mode: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", "--port", str(port), "--mode", mode],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"ingest server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ingest server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def measure_shape(messages: int, seconds: float, connections: int) -> dict[str, Any]:
    run = f"{int(time.time())}"
    requests = [signed_request(webhook_body(run + str(messages), seq, messages)) for seq in range(2000)]
    result: dict[str, Any] = {"messages_per_webhook": messages, "records_per_webhook": messages + 1}
    proc, port = start_server("nokafka")
    try:
        await max_rate(port, requests, 1.5, connections)  # warm-up
        rps, errors = await max_rate(port, requests, seconds, connections)
        result["no_kafka_events_per_s"] = round(rps * messages, 1)
        result["no_kafka_errors"] = errors
    finally:
        stop_server(proc)
    proc, port = start_server("kafka")
    try:
        await max_rate(port, requests, 1.5, connections)  # warm-up (producer connections, metadata)
        rps, errors = await max_rate(port, requests, seconds, connections)
        result["events_per_s"] = round(rps * messages, 1)
        result["webhooks_per_s"] = round(rps, 1)
        result["errors_at_max"] = errors
        latencies, errors = await fixed_rate(port, requests, rps / 2, seconds, connections * 4)
        result["half_load_webhooks_per_s"] = round(rps / 2, 1)
        result["p50_ms_half_load"] = round(percentile(latencies, 50) * 1000, 2)
        result["p99_ms_half_load"] = round(percentile(latencies, 99) * 1000, 2)
        result["errors_at_half_load"] = errors
    finally:
        stop_server(proc)
    result["ratio_vs_no_kafka"] = round(result["events_per_s"] / result["no_kafka_events_per_s"], 3)
    return result


async def bench(seconds: float, connections: int) -> dict[str, Any]:
    await prepare()
    single = await measure_shape(1, seconds, connections)
    batch = await measure_shape(50, seconds, connections)
    return {
        "events_per_s": batch["events_per_s"],
        "p50_ms_half_load": batch["p50_ms_half_load"],
        "p99_ms_half_load": batch["p99_ms_half_load"],
        "ratio_vs_no_kafka": batch["ratio_vs_no_kafka"],
        "headline_shape": "50-message batched webhooks",
        "single_message": single,
        "batch_50": batch,
        "setup": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "server": "uvicorn 1 worker, uvloop, httptools",
            "note": "server, load generator and Kafka share the machine's cores",
            "seconds_per_phase": seconds,
            "connections": connections,
            "producer": "acks=all, idempotent, lz4, linger_ms=5 (parley_common.broker)",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["kafka", "nokafka"], default="kafka")
    parser.add_argument("--stack", choices=["bare", "fastapi"], default="bare")
    parser.add_argument("--gc", action="store_true")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.mode, args.stack, args.gc)
        return
    figures = asyncio.run(bench(args.seconds, args.connections))
    out = REPO / "bench-results" / "ingest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    for shape in ("single_message", "batch_50"):
        f = figures[shape]
        print(
            f"{shape:>15}: {f['events_per_s']:>9.0f} events/s ({f['webhooks_per_s']:.0f} webhooks/s), "
            f"p50 {f['p50_ms_half_load']} ms / p99 {f['p99_ms_half_load']} ms at half load, "
            f"no-Kafka {f['no_kafka_events_per_s']:.0f} events/s, ratio {f['ratio_vs_no_kafka']}, "
            f"errors {f['errors_at_max']}+{f['errors_at_half_load']}"
        )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
