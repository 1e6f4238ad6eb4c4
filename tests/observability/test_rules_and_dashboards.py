"""The alerting rules and dashboards, offline: promtool accepts the rules and every dashboard query,
the rules' unit tests pass, every alert has its runbook section, and the generated files (the
dashboards, the Kubernetes PrometheusRule) are up to date with their sources.

promtool comes from the OS packages, installed by the project (`make observability-tools`,
deploy/local/prometheus.sh, which `make test` runs first; the fixture runs it too)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .queries import ALERT_FILES, DASHBOARDS, OBS, REPO, alert_rules, dashboard_queries

RUNBOOK = REPO / "docs" / "runbook.md"
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def promtool() -> str:
    subprocess.run(["bash", str(REPO / "deploy/local/prometheus.sh"), "install"], check=True)
    return "promtool"


def test_alert_rules_pass_promtool_check_rules(promtool: str) -> None:
    assert ALERT_FILES, "no alert rules under deploy/observability/alerts"
    proc = subprocess.run([promtool, "check", "rules", *map(str, ALERT_FILES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_alerts_fire_on_trouble_and_not_otherwise(promtool: str) -> None:
    proc = subprocess.run([promtool, "test", "rules", str(HERE / "alert_tests.yaml")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len({board for board, _, _ in queries}) == 4  # overview, per service, per number, tenant cost
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, _, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_issue_list_of_alerts_is_covered() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {"ParleyConsumerLagGrowing", "ParleyWebhookErrors", "ParleyWebhookSlowMedian", "ParleyWebhookSlowTail",
            "ParleySendsFailing", "ParleyNumberThrottled", "ParleyNumberLowQuality", "ParleyDeadLettersGrowing",
            "ParleyInDoubtSendsOverdue", "ParleyBillingUnpriced", "ParleyBillingDisagreesWithMeta",
            "ParleyServiceNotReady"} <= names


def test_every_alert_has_a_runbook_section_that_names_it() -> None:
    sections = {m.group(1): m.end() for m in re.finditer(r"^## (\S+)\s*$", RUNBOOK.read_text(), re.M)}
    for rule in alert_rules():
        name = rule["alert"]
        assert name in sections, f"docs/runbook.md has no section '## {name}'"
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{name.lower()}"
        assert rule["labels"]["severity"] in ("warning", "critical")
    text = RUNBOOK.read_text()
    for name, start in sections.items():
        body = text[start:text.find("\n## ", start)]
        for part in ("What it means", "What to do"):
            assert part in body, f"runbook section {name} does not say '{part}'"


def test_dashboards_and_the_kubernetes_rule_are_built_from_their_sources() -> None:
    proc = subprocess.run([sys.executable, str(OBS / "build.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert {p.stem for p in DASHBOARDS} == {"overview", "per-service", "per-number", "tenant-cost"}
