"""Router benchmark (`make bench-router`): accuracy on public datasets and the project's
multilingual examples, then throughput and latency on the real broker.

Prints the figures and writes bench-results/router.json. Needs Kafka and PostgreSQL
(`bash deploy/local/infra.sh up`; PARLEY_KAFKA_BOOTSTRAP / PARLEY_DATABASE_URL override).
Options: --messages N (default 30000), --skip-accuracy, --skip-throughput, --profile PATH,
--encoder-gate G (repeatable: one throughput run per gate; 1.0 consults the encoder for every
message). BANKING77 and CLINC150 are read from PARLEY_ROUTER_DATASETS_DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("PARLEY_DEMO", "true")  # a local measurement: the demo redaction key will do

REPO = Path(__file__).resolve().parents[2]
NUMBERS = [f"1090000000001{i:02d}" for i in range(12)]
DEFAULT_GATE = 0.7  # RouterSettings.encoder_gate


def infra_env() -> tuple[str, str]:
    kafka, db = os.environ.get("PARLEY_KAFKA_BOOTSTRAP"), os.environ.get("PARLEY_DATABASE_URL")
    if kafka and db:
        return kafka, db
    subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "up"], check=True, capture_output=True)
    out = subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "env"], check=True,
                         capture_output=True, text=True).stdout
    env = dict(line[len("export "):].split("=", 1) for line in out.splitlines() if line.startswith("export "))
    return kafka or env["PARLEY_KAFKA_BOOTSTRAP"], db or env["PARLEY_DATABASE_URL"]


def accuracy(results: dict[str, object]) -> None:
    from parley_router.evaluation import eval_banking77, eval_clinc150, eval_crosslingual, eval_multilingual
    from parley_router.settings import RouterSettings

    root = RouterSettings().datasets_dir
    if not (root / "banking77").is_dir() or not (root / "clinc150").is_dir():
        raise SystemExit(f"BANKING77 and CLINC150 not found in {root}: set PARLEY_ROUTER_DATASETS_DIR to a folder "
                         "with banking77/{train,test}.csv and clinc150/data_full.json (or pass --skip-accuracy)")
    b_full = eval_banking77(root)
    print(f"BANKING77 full training set: accuracy {b_full.figures['accuracy']:.2%} "
          f"(train {b_full.figures['train_s']:.1f}s; published best 93.66%, target 93.7%)", flush=True)
    b_10 = eval_banking77(root, shots=10)
    print(f"BANKING77 10 examples per intent: accuracy {b_10.figures['accuracy']:.2%} "
          f"(published best 85.19%, target 85%)", flush=True)
    clinc = eval_clinc150(root)
    f = clinc.figures
    no_threshold = f["in_scope_accuracy_without_threshold"]
    print(f"CLINC150: in-scope accuracy {f['in_scope_accuracy']:.2%}, "
          f"out-of-scope recall {f['oos_recall']:.2%} at threshold {f['threshold']:.3f} "
          f"(in-scope without threshold {no_threshold:.2%};"
          f" balanced point: {f['balanced']['in_scope_accuracy']:.2%} / {f['balanced']['oos_recall']:.2%}; "
          f"paper: BERT 96.9/40.3, linear SVM 91.0/14.5; target recall 60% with in-scope 95%)", flush=True)
    ml = eval_multilingual()
    per = ml.figures["per_language"]
    n_test, n_train = ml.figures["test_examples"], ml.figures["train_examples"]
    print("Multilingual held-out accuracy: " + ", ".join(f"{k} {v:.1%}" for k, v in per.items())
          + f" ({n_test} held-out, trained on {n_train})", flush=True)
    xl = eval_crosslingual("en")
    xper = xl.figures["per_language"]
    print("Cross-lingual (intents from the English examples only; encoder + TF-IDF): "
          + ", ".join(f"{k} {v:.1%}" for k, v in xper.items())
          + "; TF-IDF alone: " + ", ".join(f"{k} {v:.1%}" for k, v in xl.figures["lexical_only"].items()),
          flush=True)
    results.update({
        "banking77_full": b_full.figures["accuracy"], "banking77_10shot": b_10.figures["accuracy"],
        "clinc150_in_scope": f["in_scope_accuracy"], "clinc150_oos_recall": f["oos_recall"],
        "clinc150": f, "per_language": per,
        "encoded_share": {"banking77_full": b_full.figures["encoded_share"],
                          "banking77_10shot": b_10.figures["encoded_share"],
                          "clinc150": f["encoded_share"], "multilingual": ml.figures["encoded_share"],
                          "crosslingual": xl.figures["encoded_share"]},
        "crosslingual": xl.figures,
        **{f"xling_{k}": v for k, v in xper.items() if k != "all"},
    })


def latency(results: dict[str, object]) -> None:
    """Per-message classification latency: language + classifier (TF-IDF, and the sentence
    encoder when the router would consult it), one message at a time; and the encoder's own cost."""
    from parley_router.corpora import load_examples
    from parley_router.domain.classifier import IntentClassifier
    from parley_router.domain.encoder import shared_encoder
    from parley_router.domain.language import LanguageIdentifier
    from parley_router.models import default_model
    from parley_router.settings import RouterSettings

    model: IntentClassifier = default_model(RouterSettings().model_cache_dir)
    lang = LanguageIdentifier()
    encoder = shared_encoder()
    texts = [e.text for e in load_examples()]
    for t in texts[:50]:
        model.predict([t], [lang.detect(t)])
    samples = []
    for t in texts:
        t0 = time.perf_counter()
        model.predict([t], [lang.detect(t)])
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    print(f"Classification latency, one message at a time ({len(samples)} messages): "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
    cpu0 = time.process_time()
    encoder.encode(texts)
    encoder_cpu_ms = (time.process_time() - cpu0) / len(texts) * 1000
    one = []
    for t in texts[:500]:
        t0 = time.perf_counter()
        encoder.encode([t])
        one.append((time.perf_counter() - t0) * 1000)
    one.sort()
    print(f"Sentence encoder: {encoder_cpu_ms:.2f} ms CPU per message in one batch of {len(texts)}; "
          f"one at a time p50 {one[len(one) // 2]:.2f} ms, p99 {one[int(len(one) * 0.99)]:.2f} ms", flush=True)
    results["p99_ms"] = p99
    results["p50_ms"] = p50
    results["encoder_cpu_ms_per_message_batched"] = encoder_cpu_ms
    results["encoder_p99_ms_one_message"] = one[int(len(one) * 0.99)]


async def throughput(results: dict[str, object], n: int, profile: str | None = None,
                     gate: float = DEFAULT_GATE) -> None:
    import asyncpg
    import orjson
    from aiokafka import AIOKafkaProducer

    kafka, server_db = infra_env()
    ns = "bench" + uuid.uuid4().hex[:8]
    os.environ["PARLEY_TOPIC_NAMESPACE"] = ns + "."
    from parley_common.db import migrate
    from parley_common.runtime import TENANCY_MIGRATIONS
    from parley_common.tenancy.cli import RegistryFile, import_registry
    from parley_common.topics import MESSAGES_IN
    from parley_common.topics_cli import ensure_topics
    from parley_router.corpora import load_examples

    await ensure_topics(kafka)
    admin = await asyncpg.connect(server_db)
    await admin.execute(f'CREATE DATABASE "{ns}"')
    await admin.close()
    parts = urlsplit(server_db)
    db = urlunsplit((parts.scheme, parts.netloc, "/" + ns, parts.query, parts.fragment))
    try:
        conn = await asyncpg.connect(db)
        for typ in ("json", "jsonb"):
            await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
        os.environ.setdefault("PARLEY_BENCH_SECRET", "bench")
        await import_registry(conn, RegistryFile.model_validate({
            "apps": [{"app_id": "bench-app", "app_secret_refs": ["env:PARLEY_BENCH_SECRET"]}],
            "tenants": [{"tenant_id": "bench", "name": "Bench", "app_id": "bench-app",
                         "business_country": "BD", "time_zone": "Asia/Dhaka", "wabas": ["bench-waba"],
                         "phone_numbers": [{"phone_number_id": p, "display_phone_number": p,
                                            "waba_id": "bench-waba"} for p in NUMBERS],
                         "settings": {"router": {"auto_reply": True}}}]}))
        await conn.close()

        texts = [e.text for e in load_examples()]
        producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20, max_batch_size=512 * 1024,
                                    compression_type="lz4")
        await producer.start()
        now = datetime.now(UTC).isoformat()
        futures = []
        for i in range(n):
            number = NUMBERS[i % len(NUMBERS)]
            rec = {"event_id": f"wamid.b{i}", "wamid": f"wamid.b{i}", "phone_number_id": number,
                   "occurred_at": now, "customer_wa_id": f"88017{i % 100000:08d}", "type": "text",
                   "text": texts[(i * 7919) % len(texts)]}
            futures.append(await producer.send(MESSAGES_IN.name, orjson.dumps(rec), key=number.encode()))
        await asyncio.gather(*futures)
        await producer.stop()
        print(f"Loaded {n} inbound messages onto {MESSAGES_IN.name}", flush=True)

        from parley_router.app import create_app
        from parley_router.settings import RouterSettings

        app = create_app(RouterSettings(kafka_bootstrap=kafka, database_url=db, log_level="WARNING",
                                        encoder_gate=gate))
        logging.getLogger("faststream").setLevel(logging.WARNING)
        logging.getLogger("faststream.access").setLevel(logging.WARNING)
        pool = await asyncpg.create_pool(db, min_size=1, max_size=1)
        profiler = None
        if profile:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        cpu0 = time.process_time()
        async with app.router.lifespan_context(app):
            first = None
            done = 0
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                done = await pool.fetchval("SELECT count(*) FROM router.routed")
                if done and first is None:
                    first, first_count, first_cpu = time.monotonic(), done, time.process_time()
                if done >= n:
                    break
            end = time.monotonic()
            cpu = time.process_time() - cpu0
            steady_cpu = time.process_time() - first_cpu if first is not None else 0.0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
            print(f"wrote a CPU profile of the routing part to {profile}", flush=True)
        await pool.close()
        if first is None or done < n:
            raise RuntimeError(f"only {done} of {n} messages routed in time")
        rate = (n - first_count) / max(end - first, 1e-9)
        print(f"Throughput on the real broker: {rate:,.0f} msgs/s per router process "
              f"({n} messages consumed, deduped, classified, routed and produced; "
              f"{cpu:.1f} s of process CPU in total)", flush=True)
        # On a shared machine wall-clock rate understates what one core does: also report
        # messages per CPU-second of this process (router + the bench's own polling) while routing.
        per_cpu = (n - first_count) / max(steady_cpu, 1e-9)
        encoded = app.state.router_service.router.encoded
        print(f"Messages per CPU-second of the router process while routing: {per_cpu:,.0f} "
              f"(encoder gate {gate}: {encoded} of {n} messages encoded)", flush=True)
        suffix = "" if gate == DEFAULT_GATE else f"_gate_{gate:g}"
        results["msgs_per_s" + suffix] = rate
        results["msgs_per_cpu_s" + suffix] = per_cpu
        results["encoded_messages" + suffix] = encoded
        results["throughput_messages"] = n
    finally:
        from cleanup import delete_namespace_topics, drop_database  # tests/bench/cleanup.py

        await drop_database(server_db, ns)
        await delete_namespace_topics(kafka, ns + ".")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--profile", metavar="PATH", help="write a cProfile of the routing part to PATH")
    ap.add_argument("--encoder-gate", type=float, action="append",
                    help="throughput with this encoder gate (repeatable; 1.0 encodes every message); "
                         f"default {DEFAULT_GATE}")
    args = ap.parse_args()
    results: dict[str, object] = {"measured_at": datetime.now(UTC).isoformat(), "cpu_count": os.cpu_count()}
    if not args.skip_accuracy:
        accuracy(results)
    latency(results)
    if not args.skip_throughput:
        for gate in args.encoder_gate or [DEFAULT_GATE]:
            asyncio.run(throughput(results, args.messages, args.profile, gate))
    out = REPO / "bench-results" / "router.json"
    out.parent.mkdir(exist_ok=True)
    if out.exists() and (args.skip_accuracy or args.skip_throughput):
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out.relative_to(REPO)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
