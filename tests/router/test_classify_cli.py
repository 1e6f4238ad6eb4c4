"""`parley-router classify`: one JSON line out per line in, in order; bad lines named, non-zero exit."""

import json
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "parley-router"


def run(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "classify"], input=stdin, capture_output=True, text=True, timeout=300)


def test_classify_answers_every_line_in_order_with_the_shipped_model():
    proc = run('{"text": "I want to buy two tickets"}\n{"text": "STOP"}\n{"text": "¿dónde está mi pedido?"}\n')
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["intent"] for r in rows] == ["buy_ticket", "opt_out", "order_status"]
    assert rows[2]["language"] == "es" and all(0 <= r["confidence"] <= 1 for r in rows)


def test_bad_lines_get_an_error_in_place_and_a_non_zero_exit():
    proc = run('{"text": "hello"}\n{"no_text": 1}\nnot json\n')
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 3 and "intent" in rows[0]
    assert rows[1]["error"].startswith("line 2:") and rows[2]["error"].startswith("line 3:")
    assert proc.returncode == 1 and "2 input line(s)" in proc.stderr
