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
    assert by_wamid["wamid.m1"] == {"wamid": "wamid.m1", "delivered_at": "2026-01-01T00:00:20+00:00",
                                    "rules": "PMP-2025-07", "pricing_model": "PMP", "category": "marketing",
                                    "type": "regular", "billable": True, "market": "India", "market_source": "phone",
                                    "amount": "0.0118", "currency": "USD", "unpriced": False}
    # Meta said "regular" for this utility template, but the customer wrote an hour before: free.
    assert by_wamid["wamid.m2"]["type"] == "free_customer_service" and by_wamid["wamid.m2"]["billable"] is False
    assert by_wamid["wamid.m4"]["type"] == "free_entry_point"  # 50 h after the reply to an ad
    assert by_wamid["wamid.m5"]["category"] == "authentication-international"
    assert lines[-1]["summary"]["totals"] == [{"currency": "USD", "messages": 5, "billable": 2, "unpriced": 0,
                                               "per_token": 0, "amount": "0.1478"}]


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


def _hook(*, statuses: list[dict] = (), messages: list[dict] = (), contacts: list[dict] = ()) -> str:
    value: dict = {"messaging_product": "whatsapp",
                   "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}}
    if statuses:
        value["statuses"] = list(statuses)
    if messages:
        value["messages"], value["contacts"] = list(messages), list(contacts)
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]})


def _ts(iso: str) -> str:
    from datetime import datetime

    return str(int(datetime.fromisoformat(iso).timestamp()))


def test_rater_prices_each_line_by_the_rules_of_its_own_date_without_metas_pricing(tmp_path: Path) -> None:
    """Free-form replies in the window with no pricing object at all: September's are free,
    November's charged; a BSUID-only customer is priced in the number's market an inbound message
    revealed, another by its BSUID's prefix."""
    hooks = []
    for day, n in (("2026-09-10", "sep"), ("2026-11-10", "nov")):
        hooks.append(_hook(messages=[{"from": "919876543210", "id": f"wamid.{n}-in", "type": "text",
                                      "timestamp": _ts(f"{day}T09:00:00+00:00"), "text": {"body": "hi"}}],
                           contacts=[{"wa_id": "919876543210", "profile": {"name": "A"}}]))
        hooks.append(_hook(statuses=[{"id": f"wamid.{n}-reply", "status": "delivered", "recipient_id": "919876543210",
                                      "timestamp": _ts(f"{day}T09:30:00+00:00")}]))
    hooks.append(_hook(messages=[{"from": "919812345678", "id": "wamid.k-in", "type": "text",
                                  "timestamp": _ts("2026-11-11T09:00:00+00:00"), "text": {"body": "hi"}}],
                       contacts=[{"wa_id": "919812345678", "user_id": "IN.77120000000000000001",
                                  "profile": {"name": "B"}}]))
    for wamid, bsuid in (("wamid.k-reply", "IN.77120000000000000001"), ("wamid.u-reply", "GB.77120000000000000002")):
        hooks.append(_hook(statuses=[{"id": wamid, "status": "delivered", "recipient_user_id": bsuid,
                                      "timestamp": _ts("2026-11-11T09:30:00+00:00")}]))
    path = tmp_path / "hooks.jsonl"
    path.write_text("\n".join(hooks) + "\n")
    result = runner.invoke(app, ["rate", "--rate-card", str(CARD), "--webhooks", str(path),
                                 "--business-country", "IN"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    by_wamid = {x["wamid"]: x for x in lines[:-1]}
    assert (by_wamid["wamid.sep-reply"]["billable"], by_wamid["wamid.sep-reply"]["rules"]) == (False, "PMP-2026-08")
    nov = by_wamid["wamid.nov-reply"]
    assert (nov["category"], nov["type"], nov["billable"], nov["amount"], nov["rules"]) == (
        "service", "regular", True, "0.0014", "PMP-2026-10")
    assert (by_wamid["wamid.k-reply"]["market"], by_wamid["wamid.k-reply"]["market_source"]) == (
        "India", "contact_phone")
    assert (by_wamid["wamid.u-reply"]["market"], by_wamid["wamid.u-reply"]["market_source"]) == (
        "United Kingdom", "bsuid_prefix")
    assert {r["rules"]: r["billable"] for r in lines[-1]["summary"]["by_rules"]} == {"PMP-2026-08": 0,
                                                                                    "PMP-2026-10": 3}
