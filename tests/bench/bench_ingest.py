"""Benchmark of ingest's webhook intake against the real local Kafka (make bench-ingest).

    uv run python tests/bench/bench_ingest.py [--seconds 5] [--connections 32] [--pin]

The ingest server runs as its own process (uvicorn, one worker, uvloop + httptools, exactly as
``parley-ingest run``); this process is the load generator (a small keep-alive HTTP/1.1 client
on asyncio). ``--pin`` puts the server (all its threads) on CPU 0 and the generator on CPU 1
(writes bench-results/ingest-pinned.json instead). In one run, side by side, for signed
single-message webhooks and 50-message batches:

1. the maximum rate (closed loop), every request answered 200 only after Kafka (acks=all,
   idempotent producer) acknowledged all its records: events/s per ingest process;
2. latency p50/p99 at half that rate (open loop, fixed schedule: queueing counts), with the
   server's own evidence for the tail: time inside the server, event-loop lag, GC pauses, and
   how long the server's threads waited for a CPU (run queue, /proc/<pid>/schedstat); and the
   generator's own lateness in starting requests;
3. the same server with the Kafka write replaced by an immediate answer (same HTTP stack, same
   verification and normalisation): the ratio of 1 to this;
4. for single messages also the previous stack (the FastAPI route instead of the bare ASGI
   route), with and without Kafka.

Every phase also reports the server's CPU time per webhook, which depends far less than the
rates on what else runs on the shared cores. Writes bench-results/ingest.json (events_per_s,
p50_ms_half_load, p99_ms_half_load, ratio_vs_no_kafka for the 50-message batches, and every
figure per shape and phase).
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

os.environ.setdefault("PARLEY_DEMO", "true")  # a local measurement: the demo redaction key will do

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "bench."
APP_ID = "bench-app"
SECRET = "bench-app-secret"
NUMBER, WABA = "770000000001", "770000000101"
BENCH_DB = "parley_bench_ingest"


# --- server process ------------------------------------------------------------------------


def serve(port: int, mode: str, stack: str) -> None:
    import uvicorn

    uvicorn.run(
        build_app(port, mode, stack),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        workers=None,
    )


def build_app(port: int, mode: str, stack: str) -> Any:
    os.environ["PARLEY_TOPIC_NAMESPACE"] = NAMESPACE
    os.environ["BENCH_APP_SECRET"] = SECRET
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    settings = IngestSettings(http_port=port, database_url=_db_url(), log_level="WARNING")
    app = create_app(settings)
    if stack == "fastapi":  # the same app with the webhook POST served by its FastAPI route
        app.webhook_route = None
    if mode == "nokafka":
        writer = app.state.ingest.writer

        async def answer_without_kafka(records: Any) -> None:
            return None

        writer.write_all = answer_without_kafka
    _add_probes(app)
    return app


class _Probes:
    """Server-side evidence for the latency tail: request time inside the server, event-loop
    lag (how late a 5 ms timer fires) and garbage-collector pauses, since the last reset."""

    def __init__(self) -> None:
        self.request_s: list[float] = []
        self.loop_lag_s: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._gc_started = 0.0

    def reset(self) -> None:
        self.request_s.clear()
        self.loop_lag_s.clear()
        self.gc_pauses.clear()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_started))

    async def watch_loop(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.loop_lag_s.append(time.perf_counter() - before - 0.005)

    def summary(self) -> dict[str, Any]:
        def ms(values: list[float], p: float) -> float:
            return round(percentile(values, p) * 1000, 2) if values else 0.0

        per_gen = {g: [d for gg, d in self.gc_pauses if gg == g] for g in (0, 1, 2)}
        return {
            "server_request_ms": {"p50": ms(self.request_s, 50), "p99": ms(self.request_s, 99),
                                  "max": ms(self.request_s, 100)},
            "loop_lag_ms": {"p50": ms(self.loop_lag_s, 50), "p99": ms(self.loop_lag_s, 99),
                            "max": ms(self.loop_lag_s, 100)},
            "gc": {f"gen{g}": {"count": len(v), "max_ms": ms(v, 100), "total_ms": round(sum(v) * 1000, 1)}
                   for g, v in per_gen.items()},
        }


def _add_probes(app: Any) -> None:
    import gc

    probes = _Probes()
    gc.callbacks.append(probes.on_gc)
    route = app.webhook_route
    if route is not None:
        inner = route.__call__

        async def timed(scope: Any, receive: Any, send: Any, app_id: str | None) -> None:
            started = time.perf_counter()
            await inner(scope, receive, send, app_id)
            probes.request_s.append(time.perf_counter() - started)

        app.webhook_route = _CallableRoute(route, timed)
    watcher: list[asyncio.Task[None]] = []

    async def start_watch() -> None:
        watcher.append(asyncio.create_task(probes.watch_loop()))

    app.state.runtime.on_start.append(start_watch)

    @app.post("/bench/probes", include_in_schema=False)
    async def read_probes(reset: bool = False) -> dict[str, Any]:
        summary = probes.summary()
        if reset:
            probes.reset()
        return summary


class _CallableRoute:
    def __init__(self, route: Any, call: Any) -> None:
        self._route, self._call = route, call

    def match(self, scope: Any) -> Any:
        return self._route.match(scope)

    async def __call__(self, scope: Any, receive: Any, send: Any, app_id: str | None) -> None:
        await self._call(scope, receive, send, app_id)


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
) -> tuple[list[float], list[float], int]:
    """Open loop: requests start on a fixed schedule; latency runs from the scheduled time.

    Also returns how late the generator itself started each request (its own loop's delay)."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    late: list[float] = []
    errors = 0
    total = int(rate * seconds)
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i * interval
        late.append(time.perf_counter() - scheduled)
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
    return latencies, late, errors


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class Server:
    """One ingest server process; its CPU time and run-queue wait are read from /proc."""

    def __init__(self, mode: str, stack: str, pin: bool) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        cmd = [sys.executable, __file__, "serve", "--port", str(self.port), "--mode", mode, "--stack", stack]
        if pin:
            cmd = ["taskset", "-a", "-c", "0", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        """User + system CPU seconds of the server process (all threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run_queue_wait_s(self) -> float:
        """Seconds the server's threads were runnable but waiting for a CPU."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError):
                continue
        return total / 1e9

    async def probes(self, reset: bool) -> dict[str, Any]:
        c = await Connection.open(self.port)
        c.writer.write(
            f"POST /bench/probes?reset={str(reset).lower()} HTTP/1.1\r\nHost: ingest\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        head = await c.reader.readuntil(b"\r\n\r\n")
        length = next(int(h[15:]) for h in head.split(b"\r\n") if h[:15].lower() == b"content-length:")
        body = await c.reader.readexactly(length)
        c.writer.close()
        return dict(orjson.loads(body))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


Variant = tuple[str, str]  # (mode: kafka | nokafka, stack: bare | fastapi)


async def measure_side_by_side(
    requests: list[bytes], messages: int, variants: list[Variant], *, half: Variant, args: argparse.Namespace
) -> dict[Variant, dict[str, Any]]:
    """All variants' servers run at once; their maximum rates are measured in alternating rounds
    (so a change in what else runs on the machine hits all of them alike), then ``half`` at half
    its own maximum rate."""
    servers = {v: Server(*v, args.pin) for v in variants}
    try:
        for server in servers.values():
            await max_rate(server.port, requests, 1.5, args.connections)  # warm-up (producer, metadata)
        done = dict.fromkeys(variants, 0.0)
        errors = dict.fromkeys(variants, 0)
        wall = dict.fromkeys(variants, 0.0)
        cpu = dict.fromkeys(variants, 0.0)
        for _ in range(args.rounds):
            for v, server in servers.items():
                cpu0, wall0 = server.cpu_s(), time.perf_counter()
                rps, errs = await max_rate(server.port, requests, args.seconds / args.rounds, args.connections)
                elapsed = time.perf_counter() - wall0
                cpu[v] += server.cpu_s() - cpu0
                wall[v] += elapsed
                done[v] += rps * elapsed
                errors[v] += errs
        results: dict[Variant, dict[str, Any]] = {}
        for v in variants:
            rps = done[v] / wall[v]
            results[v] = {
                "webhooks_per_s": round(rps, 1),
                "events_per_s": round(rps * messages, 1),
                "errors_at_max": errors[v],
                "server_cpu_share_of_a_core": round(cpu[v] / wall[v], 2),
                "server_cpu_us_per_webhook": round(cpu[v] / done[v] * 1e6, 1),
            }
        server = servers[half]
        rate = results[half]["webhooks_per_s"] / 2
        await server.probes(reset=True)
        wait0, wall0 = server.run_queue_wait_s(), time.perf_counter()
        latencies, late, errs = await fixed_rate(server.port, requests, rate, args.seconds, args.connections * 4)
        waited = server.run_queue_wait_s() - wait0
        elapsed = time.perf_counter() - wall0
        results[half].update(
            half_load_webhooks_per_s=round(rate, 1),
            p50_ms_half_load=ms(percentile(latencies, 50)),
            p99_ms_half_load=ms(percentile(latencies, 99)),
            max_ms_half_load=ms(max(latencies)),
            errors_at_half_load=errs,
            generator_late_ms={"p50": ms(percentile(late, 50)), "p99": ms(percentile(late, 99))},
            server_run_queue_wait_ms_per_s=round(waited / elapsed * 1000, 1),
            server=await server.probes(reset=False),
        )
        return results
    finally:
        for server in servers.values():
            server.stop()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    await prepare()
    run = f"{int(time.time())}"
    single_requests = [signed_request(webhook_body(run + "s", seq, 1)) for seq in range(4000)]
    batch_requests = [signed_request(webhook_body(run + "b", seq, 50)) for seq in range(1000)]
    bare_kafka, bare_nokafka = ("kafka", "bare"), ("nokafka", "bare")
    fastapi_kafka, fastapi_nokafka = ("kafka", "fastapi"), ("nokafka", "fastapi")
    # single-message webhooks: the bare ASGI route (now) and the FastAPI route (before), side by side
    single_runs = await measure_side_by_side(
        single_requests, 1, [bare_kafka, bare_nokafka, fastapi_kafka, fastapi_nokafka], half=bare_kafka, args=args
    )
    batch_runs = await measure_side_by_side(
        batch_requests, 50, [bare_kafka, bare_nokafka], half=bare_kafka, args=args
    )

    def shape(messages: int, kafka: dict[str, Any], nokafka: dict[str, Any]) -> dict[str, Any]:
        return {
            "messages_per_webhook": messages,
            "records_per_webhook": messages + 1,
            **kafka,
            "no_kafka_events_per_s": nokafka["events_per_s"],
            "no_kafka_server_cpu_us_per_webhook": nokafka["server_cpu_us_per_webhook"],
            "ratio_vs_no_kafka": round(kafka["events_per_s"] / nokafka["events_per_s"], 3),
            "cpu_ratio_vs_no_kafka": round(
                nokafka["server_cpu_us_per_webhook"] / kafka["server_cpu_us_per_webhook"], 3
            ),
        }

    single = shape(1, single_runs[bare_kafka], single_runs[bare_nokafka])
    single["fastapi_route_before"] = {
        "events_per_s": single_runs[fastapi_kafka]["events_per_s"],
        "server_cpu_us_per_webhook": single_runs[fastapi_kafka]["server_cpu_us_per_webhook"],
        "no_kafka_events_per_s": single_runs[fastapi_nokafka]["events_per_s"],
        "no_kafka_server_cpu_us_per_webhook": single_runs[fastapi_nokafka]["server_cpu_us_per_webhook"],
    }
    batch = shape(50, batch_runs[bare_kafka], batch_runs[bare_nokafka])
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
            "server": "uvicorn 1 worker, uvloop, httptools; webhook POST on the bare ASGI route",
            "pinned": "server on CPU 0, generator on CPU 1, Kafka unpinned" if args.pin else "no",
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "note": "server, load generator and Kafka share the machine's 2 cores with other work; "
            "maximum rates measured in alternating rounds per shape",
            "seconds_per_phase": args.seconds,
            "rounds": args.rounds,
            "connections": args.connections,
            "producer": "acks=all, idempotent, lz4, linger_ms=0 (ingest's setting)",
            "gc": "frozen after start-up, gen0 threshold 10000 (ingest's settings)",
        },
    }


async def clean_up() -> None:
    """Leave nothing behind on the shared servers: this benchmark's database and topics."""
    from cleanup import delete_namespace_topics, drop_database  # tests/bench/cleanup.py
    from parley_common.settings import CommonSettings

    common = CommonSettings()
    await drop_database(common.database_url, BENCH_DB)
    await delete_namespace_topics(common.kafka_bootstrap, NAMESPACE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per maximum-rate phase")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, load generator on CPU 1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["kafka", "nokafka"], default="kafka")
    parser.add_argument("--stack", choices=["bare", "fastapi"], default="bare")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.mode, args.stack)
        return
    if args.pin:
        os.sched_setaffinity(0, {1})
    try:
        figures = asyncio.run(bench(args))
    finally:
        asyncio.run(clean_up())
    out = REPO / "bench-results" / ("ingest-pinned.json" if args.pin else "ingest.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    single, batch = figures["single_message"], figures["batch_50"]
    before = single["fastapi_route_before"]
    for name, f in (("single message", single), ("50-msg batches", batch)):
        srv = f["server"]
        print(
            f"{name:>15}: {f['events_per_s']:>8.0f} events/s ({f['webhooks_per_s']:.0f} webhooks/s, "
            f"{f['server_cpu_us_per_webhook']:.0f} us server CPU each); no-Kafka {f['no_kafka_events_per_s']:.0f} "
            f"events/s, ratio {f['ratio_vs_no_kafka']}; errors {f['errors_at_max']}+{f['errors_at_half_load']}\n"
            f"{'':>17}half load {f['half_load_webhooks_per_s']:.0f} webhooks/s: p50 {f['p50_ms_half_load']} ms, "
            f"p99 {f['p99_ms_half_load']} ms (in server p99 {srv['server_request_ms']['p99']} ms, loop lag p99 "
            f"{srv['loop_lag_ms']['p99']} ms, GC max {max(g['max_ms'] for g in srv['gc'].values())} ms, "
            f"server waited for a CPU {f['server_run_queue_wait_ms_per_s']} ms/s, generator late p99 "
            f"{f['generator_late_ms']['p99']} ms)"
        )
    print(
        f"{'before (FastAPI)':>15}: single message {before['events_per_s']:.0f} events/s "
        f"({before['server_cpu_us_per_webhook']:.0f} us server CPU each), "
        f"no-Kafka {before['no_kafka_events_per_s']:.0f} "
        f"({before['no_kafka_server_cpu_us_per_webhook']:.0f} us)"
    )
    print(f"load average {figures['setup']['load_average_at_end']:.1f}; wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
