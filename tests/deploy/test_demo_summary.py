"""``make run``'s summary says how long the demo took and how fast each stage went
(``deploy/local/run_demo.py``, ``print_stage_speeds``): the formatting, on made-up figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))

from run_demo import delta, print_stage_speeds  # deploy/local is a folder of scripts


def test_the_summary_names_the_duration_and_each_stages_rate(capsys: pytest.CaptureFixture[str]) -> None:
    counts = {"wa.webhooks.raw": 3000, "wa.messages.in": 3000, "wa.sends": 600, "wa.account.events": 0}
    spans = {"wa.webhooks.raw": (100.0, 110.0), "wa.messages.in": (100.5, 112.5), "wa.sends": (101.0, 101.0)}
    print_stage_speeds(counts, spans, took_s=42.25)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "The demo took 42.2 s (from starting the services until the pipeline was quiet)."
    assert out[2] == "Records flowed for 12.5 s, from the first webhook to the last record of any stage."
    rows = {line.split()[0]: line for line in out if line.startswith("  ")}
    assert rows["wa.webhooks.raw"].split() == ["wa.webhooks.raw", "3000", "records", "in", "10.0", "s", "=", "300",
                                               "records/s"]
    assert rows["wa.messages.in"].split()[-3:] == ["=", "250", "records/s"]
    assert rows["wa.sends"].split()[-3:] == ["-", "(one", "instant)"]  # every record in one millisecond
    assert rows["wa.account.events"].split() == ["wa.account.events", "0", "records"]


def test_records_of_a_run_are_the_growth_of_each_partition() -> None:
    assert delta({0: 10, 1: 5}, {0: 15, 1: 5, 2: 7}) == 12
