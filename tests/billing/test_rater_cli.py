"""The offline rater, end to end through the console script's typer app."""

from __future__ import annotations

import json
from pathlib import Path

from parley_billing.cli import app
from typer.testing import CliRunner

DATA = Path(__file__).parent / "data"
CARD = Path(__file__).parents[2] / "services/billing/parley_billing/data/example_rate_card.csv"
runner = CliRunner()


def _rate(*extra: str) -> tuple[int, list[dict], str]:
    result = runner.invoke(app, ["rate", "--rate-card", str(CARD), "--webhooks", str(DATA / "webhooks.jsonl"),
                                 "--business-country", "US", *extra])
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    return result.exit_code, lines, result.stderr


def test_rater_prices_each_delivered_message_once_by_parleys_own_rules() -> None:
    code, lines, _ = _rate("--sends", str(DATA / "sends.jsonl"))
    assert code == 0
    by_wamid = {x["wamid"]: x for x in lines[:-1]}
    assert set(by_wamid) == {"wamid.m1", "wamid.m2", "wamid.m3", "wamid.m4", "wamid.m5"}  # m6 failed
    assert by_wamid["wamid.m1"] == {"wamid": "wamid.m1", "pricing_model": "PMP", "category": "marketing",
                                    "type": "regular", "billable": True, "market": "India",
                                    "amount": "0.0118", "currency": "USD"}
    # Meta said "regular" for this utility template, but the customer wrote an hour before: free.
    assert by_wamid["wamid.m2"]["type"] == "free_customer_service" and by_wamid["wamid.m2"]["billable"] is False
    assert by_wamid["wamid.m4"]["type"] == "free_entry_point"  # 50 h after the reply to an ad
    assert by_wamid["wamid.m5"]["category"] == "authentication-international"
    assert lines[-1]["summary"]["totals"] == [{"currency": "USD", "messages": 5, "billable": 2, "unpriced": 0,
                                               "amount": "0.1478"}]


def test_without_sends_the_category_comes_from_meta_but_the_price_is_parleys() -> None:
    code, lines, _ = _rate()
    assert code == 0
    by_wamid = {x["wamid"]: x for x in lines[:-1]}
    assert by_wamid["wamid.m2"]["category"] == "utility"
    assert by_wamid["wamid.m2"]["billable"] is False  # still inside the customer-service window


def test_bad_webhook_line_is_a_clear_error_with_its_line_number(tmp_path: Path) -> None:
    bad = tmp_path / "hooks.jsonl"
    bad.write_text((DATA / "webhooks.jsonl").read_text().splitlines()[0] + "\n{not json\n")
    result = runner.invoke(app, ["rate", "--rate-card", str(CARD), "--webhooks", str(bad),
                                 "--business-country", "US"])
    assert result.exit_code != 0
    assert "line 2" in result.stderr and "JSON" in result.stderr


def test_bad_rate_card_row_is_rejected_with_line_and_reason(tmp_path: Path) -> None:
    card = tmp_path / "card.csv"
    card.write_text(CARD.read_text().replace("2026-01-01,Brazil,USD,0.0625", "2026-01-01,Brazil,USD,abc"))
    result = runner.invoke(app, ["rate", "--rate-card", str(card), "--webhooks", str(DATA / "webhooks.jsonl"),
                                 "--business-country", "US"])
    assert result.exit_code == 2
    line = 1 + card.read_text().splitlines().index("2026-01-01,Brazil,USD,abc,0.0068,0.0068,,")
    assert f"line {line}: marketing" in result.stderr and "'abc' is not a decimal number" in result.stderr


def test_business_country_must_be_iso_alpha2() -> None:
    result = runner.invoke(app, ["rate", "--rate-card", str(CARD), "--webhooks", str(DATA / "webhooks.jsonl"),
                                 "--business-country", "USA"])
    assert result.exit_code == 2 and "alpha-2" in result.stderr
