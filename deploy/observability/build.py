"""Writes Parley's Grafana dashboards (``dashboards/*.json``) and the Kubernetes PrometheusRule
(``deploy/k8s/base/prometheus-rules.yaml``, the groups of ``alerts/*.yaml``) from one place.

    python deploy/observability/build.py           # write them
    python deploy/observability/build.py --check   # exit 1 if a written file is out of date

Dashboards use a ``datasource`` variable (any Prometheus) and ``job`` values ``parley-<service>``.
Every query here is checked by the tests against what the running services export.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DASHBOARDS = HERE / "dashboards"
ALERTS = HERE / "alerts"
K8S_RULES = REPO / "deploy" / "k8s" / "base" / "prometheus-rules.yaml"
DS = {"type": "prometheus", "uid": "${datasource}"}
HTTP_SECONDS = "parley_http_request_duration_seconds"
HANDLED = "faststream_received_processed_messages"
DEAD_LETTERS = 'parley_topic_end_offset{topic=~"(.*\\\\.)?wa\\\\.deadletter"}'


class Board:
    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]] | None = None) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = variables or []
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0

    def row(self, title: str) -> None:
        if self.x:
            self.y += 8
            self.x = 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": len(self.panels) + 1,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def panel(self, title: str, description: str, targets: list[tuple[str, str]], *, unit: str = "short",
              kind: str = "timeseries", width: int = 12) -> None:
        if self.x + width > 24:
            self.y += 8
            self.x = 0
        self.panels.append({
            "type": kind, "title": title, "description": description, "id": len(self.panels) + 1,
            "datasource": DS, "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
            "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)],
        })
        self.x += width

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["parley"],
            "schemaVersion": 39, "version": 1, "editable": True, "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s", "timezone": "utc",
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                     "label": "Prometheus"}, *self.variables]},
            "panels": self.panels,
        }


def query_variable(name: str, query: str, label: str, *, include_all: bool = True) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": query, "refresh": 2,
            "includeAll": include_all, "multi": include_all, "allValue": ".*" if include_all else None,
            "sort": 1}


def overview() -> Board:
    b = Board("parley-overview", "Parley: overview",
              "Is the pipeline healthy? Webhooks answered in time, records flowing, lag, sends, dead letters.")
    b.row("Meta's webhooks (ingest)")
    b.panel("Webhook answers by outcome", "POSTs from Meta per second: accepted, kafka_unavailable (503), "
            "bad_signature (401), invalid_json (400), too_large (413).",
            [("sum by (outcome) (rate(parley_ingest_webhook_requests_total[5m]))", "{{outcome}}")], unit="reqps")
    b.panel("Webhook answer time: median and p99", "Accepted webhooks; Meta's guidance: median ≤ 250 ms, "
            "under 1 % over 1 s.",
            [("histogram_quantile(0.5, sum by (le) (rate(parley_ingest_webhook_seconds_bucket[5m])))", "median"),
             ("histogram_quantile(0.99, sum by (le) (rate(parley_ingest_webhook_seconds_bucket[5m])))", "p99")],
            unit="s")
    b.panel("Webhook answers over 1 s", "Share of webhook answers slower than 1 s (alert over 1 %).",
            [('1 - sum(rate(parley_ingest_webhook_seconds_bucket{le="1.0"}[5m])) / '
              "sum(rate(parley_ingest_webhook_seconds_count[5m]))", "over 1 s")], unit="percentunit")
    b.panel("Services up and ready", "1 when the service answers its scrape and reaches Kafka and PostgreSQL.",
            [('min by (job) (up{job=~"parley-.*"})', "{{job}} up"),
             ("min by (job) (parley_ready)", "{{job}} ready")])
    b.row("Kafka")
    b.panel("Consumer lag by group", "Records not yet committed, summed over partitions.",
            [("sum by (group) (max by (group, topic, partition) (parley_consumer_lag))", "{{group}}")])
    b.panel("Records handled per second by handler", "FastStream's handlers, by service and topic.",
            [(f"sum by (job, handler) (rate({HANDLED}_total[5m]))",
              "{{job}} {{handler}}")], unit="ops")
    b.panel("Dead letters", "Records written to wa.deadletter per minute (any service); ingest's shape problems.",
            [(f"sum(max by (topic, partition) (delta({DEAD_LETTERS}[5m]))) / 5", "dead letters"),
             ("sum(rate(parley_ingest_shape_problems_total[5m])) * 60", "ingest shape problems")])
    b.row("Sending and billing")
    b.panel("Send outcomes", "Cloud API sends per second by outcome.",
            [("sum by (outcome) (rate(parley_sender_sends_total[5m]))", "{{outcome}}")], unit="ops")
    b.panel("Sends in doubt", "Sends cut off mid-call and not yet resolved; the oldest's age (alert over 15 min).",
            [("max(parley_sender_in_doubt_messages)", "in doubt"),
             ("max(parley_sender_in_doubt_oldest_seconds)", "oldest (s)")])
    b.panel("Billed this month by tenant", "List amount of billable messages this month, by tenant and currency.",
            [("max by (tenant, currency) (parley_billing_month_amount)", "{{tenant}} {{currency}}")])
    return b


def per_service() -> Board:
    job = 'job="$job"'
    b = Board("parley-service", "Parley: per service",
              "RED of one service: HTTP routes and Kafka handlers (rate, errors, duration), its consumer lag.",
              [query_variable("job", 'label_values(up{job=~"parley-.*"}, job)', "Service", include_all=False)])
    b.row("HTTP routes")
    b.panel("Requests by route", "Per second, by route template and status.",
            [(f"sum by (route, status) (rate(parley_http_requests_total{{{job}}}[5m]))", "{{route}} {{status}}")],
            unit="reqps")
    b.panel("Errors by route", "5xx answers per second.",
            [(f'sum by (route) (rate(parley_http_requests_total{{{job}, status=~"5.."}}[5m]))', "{{route}}")],
            unit="reqps")
    b.panel("p95 duration by route", "",
            [(f"histogram_quantile(0.95, sum by (route, le) (rate({HTTP_SECONDS}_bucket{{{job}}}[5m])))",
              "{{route}}")], unit="s")
    b.row("Kafka handlers")
    b.panel("Records by handler and status", "Per second; status error means the handler raised.",
            [(f"sum by (handler, status) (rate({HANDLED}_total{{{job}}}[5m]))",
              "{{handler}} {{status}}")], unit="ops")
    b.panel("Handler errors", "Records (or batches) whose handler raised, per second.",
            [(f'sum by (handler) (rate({HANDLED}_total{{{job}, status="error"}}[5m]))', "{{handler}}")],
            unit="ops")
    b.panel("p95 handler duration", "Per batch for batch handlers.",
            [(f"histogram_quantile(0.95, sum by (handler, le) (rate({HANDLED}_duration_seconds_bucket{{{job}}}[5m])))",
              "{{handler}}")], unit="s")
    b.panel("Consumer lag by partition", "Of the groups this service consumes in.",
            [(f"max by (group, topic, partition) (parley_consumer_lag{{{job}}})", "{{group}} {{topic}}/{{partition}}")])
    b.panel("Records in flight per handler", "Records (or batches) being handled right now.",
            [(f"sum by (handler) (faststream_received_messages_in_process{{{job}}})", "{{handler}}")])
    return b


def per_number() -> Board:
    pn = 'phone_number_id=~"$phone_number_id"'
    b = Board("parley-number", "Parley: per business number",
              "Each business phone number: send rate against its limit, Meta's throttling, quality and tier.",
              [query_variable("phone_number_id", "label_values(parley_sender_number_limit_mps, phone_number_id)",
                              "Number")])
    b.panel("Send rate against the limit", "Accepted sends per second and the governor's limit.",
            [(f"sum by (phone_number_id) (rate(parley_sender_number_sends_total{{{pn}}}[1m]))",
              "{{phone_number_id}} sent"),
             (f"max by (phone_number_id) (parley_sender_number_limit_mps{{{pn}}})", "{{phone_number_id}} limit")],
            unit="ops", width=24)
    b.panel("Utilisation of the limit", "Share of the number's throughput used (sum over sender replicas).",
            [(f"sum by (phone_number_id) (rate(parley_sender_number_sends_total{{{pn}}}[1m])) / "
              f"max by (phone_number_id) (parley_sender_number_limit_mps{{{pn}}})", "{{phone_number_id}}")],
            unit="percentunit")
    b.panel("Throttling by Meta", "130429: over the number's throughput; 131056: pair rate (one customer).",
            [(f"sum by (phone_number_id, code) (rate(parley_sender_throttled_total{{{pn}}}[5m]))",
              "{{phone_number_id}} {{code}}")], unit="ops")
    b.panel("Quality events", "Latest phone_number_quality_update event per number (1 on the current one).",
            [(f"max by (phone_number_id, event) (parley_number_quality_event{{{pn}}}) == 1",
              "{{phone_number_id}} {{event}}")], kind="table")
    b.panel("Messaging limit tier", "Unique customers per 24 h outside a window, as Meta last reported.",
            [(f"max by (phone_number_id) (parley_number_messaging_limit{{{pn}}})", "{{phone_number_id}}")],
            kind="stat")
    b.panel("Refusals by reason", "Requests Parley refused before calling Meta (all numbers).",
            [('sum by (reason) (rate(parley_sender_sends_total{outcome="refused"}[5m]))', "{{reason}}")], unit="ops")
    b.panel("Cloud API latency p95", "Time of the send call to Meta (all numbers).",
            [("histogram_quantile(0.95, sum by (le) (rate(parley_sender_cloudapi_seconds_bucket[5m])))", "p95")],
            unit="s")
    return b


def tenant_cost() -> Board:
    t = 'tenant=~"$tenant"'
    b = Board("parley-tenant-cost", "Parley: cost per tenant",
              "This month's metering per tenant: list amount, delivered messages, unpriced, disagreements with Meta.",
              [query_variable("tenant", "label_values(parley_billing_month_messages, tenant)", "Tenant")])
    b.panel("List amount this month", "Billable messages at the rate card's list price, by currency.",
            [(f"max by (tenant, currency) (parley_billing_month_amount{{{t}}})", "{{tenant}} {{currency}}")],
            width=24)
    b.panel("Delivered messages this month", "Ledger rows (one per delivered outbound message).",
            [(f"max by (tenant) (parley_billing_month_messages{{{t}}})", "{{tenant}}")])
    b.panel("Unpriced billable messages", "Billable but no rate in the card: import Meta's rate card.",
            [(f"max by (tenant) (parley_billing_month_unpriced{{{t}}})", "{{tenant}}")])
    b.panel("Disagreements with Meta", "Messages whose pricing by Meta differs from Parley's (share of the month).",
            [(f"max by (tenant) (parley_billing_month_meta_disagreements{{{t}}}) / "
              f"clamp_min(max by (tenant) (parley_billing_month_messages{{{t}}}), 1)", "{{tenant}}")],
            unit="percentunit")
    b.panel("Send API messages by tenant", "Messages accepted by ingest's send API per second.",
            [(f"sum by (tenant) (rate(parley_ingest_api_messages_total{{{t}}}[5m]))", "{{tenant}}")], unit="ops")
    b.panel("Ledger writes", "Ledger rows written or re-priced per second (all tenants).",
            [("sum(rate(parley_billing_ledger_writes_total[5m]))", "ledger writes")], unit="ops")
    return b


BOARDS = {"overview": overview, "per-service": per_service, "per-number": per_number, "tenant-cost": tenant_cost}


def prometheus_rule() -> str:
    groups: list[Any] = []
    for path in sorted(ALERTS.glob("*.yaml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "parley", "labels": {"app.kubernetes.io/part-of": "parley"}},
           "spec": {"groups": groups}}
    return ("# Written by deploy/observability/build.py from deploy/observability/alerts/*.yaml; do not edit.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=200))


def outputs() -> dict[Path, str]:
    out = {DASHBOARDS / f"{name}.json": json.dumps(make().json(), indent=1, ensure_ascii=False) + "\n"
           for name, make in BOARDS.items()}
    out[K8S_RULES] = prometheus_rule()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a written file is out of date")
    args = parser.parse_args()
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"out of date: {path.relative_to(REPO)} (run python deploy/observability/build.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
