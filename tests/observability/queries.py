"""The PromQL of the dashboards and the alerting rules, and the metric names they query."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OBS = REPO / "deploy" / "observability"
DASHBOARDS = sorted((OBS / "dashboards").glob("*.json"))
ALERT_FILES = sorted((OBS / "alerts").glob("*.yaml"))
# Dashboard variables, replaced by a value of the right kind so that the query parses.
VARIABLES = {"$job": "parley-ingest", "$phone_number_id": ".*", "$tenant": ".*"}
METRIC = re.compile(r"\b((?:parley|faststream)_[a-z0-9_]+|up)\b(?=\s*[{\[)]|\s*$|\s)")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "le"}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for path in ALERT_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr with variables filled in)."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in VARIABLES.items():
                    expr = expr.replace(var, value)
                out.append((path.stem, panel["title"], expr))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names and values are not matched: they sit inside
    braces, which are removed first)."""
    without_matchers = re.sub(r"\{[^}]*\}", "{}", re.sub(r'"[^"]*"', '""', expr))
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_matchers)
    return {m for m in METRIC.findall(without_groupings) if m not in PROMQL_WORDS}


def queried_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is queried (dashboard/panel or alert)."""
    where: dict[str, set[str]] = {}
    for board, panel, expr in dashboard_queries():
        for name in metric_names(expr):
            where.setdefault(name, set()).add(f"dashboard {board}: {panel}")
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            where.setdefault(name, set()).add(f"alert {rule['alert']}")
    return where
