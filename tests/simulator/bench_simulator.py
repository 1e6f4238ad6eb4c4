"""How many sends per second one simulator process answers (not collected by pytest).

    uv run python tests/simulator/bench_simulator.py [--seconds 5] [--concurrency 64] [--clients 1]

Starts ``parley-simulator run`` as its own process (throughput limit raised so that only the
simulator's speed counts), then drives valid template sends from ``--clients`` client processes
and prints the accepted sends per second, and the simulator's own CPU time per send (the rate one
free core could sustain; on a shared machine the wall-clock rate understates it). The simulator
must stay well above the sender's target (3,000/s) so that it is never the bottleneck of
``make bench-sender``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CONFIG = """
apps: [{app_id: "9001", app_secret_env: BENCH_SIM_SECRET}]
wabas:
  - id: "2001"
    app_id: "9001"
    token_env: BENCH_SIM_TOKEN
    templates:
      - {name: ticket_confirmation, language: en, category: UTILITY,
         components: [{type: BODY, text: "Your ticket {{1}} is confirmed for {{2}}."}]}
phone_numbers: [{id: "1001", display_phone_number: "15550001", waba_id: "2001", throughput: 100000}]
behaviour: {unknown_recipient_pattern: null}
"""


def _client(url: str, seconds: float, concurrency: int, offset: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> tuple[int, int]:
        ok = bad = 0
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:

            async def worker(w: int) -> None:
                nonlocal ok, bad
                i = 0
                while time.monotonic() < deadline:
                    i += 1
                    body = {
                        "messaging_product": "whatsapp",
                        "to": f"44{offset + w:04d}{i:06d}",
                        "type": "template",
                        "template": {
                            "name": "ticket_confirmation",
                            "language": {"code": "en"},
                            "components": [
                                {
                                    "type": "body",
                                    "parameters": [
                                        {"type": "text", "text": "A1"},
                                        {"type": "text", "text": "Fri"},
                                    ],
                                }
                            ],
                        },
                    }
                    r = await client.post(
                        url,
                        content=json.dumps(body),
                        headers={"Authorization": "Bearer bench-token", "Content-Type": "application/json"},
                    )
                    if r.status_code == 200:
                        ok += 1
                    else:
                        bad += 1

            await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return ok, bad

    out.put(asyncio.run(run()))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "sim.yaml"
        cfg.write_text(CONFIG)
        env = {**os.environ, "BENCH_SIM_SECRET": "s", "BENCH_SIM_TOKEN": "bench-token"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley_simulator.cli", "run", "--port", str(port), "--config", str(cfg)],
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            cpu_before = _cpu_seconds(proc.pid)
            started = time.monotonic()
            workers = [
                multiprocessing.Process(
                    target=_client,
                    args=(f"{base}/v24.0/1001/messages", args.seconds, args.concurrency, c * 1000, queue),
                )
                for c in range(args.clients)
            ]
            for w in workers:
                w.start()
            results = [queue.get() for _ in workers]
            for w in workers:
                w.join()
            elapsed = time.monotonic() - started
            cpu = _cpu_seconds(proc.pid) - cpu_before
            ok = sum(r[0] for r in results)
            bad = sum(r[1] for r in results)
            stats = httpx.get(f"{base}/_sim/stats").json()
            served = stats["requests"]["total"]
            print(
                json.dumps(
                    {
                        "accepted_per_s": round(ok / elapsed),
                        "accepted": ok,
                        "not_accepted": bad,
                        "seconds": round(elapsed, 2),
                        "simulator_accepted": stats["requests"]["accepted"],
                        # CPU the simulator spent per request: what one free core could answer per second
                        "simulator_cpu_us_per_send": round(cpu / served * 1e6) if served else None,
                        "simulator_sends_per_cpu_s": round(served / cpu) if cpu else None,
                    }
                )
            )
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
