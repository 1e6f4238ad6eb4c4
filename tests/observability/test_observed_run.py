"""An end-to-end run watched as an SRE would: the four services and the Cloud API simulator as real
processes (`parley-<service> run`, JSON logs at DEBUG into files), metrics on each service's ops
port scraped by a real Prometheus (OS packages, deploy/local/prometheus.sh), on the session's real
Kafka topics and PostgreSQL database.

After customers write in, the business sends templates, one number is throttled by Meta and one is
flagged for quality:

- every metric that a dashboard or an alerting rule queries has samples in Prometheus;
- every log line of every service is a JSON object with ``trace_id``, and no phone number, user id
  (BSUID) or message text of this run appears in any of them;
- /metrics and /docs answer only on the ops port.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from parley_simulator import sign
from support.tenancy import import_tenants

from .queries import REPO, queried_metrics

sys.path.insert(0, str(REPO / "deploy" / "local"))
from observed import Prometheus, ensure_installed

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

SERVICES = ("ingest", "router", "sender", "billing")
APP_ID = "obs-app"
SECRET = "obs-app-secret-not-a-real-one"
WABA = "299000000000101"
PN1, PN2 = "199000000000101", "199000000000102"
NUMBERS = {PN1: "15550009001", PN2: "15550009002"}
TEMPLATES = [
    {"name": "order_update", "language": "en", "category": "UTILITY", "status": "APPROVED",
     "components": [{"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships today.",
                     "example": {"body_text": [["Ana", "A1"]]}}]},
]
# Customers of this run (fictional numbers in valid plans), and a text that must never be logged.
CUSTOMERS = [f"4479111{n:05d}" for n in range(101, 131)]
SECRET_TEXT = "my passport number is in the attachment, please refund order 7781"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    bin: Path
    logs: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_key: str = ""
    prometheus: Prometheus | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(cmd, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_ready(self, name: str, path: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(self.logs / f'{name}.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url(name) + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{name} not ready: {(self.logs / f'{name}.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


async def register_tenant(database_url: str, sim_url: str) -> str:
    keys = await import_tenants(database_url, {
        "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:OBS_APP_SECRET"], "access_token_ref": "env:OBS_TOKEN",
                  "verify_token_ref": "env:OBS_VERIFY", "graph_api_base": sim_url}],
        "tenants": [{"tenant_id": "obs-shop", "name": "Observed Shop", "app_id": APP_ID,
                     "business_country": "GB", "time_zone": "Europe/London", "messaging_limit": None,
                     "wabas": [WABA],
                     "phone_numbers": [{"phone_number_id": n, "display_phone_number": d, "waba_id": WABA}
                                       for n, d in NUMBERS.items()],
                     "settings": {"router": {"auto_reply": True}}}],
    }, keys_for=["obs-shop"], key_label="observability")
    return keys["obs-shop"]


@pytest.fixture(scope="module")
async def run(kafka_bootstrap: str, database_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    ensure_installed()
    tmp = tmp_path_factory.mktemp("observed")
    secrets = {"OBS_APP_SECRET": SECRET, "OBS_TOKEN": "obs-token", "OBS_VERIFY": "obs-verify"}
    env = {**os.environ, **secrets, "PARLEY_LOG_LEVEL": "DEBUG", "PARLEY_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "PARLEY_DATABASE_URL": database_url}
    env.pop("PARLEY_DEMO", None)  # the services must run with the session's own redaction key
    r = Run(Path(sys.executable).parent, tmp, env)
    r.ports = {name: free_port() for name in ("simulator", *SERVICES)}
    r.ops = {svc: free_port() for svc in SERVICES}
    sim_config = tmp / "simulator.yaml"
    sim_config.write_text(yaml.safe_dump({
        "apps": [{"app_id": APP_ID, "app_secret_env": "OBS_APP_SECRET"}],
        "wabas": [{"id": WABA, "app_id": APP_ID, "token_env": "OBS_TOKEN", "templates": TEMPLATES}],
        "phone_numbers": [{"id": n, "display_phone_number": d, "waba_id": WABA, "throughput": 80}
                          for n, d in NUMBERS.items()],
        "behaviour": {"delivered_ratio": 1.0, "read_ratio": 0.5, "failure_131049_rate": 0.0,
                      "sent_delay_ms": 10, "delivered_delay_ms": 50, "read_delay_ms": 100},
    }))
    r.api_key = await register_tenant(database_url, r.url("simulator"))
    try:
        r.start("simulator", [str(r.bin / "parley-simulator"), "run", "--port", str(r.ports["simulator"]),
                              "--config", str(sim_config), "--seed", "7",
                              "--webhook-url", r.url("ingest") + "/webhooks/meta/{app_id}"], {})
        r.wait_ready("simulator", "/healthz")
        for svc in SERVICES:
            r.start(svc, [str(r.bin / f"parley-{svc}"), "run"], {
                f"PARLEY_{svc.upper()}_HTTP_PORT": str(r.ports[svc]),
                f"PARLEY_{svc.upper()}_OPS_PORT": str(r.ops[svc]),
                "PARLEY_SENDER_GRAPH_API_BASE": r.url("simulator"),
                "PARLEY_BILLING_MONTH_METRICS_INTERVAL_S": "2",
                "OTEL_SERVICE_NAME": f"parley-{svc}"})
        for svc in SERVICES:
            r.wait_ready(svc, "/readyz")
        r.prometheus = Prometheus(free_port(), tmp / "prometheus",
                                  {f"parley-{svc}": f"127.0.0.1:{r.ops[svc]}" for svc in SERVICES},
                                  scrape_interval="1s")
        r.prometheus.start()
        r.prometheus.wait_ready()
        subprocess.run([str(r.bin / "parley-billing"), "ratecard", "import",
                        str(REPO / "services/billing/parley_billing/data/example_rate_card.csv")],
                       check=True, env=env, capture_output=True)
        yield r
    finally:
        r.stop()


def signed_post(r: Run, doc: dict[str, Any]) -> httpx.Response:
    body = json.dumps(doc).encode()
    return httpx.post(r.url("ingest") + f"/webhooks/meta/{APP_ID}", content=body, timeout=30, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})


def drive(r: Run) -> dict[str, set[str]]:
    """Traffic of every kind the dashboards show; returns the personal values that must not be logged."""
    auth = {"Authorization": f"Bearer {r.api_key}"}
    personal: dict[str, set[str]] = {"numbers": set(CUSTOMERS), "texts": {SECRET_TEXT}, "user_ids": set()}
    assert httpx.post(r.url("sender") + "/v1/templates/sync", headers=auth, timeout=30).status_code == 200
    # Customers write in (generated by the simulator: several languages, referrals, username-only).
    got = httpx.post(r.url("simulator") + "/_sim/inbound", json={"count": 40, "seed": 11}, timeout=60).json()
    for m in got["messages"]:
        (personal["user_ids"] if re.match(r"^[A-Z]{2}\.", m["customer_id"]) else personal["numbers"]).add(
            m["customer_id"])
    # One customer writes a text that must never be logged, with a BSUID.
    now = str(int(time.time()))
    doc = {"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": NUMBERS[PN1], "phone_number_id": PN1},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": CUSTOMERS[0], "user_id": "GB.99887766554433221100"}],
        "messages": [{"from": CUSTOMERS[0], "id": f"wamid.OBS{now}", "timestamp": now, "type": "text",
                      "text": {"body": SECRET_TEXT}}]}}]}]}
    personal["user_ids"].add("GB.99887766554433221100")
    assert signed_post(r, doc).status_code == 200
    # The business sends templates on both numbers; the second number is throttled by Meta (the
    # simulator lets it through at 2/s while Parley's registry says 80/s: 130429 answers).
    assert httpx.patch(r.url("simulator") + f"/_sim/numbers/{PN2}", json={"throughput": 2}, timeout=10).is_success
    template = {"type": "template", "template": {"name": "order_update", "language": {"code": "en"}, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "A1"}]}]}}
    batch = [{"from": PN1 if i % 3 else PN2, "to": c, **template} for i, c in enumerate(CUSTOMERS)]
    res = httpx.post(r.url("ingest") + "/v1/messages/batch", json={"messages": batch}, headers=auth, timeout=30)
    assert res.status_code == 202, res.text
    # Meta flags the second number for quality, naming it by its display number (as Meta does).
    assert signed_post(r, {"object": "whatsapp_business_account", "entry": [{"id": WABA, "time": int(now), "changes": [
        {"field": "phone_number_quality_update",
         "value": {"display_phone_number": NUMBERS[PN2], "event": "FLAGGED", "current_limit": "TIER_1K"}}]}]}
    ).status_code == 200
    # A webhook part that is not Meta's shape: dead-lettered by ingest, answered 200.
    assert signed_post(r, {"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [{"status": "sent"}]}}]}]}
    ).status_code == 200
    return personal


def test_what_the_dashboards_and_alerts_query_is_exported_and_the_logs_are_clean(run: Run) -> None:
    personal = drive(run)
    assert run.prometheus is not None
    wanted = queried_metrics()

    def missing() -> set[str]:
        return set(wanted) - run.prometheus.metric_names()  # type: ignore[union-attr]

    deadline = time.monotonic() + 180
    while missing() and time.monotonic() < deadline:
        time.sleep(2)
    assert run.prometheus.targets_health() == {f"parley-{s}": "up" for s in SERVICES}
    assert not missing(), "queried but never exported after the run:\n" + "\n".join(
        f"  {name}: {sorted(wanted[name])}" for name in sorted(missing()))
    # Consumer lag of every group of every service (read from the committed offsets).
    # (group ids carry the run's topic namespace, "<namespace>.parley-router"; none in production)
    groups = {s["metric"]["group"].rpartition(".")[2]
              for s in run.prometheus.query("max by (group) (parley_consumer_lag)")}
    assert groups >= {"parley-router", "parley-sender", "parley-sender-windows", "parley-sender-statuses",
                      "parley-sender-accounts", "parley-billing"}, groups
    assert float(run.prometheus.query("sum(parley_consumer_lag_errors_total)")[0]["value"][1]) == 0
    # The series the run must have produced, by label: the throttled number, the flagged one.
    throttled = run.prometheus.query('sum by (phone_number_id, code) (parley_sender_throttled_total)')
    assert {(s["metric"]["phone_number_id"], s["metric"]["code"]) for s in throttled} >= {(PN2, "130429")}
    flagged = run.prometheus.query('parley_number_quality_event{event="FLAGGED"} == 1')
    assert [s["metric"]["phone_number_id"] for s in flagged] == [PN2]
    webhooks = run.prometheus.query('sum(parley_ingest_webhook_seconds_count)')
    assert float(webhooks[0]["value"][1]) >= 3
    api = run.prometheus.query('sum by (route) (parley_http_requests_total{job="parley-ingest", method="POST"})')
    assert "/v1/messages/batch" in {s["metric"]["route"] for s in api}

    # The operations face only on the ops port.
    for svc in SERVICES:
        assert httpx.get(f"http://127.0.0.1:{run.ops[svc]}/metrics", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{run.ops[svc]}/docs", timeout=5).status_code == 200
        for path in ("/metrics", "/docs", "/openapi.json"):
            assert httpx.get(run.url(svc) + path, timeout=5).status_code == 404, (svc, path)

    # Every log line of every service: JSON, with trace ids, nothing personal.
    run.stop()  # flushes and closes the logs
    digits = {re.sub(r"\D", "", n) for n in personal["numbers"]}
    for svc in SERVICES:
        text = (run.logs / f"{svc}.log").read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) > 5, f"{svc} logged almost nothing"
        for line in lines:
            record = json.loads(line)  # every line is one JSON object
            assert "trace_id" in record and "span_id" in record, line
            assert record["service"] == f"parley-{svc}"
        for value in (*digits, *personal["user_ids"], *personal["texts"]):
            assert value not in text, f"{svc}'s log contains a customer's number, user id or text"
        assert "refund order 7781" not in text and "passport" not in text
    traced = [json.loads(line) for svc in SERVICES
              for line in (run.logs / f"{svc}.log").read_text().splitlines() if line.strip()]
    assert any(r["trace_id"] for r in traced), "no log line inside a span"
