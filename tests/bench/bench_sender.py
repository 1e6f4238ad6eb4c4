"""Benchmark of the sender (``make bench-sender``).

1. Accepted sends per second of ONE sender process (``python -m parley_sender.cli run``) against
   the Cloud API simulator (``parley-simulator run``), each in its own process, over real Kafka
   and PostgreSQL: a backlog of template requests to distinct customers on four numbers of
   1,000 msg/s each. CPU seconds per accepted send of each process come from /proc/<pid>/stat.
   BENCH_SENDER_N (requests), BENCH_SENDER_NUMBERS (numbers), BENCH_SENDER_PROFILE=path (cProfile
   the sender), BENCH_SENDER_SRC=dir (another checkout's parley_sender, for before/after runs).
2. The governor's accuracy with a backlog on one number limited to 80/s and one to 1,000/s: the
   highest count of grants in any sliding 1-second window (must not exceed the limit) and the
   utilisation (grants / (limit x seconds)).

Writes bench-results/sender.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
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

os.environ.setdefault("PARLEY_DEMO", "true")  # a local measurement: the demo redaction key will do

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # as in pytest: tests.sender.harness imports support.waiting

N_SENDS = int(os.environ.get("BENCH_SENDER_N", "12000"))
# Business numbers of 1,000 msg/s each: the governor caps the process at 1,000/s per number.
NUMBERS = {f"88{i:02d}": 1000 for i in range(int(os.environ.get("BENCH_SENDER_NUMBERS", "4")))}
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat,
    second field): how much of a core the shared machine withheld from it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def bench_request(i: int, pn: str, now: str) -> dict[str, object]:
    mid = f"b{i}"
    return {
        "event_id": mid,
        "message_id": mid,
        "tenant_id": "bench",  # bound by the API key at ingest (ADR 0100); consumers act only on bound events
        "tenant_source": "api_key:bench",
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
                    "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": f"A-{i}"}],
                }
            ],
        },
    }


async def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 60) -> None:
    async with httpx.AsyncClient() as c:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout_s} s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def throughput(kafka: str, server_db: str) -> dict[str, float]:
    """The simulator (``parley-simulator run``) and the sender (``parley-sender run``) each in their
    own process; CPU seconds of each are read from /proc over the measured interval."""
    ns = "bench" + uuid.uuid4().hex[:8]
    os.environ["PARLEY_TOPIC_NAMESPACE"] = f"{ns}."
    from parley_common.topics import MESSAGES_OUT
    from parley_common.topics_cli import ensure_topics

    from tests.sender.harness import TEMPLATES, TOKEN, free_port, seed_tenants, sync_catalogue

    await ensure_topics(kafka, partitions=12)
    admin = await asyncpg.connect(server_db)
    await admin.execute(f'CREATE DATABASE "{ns}"')
    await admin.close()
    db = server_db.rsplit("/", 1)[0] + "/" + ns
    port, sender_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{port}"
    config = {
        "apps": [{"app_id": "app-sender", "app_secret": "s3cret"}],
        "wabas": [{"id": "waba-s1", "app_id": "app-sender", "token": TOKEN, "templates": TEMPLATES}],
        "phone_numbers": [
            {"id": pn, "display_phone_number": f"1555{pn}", "waba_id": "waba-s1", "throughput": mps}
            for pn, mps in NUMBERS.items()
        ],
    }
    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "sim.yaml"
    cfg.write_text(yaml.safe_dump(config))
    bin_dir = Path(sys.executable).parent
    sim = subprocess.Popen(
        [str(bin_dir / "parley-simulator"), "run", "--config", str(cfg), "--port", str(port)]
    )
    sender: subprocess.Popen[bytes] | None = None
    try:
        await wait_http(f"{sim_url}/healthz", sim, "simulator")
        await seed_tenants(db, NUMBERS, tenant="bench", other_tenant="bench-other", messaging_limit=None)
        await sync_catalogue(db, sim_url, "bench")
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=10)
        await producer.start()
        now = datetime.now(UTC).isoformat()
        pns = list(NUMBERS)
        futures = []
        for i in range(N_SENDS):
            pn = pns[i % len(pns)]
            rec = orjson.dumps(bench_request(i, pn, now))
            futures.append(await producer.send(MESSAGES_OUT.name, rec, key=pn.encode()))
        await asyncio.gather(*futures)
        await producer.stop()
        env = os.environ | {
            "PARLEY_KAFKA_BOOTSTRAP": kafka,
            "PARLEY_DATABASE_URL": db,
            "PARLEY_TOPIC_NAMESPACE": f"{ns}.",
            "PARLEY_LOG_LEVEL": "ERROR",
            "PARLEY_TEST_SIM_TOKEN": TOKEN,
            "PARLEY_SENDER_GRAPH_API_BASE": sim_url,
            "PARLEY_SENDER_HTTP_PORT": str(sender_port),
        }
        if os.environ.get("BENCH_SENDER_SRC"):  # another checkout's parley_sender (before/after runs)
            env["PYTHONPATH"] = os.environ["BENCH_SENDER_SRC"]
        cmd = [sys.executable, "-m", "parley_sender.cli", "run"]
        profile = os.environ.get("BENCH_SENDER_PROFILE")  # write a cProfile of the sender here
        if profile:
            cmd = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "parley_sender.cli", "run"]
        sender = subprocess.Popen(cmd, env=env)
        first = last = None
        async with httpx.AsyncClient(base_url=sim_url) as c:
            deadline = time.monotonic() + 180
            accepted = 0
            while time.monotonic() < deadline:
                if sender.poll() is not None:
                    raise RuntimeError(f"sender exited with {sender.returncode}")
                stats = (await c.get("/_sim/stats")).json()
                accepted = stats["requests"]["accepted"]
                if accepted and first is None:
                    first = (time.monotonic(), accepted, cpu_seconds(sender.pid), cpu_seconds(sim.pid),
                             runqueue_wait_seconds(sender.pid))
                if accepted >= N_SENDS:
                    last = (time.monotonic(), accepted, cpu_seconds(sender.pid), cpu_seconds(sim.pid),
                            runqueue_wait_seconds(sender.pid))
                    break
                await asyncio.sleep(0.05)
            errors = stats["errors_by_code"]
        if first is None or last is None:
            raise RuntimeError(f"only {accepted} of {N_SENDS} accepted")
        sends = last[1] - first[1]
        elapsed = last[0] - first[0]
        sender_cpu, sim_cpu = last[2] - first[2], last[3] - first[3]
        return {
            "sends_per_s": round(sends / elapsed, 1),
            "sends_total": N_SENDS,
            "measured_s": round(elapsed, 2),
            "sender_cpu_ms_per_send": round(1000 * sender_cpu / sends, 3),
            "simulator_cpu_ms_per_send": round(1000 * sim_cpu / sends, 3),
            "sender_cpu_share": round(sender_cpu / elapsed, 3),
            # Share of the interval the sender was runnable but not running (CPU taken by others).
            "sender_runqueue_wait_share": round((last[4] - first[4]) / elapsed, 3),
            "simulator_cpu_share": round(sim_cpu / elapsed, 3),
            "sends_per_sender_cpu_s": round(sends / sender_cpu, 1) if sender_cpu else 0.0,
            "throttled_130429": int(errors.get("130429", 0)),
            "duplicates": stats.get("duplicate_biz_opaque_callback_data", 0),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        stop(sender)
        stop(sim)
        from cleanup import delete_namespace_topics, drop_database  # tests/bench/cleanup.py

        await drop_database(server_db, ns)
        await delete_namespace_topics(kafka, f"{ns}.")


async def main() -> None:
    env = infra_env()
    results: dict[str, float] = {}
    for limit in (80, 1000):
        peak, util = await governor_accuracy(limit, GOVERNOR_SECONDS)
        results[f"max_rate_limit_{limit}"] = peak
        results[f"utilisation_limit_{limit}"] = round(util, 4)
        print(f"governor limit {limit}/s: max in any 1 s window {peak}, utilisation {util:.1%}")
    results.update(await throughput(env["PARLEY_KAFKA_BOOTSTRAP"], env["PARLEY_DATABASE_URL"]))
    print(
        f"accepted sends per second (one sender process): {results['sends_per_s']}; CPU ms per send:"
        f" sender {results['sender_cpu_ms_per_send']}, simulator {results['simulator_cpu_ms_per_send']}"
        f" (load average {results['load_average_1m']:.2f})"
    )
    out = REPO / "bench-results" / "sender.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
