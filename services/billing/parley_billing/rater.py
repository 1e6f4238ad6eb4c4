"""The offline rater: raw Meta webhooks (+ optional send records) → one priced line per delivered
outbound message, with the same engine the service meters with."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from parley_common.meta import InvalidWebhookJson, normalise_raw_webhook

from parley_billing.domain.engine import (
    PER_TOKEN_NOTE,
    Business,
    InboundFact,
    OutboundFact,
    PricedMessage,
    Timeline,
    apply_monthly_effects,
    price_timeline,
    summarize,
)
from parley_billing.domain.facts import (
    FactError,
    SendFact,
    StatusFact,
    collapse_statuses,
    inbound_record,
    send_fact,
    status_fact,
)
from parley_billing.domain.rates import RateBook, TierBook


class RaterInputError(ValueError):
    """Bad input, with the file and line it came from."""


@dataclass
class RaterInput:
    statuses: list[StatusFact]
    sends: dict[str, SendFact]
    inbound: dict[tuple[str, str], list[InboundFact]]
    contacts: dict[str, str] = field(default_factory=dict)  # BSUID → number, from records naming both


def _jsonl(lines: Iterable[bytes], name: str) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def read_inputs(webhook_lines: Iterable[bytes], send_lines: Iterable[bytes] | None = None,
                *, webhooks_name: str = "webhooks", sends_name: str = "sends") -> RaterInput:
    statuses: list[StatusFact] = []
    inbound: dict[tuple[str, str], list[InboundFact]] = defaultdict(list)
    contacts: dict[str, str] = {}
    received = datetime.now(UTC)
    for number, line in _jsonl(webhook_lines, webhooks_name):
        where = f"{webhooks_name} line {number}"
        try:
            hook = normalise_raw_webhook(line.strip(), received_at=received)
        except InvalidWebhookJson as exc:
            raise RaterInputError(f"{where}: {exc}") from None
        if hook.problems:
            p = hook.problems[0]
            raise RaterInputError(f"{where}: {p.where}: {p.reason}")
        try:
            for s in hook.statuses:
                fact = status_fact(s.model_dump(mode="json"))
                if fact is not None:
                    statuses.append(fact)
                    if fact.user_id:
                        contacts.setdefault(fact.user_id, fact.phone or fact.customer)
            for m in hook.messages:
                rec = inbound_record(m.model_dump(mode="json"))
                inbound[(rec.phone_number_id, rec.customer)].append(InboundFact(rec.at, rec.referral))
                if rec.user_id:
                    contacts.setdefault(rec.user_id, rec.phone or rec.customer)
        except FactError as exc:
            raise RaterInputError(f"{where}: {exc}") from None
    sends: dict[str, SendFact] = {}
    for number, line in _jsonl(send_lines or (), sends_name):
        where = f"{sends_name} line {number}"
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise FactError("a send record must be a JSON object")
            sfact = send_fact(record)
        except orjson.JSONDecodeError as exc:
            raise RaterInputError(f"{where}: not valid JSON: {exc}") from None
        except FactError as exc:
            raise RaterInputError(f"{where}: {exc}") from None
        if sfact is not None:
            sends[sfact.wamid] = sfact
    return RaterInput(statuses, sends, dict(inbound), contacts)


UTC_ZONE = ZoneInfo("UTC")


def rate(inputs: RaterInput, *, rates: RateBook, tiers: TierBook | None, business_country: str,
         tz: ZoneInfo = UTC_ZONE) -> list[PricedMessage]:
    """Price every delivered outbound message of the input by the rules in force at its delivery,
    month-level rules included. Without Meta's pricing fields (or send records) Parley still decides
    on its own from the facts."""
    outbound: dict[tuple[str, str], list[OutboundFact]] = defaultdict(list)
    accounts: dict[tuple[str, str], str] = {}
    for s in collapse_statuses(inputs.statuses):
        if s.delivered_at is None:
            continue
        send = inputs.sends.get(s.wamid)
        key = (s.phone_number_id, s.customer or (send.customer if send else ""))
        outbound[key].append(OutboundFact(s.wamid, s.delivered_at, send.is_template if send else None,
                                          send.category if send else None, s.meta))
        accounts.setdefault(key, s.waba_id or s.phone_number_id)
    business = Business(business_country.upper(), rates)
    priced: list[PricedMessage] = []
    for key, messages in outbound.items():
        priced.extend(price_timeline(Timeline(key[1], inputs.inbound.get(key, ()), messages, accounts[key],
                                              inputs.contacts.get(key[1])), business))
    return apply_monthly_effects(priced, tz=tz, tiers=tiers)


def message_line(p: PricedMessage) -> dict[str, Any]:
    line: dict[str, Any] = {
        "wamid": p.wamid, "delivered_at": p.delivered_at.isoformat(), "rules": p.rules,
        "pricing_model": p.pricing_model, "category": p.category, "type": p.type, "billable": p.billable,
        "market": p.market, "market_source": p.market_source,
        "amount": None if p.amount is None else str(p.amount), "currency": p.currency, "unpriced": p.unpriced}
    if p.per_token:
        line["note"] = PER_TOKEN_NOTE
    return line


def summary(priced: list[PricedMessage]) -> dict[str, Any]:
    groups = summarize(priced, "market", "category", "currency")
    lines = [{"market": m, "category": c, "currency": cur, "messages": s.messages, "billable": s.billable,
              "unpriced": s.unpriced, "per_token": s.per_token, "amount": str(s.amount)}
             for (m, c, cur), s in sorted(groups.items())]
    totals = summarize(priced, "currency")
    rules = summarize(priced, "rules")
    return {"summary": {"by_market_category": lines,
                        "by_rules": [{"rules": r, "messages": s.messages, "billable": s.billable,
                                      "amount": str(s.amount)} for (r,), s in sorted(rules.items())],
                        "totals": [{"currency": cur, "messages": s.messages, "billable": s.billable,
                                    "unpriced": s.unpriced, "per_token": s.per_token, "amount": str(s.amount)}
                                   for (cur,), s in sorted(totals.items())]}}
