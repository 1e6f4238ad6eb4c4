"""Rate cards and volume-tier tables: parsed from CSV, versioned by effective date.

Rate card columns: ``effective_from,market,currency,marketing,utility,authentication,
authentication_international,service`` (a price per message, or per conversation under CBP;
empty = not offered). Tier table columns: ``effective_from,market,category,from_volume,to_volume,
rate`` (empty ``to_volume`` = no upper bound). Lines starting with ``#`` are comments.

A bad row raises :class:`RateFileError` naming its line and the reason; parsing is all or nothing.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

RATE_CARD_COLUMNS = ("effective_from", "market", "currency", "marketing", "utility", "authentication",
                     "authentication_international", "service")
TIER_COLUMNS = ("effective_from", "market", "category", "from_volume", "to_volume", "rate")
PRICED_CATEGORIES = ("marketing", "utility", "authentication", "authentication_international", "service")
TIERED_CATEGORIES = ("utility", "authentication", "authentication-international")
MAX_RATE = Decimal("1000")


class RateFileError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class RateRow:
    effective_from: date
    market: str
    currency: str
    rates: dict[str, Decimal | None]  # keyed by PRICED_CATEGORIES

    def rate(self, category: str) -> Decimal | None:
        return self.rates.get(category.replace("-", "_"))


@dataclass(frozen=True)
class TierRow:
    effective_from: date
    market: str
    category: str
    from_volume: int
    to_volume: int | None
    rate: Decimal


def _lines(text: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, cells) of every non-comment, non-blank line, the header included."""
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        yield number, next(csv.reader(io.StringIO(raw)))


def _header(rows: list[tuple[int, list[str]]], expected: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    if not rows:
        raise RateFileError(1, "the file is empty (expected a header: " + ",".join(expected) + ")")
    number, header = rows[0]
    if tuple(h.strip() for h in header) != expected:
        raise RateFileError(number, "the header must be exactly: " + ",".join(expected))
    return rows[1:]


def _date(value: str, line: int) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise RateFileError(line, f"effective_from {value!r} is not a date (YYYY-MM-DD)") from None


def _price(value: str, line: int, column: str, *, required: bool = False) -> Decimal | None:
    value = value.strip()
    if not value:
        if required:
            raise RateFileError(line, f"{column} is required")
        return None
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise RateFileError(line, f"{column} {value!r} is not a decimal number") from None
    if not price.is_finite() or price < 0 or price > MAX_RATE:
        raise RateFileError(line, f"{column} {value!r} must be between 0 and {MAX_RATE}")
    return price


def parse_rate_card(text: str) -> list[RateRow]:
    rows = _header(list(_lines(text)), RATE_CARD_COLUMNS)
    out: list[RateRow] = []
    seen: set[tuple[date, str]] = set()
    for line, cells in rows:
        if len(cells) != len(RATE_CARD_COLUMNS):
            raise RateFileError(line, f"expected {len(RATE_CARD_COLUMNS)} columns, found {len(cells)}")
        eff = _date(cells[0], line)
        market, currency = cells[1].strip(), cells[2].strip().upper()
        if not market:
            raise RateFileError(line, "market is empty")
        if len(currency) != 3 or not currency.isalpha():
            raise RateFileError(line, f"currency {cells[2]!r} is not an ISO 4217 code")
        if (eff, market) in seen:
            raise RateFileError(line, f"duplicate row for {market} effective {eff}")
        seen.add((eff, market))
        rates = {col: _price(cells[i], line, col) for i, col in enumerate(RATE_CARD_COLUMNS[3:], start=3)}
        if all(v is None for v in rates.values()):
            raise RateFileError(line, "no rate at all in this row")
        out.append(RateRow(eff, market, currency, rates))
    if not out:
        raise RateFileError(1, "no rate rows")
    return out


def parse_tiers(text: str) -> list[TierRow]:
    rows = _header(list(_lines(text)), TIER_COLUMNS)
    out: list[TierRow] = []
    for line, cells in rows:
        if len(cells) != len(TIER_COLUMNS):
            raise RateFileError(line, f"expected {len(TIER_COLUMNS)} columns, found {len(cells)}")
        eff = _date(cells[0], line)
        market, category = cells[1].strip(), cells[2].strip().replace("_", "-")
        if not market:
            raise RateFileError(line, "market is empty")
        if category not in TIERED_CATEGORIES:
            raise RateFileError(line, f"category {cells[2]!r} has no volume tiers (one of "
                                      + ", ".join(TIERED_CATEGORIES) + ")")
        try:
            lo = int(cells[3])
            hi = int(cells[4]) if cells[4].strip() else None
        except ValueError:
            raise RateFileError(line, "from_volume and to_volume must be whole numbers") from None
        if lo < 1 or (hi is not None and hi < lo):
            raise RateFileError(line, f"volume range {lo}..{hi} is empty or starts below 1")
        rate = _price(cells[5], line, "rate", required=True)
        assert rate is not None
        for prev in out:
            if (prev.effective_from, prev.market, prev.category) == (eff, market, category) and \
                    lo <= (prev.to_volume or 2**62) and prev.from_volume <= (hi or 2**62):
                raise RateFileError(line, f"volume range {lo}..{hi or ''} overlaps another row for "
                                          f"{market} {category} effective {eff}")
        out.append(TierRow(eff, market, category, lo, hi, rate))
    return out


@dataclass(frozen=True)
class Rate:
    market: str  # the rate card's market actually used (after fallbacks)
    currency: str
    amount: Decimal | None  # None = not offered


@dataclass
class RateBook:
    """All imported rate-card versions; the version in force on a date is the latest one
    whose ``effective_from`` is on or before it (per market)."""

    rows: list[RateRow] = field(default_factory=list)
    _by_market: dict[str, tuple[list[date], list[RateRow]]] = field(default_factory=dict, init=False)
    # (market, fallback, date) → resolved; the book never changes after it is built.
    _resolved: dict[tuple[str, str | None, date], tuple[str, RateRow | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _rates: dict[tuple[str, str | None, str, date], Rate] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[RateRow]] = {}
        for r in sorted(self.rows, key=lambda r: r.effective_from):
            grouped.setdefault(r.market, []).append(r)
        self._by_market = {m: ([r.effective_from for r in rs], rs) for m, rs in grouped.items()}

    def row(self, market: str, on: date) -> RateRow | None:
        found = self._by_market.get(market)
        if not found:
            return None
        dates, rows = found
        i = bisect.bisect_right(dates, on)
        return rows[i - 1] if i else None

    def resolve_market(self, market: str, fallback: str | None, on: date) -> tuple[str, RateRow | None]:
        key = (market, fallback, on)
        found = self._resolved.get(key)
        if found is None:
            found = (market, None)
            for name in (market, fallback, "Other"):
                if name and (row := self.row(name, on)) is not None:
                    found = (name, row)
                    break
            self._resolved[key] = found
        return found

    def has_international_rate(self, market: str, fallback: str | None, on: date) -> bool:
        _, row = self.resolve_market(market, fallback, on)
        return row is not None and row.rate("authentication_international") is not None

    def rate(self, market: str, fallback: str | None, category: str, on: date) -> Rate:
        key = (market, fallback, category, on)
        found = self._rates.get(key)
        if found is None:
            name, row = self.resolve_market(market, fallback, on)
            found = Rate(name, "USD", None) if row is None else Rate(name, row.currency, row.rate(category))
            self._rates[key] = found
        return found


@dataclass
class TierBook:
    rows: list[TierRow] = field(default_factory=list)

    def rate_for_rank(self, market: str, category: str, month_start: date, rank: int) -> Decimal | None:
        """The tier rate of the ``rank``-th charged message of the month (1-based), or None when
        no tier table covers it (then the list rate applies)."""
        versions = [r.effective_from for r in self.rows
                    if r.market == market and r.category == category and r.effective_from <= month_start]
        if not versions:
            return None
        eff = max(versions)
        for r in self.rows:
            if (r.effective_from, r.market, r.category) == (eff, market, category) and \
                    r.from_volume <= rank and (r.to_volume is None or rank <= r.to_volume):
                return r.rate
        return None

    def __bool__(self) -> bool:
        return bool(self.rows)
