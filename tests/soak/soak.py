"""`make soak`: the whole pipeline under steady load and a schedule of faults, counted end to end.

    uv run python tests/soak/soak.py                      # 15 minutes, every fault, 500/s
    uv run python tests/soak/soak.py --duration 300 --rate 200 --faults short
    uv run python tests/soak/soak.py --faults none        # the same pipeline without faults

Unless PARLEY_KAFKA_BOOTSTRAP and PARLEY_DATABASE_URL are set, the soak starts a Kafka broker and a
PostgreSQL cluster of its own (free ports, data under .parley/soak/, from the deploy/local scripts),
so that its broker and database restarts touch nobody else's tests; they are stopped and removed at
the end. --shared-infra runs on deploy/local's shared broker and database instead (19092/55432),
and, like infrastructure given in the environment, they are never restarted (no restart faults).

With --compare (the default for `make soak`), the same pipeline also runs without faults, and
Kafka's own ProducerPerformance tool runs alone on the same broker, so the figures can be read side
by side. Writes bench-results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.soak.harness import kafka_alone, report, run_soak, write
from tests.soak.stack import REPO, PrivateInfra, infra_env


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=900, help="seconds of load (default 900)")
    parser.add_argument("--rate", type=float, default=500, help="conversations per second offered")
    parser.add_argument("--faults", choices=["all", "short", "pause", "none"], default="all")
    parser.add_argument("--compare", action="store_true",
                        help="also run without faults and Kafka's ProducerPerformance alone")
    parser.add_argument("--compare-duration", type=float, default=120, help="seconds of the fault-free run")
    parser.add_argument("--keep", action="store_true",
                        help="keep the soak's database and topics (and its private infrastructure's data)")
    parser.add_argument("--shared-infra", action="store_true",
                        help="run on deploy/local's shared Kafka and PostgreSQL (never restarted) instead of "
                             "the soak's own")
    args = parser.parse_args()

    given = bool(os.environ.get("PARLEY_KAFKA_BOOTSTRAP") and os.environ.get("PARLEY_DATABASE_URL"))
    private = None if (given or args.shared_infra) else PrivateInfra(REPO / ".parley" / "soak" /
                                                                      f"infra-{uuid.uuid4().hex[:8]}")
    try:
        if private:
            print(f"starting the soak's own Kafka (127.0.0.1:{private.kafka_port}) and PostgreSQL "
                  f"(127.0.0.1:{private.pg_port}) under {private.dir.relative_to(REPO)} ...", flush=True)
            await asyncio.to_thread(private.up)
        result = await run_soak(duration_s=args.duration, rate=args.rate, faults=args.faults, keep=args.keep,
                                drain_timeout_s=max(300.0, args.duration), private=private)
        if args.compare:
            print("same pipeline without faults ...", flush=True)
            calm = await run_soak(duration_s=args.compare_duration, rate=args.rate, faults="none", private=private)
            result["without_faults"] = {k: calm[k] for k in (
                "throughput_per_s", "offered_per_s", "p50_ms", "p99_ms", "cpu_ms_per_conversation", "cpu_s",
                "max_rss_mb", "lost", "duplicated_sends", "misbilled", "drained")}
            print("Kafka's ProducerPerformance alone ...", flush=True)
            bootstrap = (private.env() if private else infra_env())["PARLEY_KAFKA_BOOTSTRAP"]
            result["kafka_alone"] = await asyncio.to_thread(kafka_alone, bootstrap)
    finally:
        if private:
            await asyncio.to_thread(private.down, remove=not args.keep)
    print(report(result))
    if "without_faults" in result:
        w = result["without_faults"]
        print(f"Without faults: {w['throughput_per_s']}/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
              f"CPU {w['cpu_ms_per_conversation']} ms per conversation")
    print(f"\nwritten to {write(result)}")
    ok = result["lost"] == 0 and result["duplicated_sends"] == 0 and result["misbilled"] == 0 and result["drained"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
