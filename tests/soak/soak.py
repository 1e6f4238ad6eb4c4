"""`make soak`: the whole pipeline under steady load and a schedule of faults, counted end to end.

    uv run python tests/soak/soak.py                      # 15 minutes, every fault, 500/s
    uv run python tests/soak/soak.py --duration 300 --rate 200 --faults short
    uv run python tests/soak/soak.py --faults none        # the same pipeline without faults

With --compare (the default for `make soak`), the same pipeline also runs without faults, and
Kafka's own ProducerPerformance tool runs alone on the same broker, so the figures can be read side
by side. Writes bench-results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.soak.harness import kafka_alone, report, run_soak, write
from tests.soak.stack import infra_env


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=900, help="seconds of load (default 900)")
    parser.add_argument("--rate", type=float, default=500, help="conversations per second offered")
    parser.add_argument("--faults", choices=["all", "short", "pause", "none"], default="all")
    parser.add_argument("--compare", action="store_true",
                        help="also run without faults and Kafka's ProducerPerformance alone")
    parser.add_argument("--compare-duration", type=float, default=120, help="seconds of the fault-free run")
    parser.add_argument("--keep", action="store_true", help="keep the soak's database and topics")
    args = parser.parse_args()

    result = await run_soak(duration_s=args.duration, rate=args.rate, faults=args.faults, keep=args.keep,
                            drain_timeout_s=max(300.0, args.duration))
    if args.compare:
        print("same pipeline without faults ...", flush=True)
        calm = await run_soak(duration_s=args.compare_duration, rate=args.rate, faults="none")
        result["without_faults"] = {k: calm[k] for k in (
            "throughput_per_s", "offered_per_s", "p50_ms", "p99_ms", "cpu_ms_per_conversation", "cpu_s",
            "max_rss_mb", "lost", "duplicated_sends", "misbilled")}
        print("Kafka's ProducerPerformance alone ...", flush=True)
        result["kafka_alone"] = await asyncio.to_thread(kafka_alone, infra_env()["PARLEY_KAFKA_BOOTSTRAP"])
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
