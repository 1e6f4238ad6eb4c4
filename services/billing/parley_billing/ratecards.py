"""Importing rate cards and tier tables: parse the whole CSV first, then write it in one transaction."""

from __future__ import annotations

from datetime import date

from parley_common.db import AnyConnection

from parley_billing.domain.rates import RATE_CARD_COLUMNS, parse_rate_card, parse_tiers


async def import_rate_card(conn: AnyConnection, text: str) -> tuple[int, date]:
    """Upsert every row (a corrected CSV replaces the same effective_from × market).

    Returns (rows, earliest effective date); raises RateFileError (nothing written) on a bad row.
    """
    rows = parse_rate_card(text)
    async with conn.transaction():
        await conn.executemany(
            f"""INSERT INTO billing.rate_cards ({", ".join(RATE_CARD_COLUMNS)})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (effective_from, market) DO UPDATE SET currency = excluded.currency,
                  marketing = excluded.marketing, utility = excluded.utility,
                  authentication = excluded.authentication,
                  authentication_international = excluded.authentication_international,
                  service = excluded.service, imported_at = now()""",
            [(r.effective_from, r.market, r.currency, *(r.rates[c] for c in RATE_CARD_COLUMNS[3:])) for r in rows])
    return len(rows), min(r.effective_from for r in rows)


async def import_tiers(conn: AnyConnection, text: str) -> tuple[int, date]:
    """Replace the tier table of every (effective_from, market, category) the file names."""
    rows = parse_tiers(text)
    async with conn.transaction():
        groups = {(r.effective_from, r.market, r.category) for r in rows}
        await conn.executemany(
            "DELETE FROM billing.tiers WHERE effective_from = $1 AND market = $2 AND category = $3", list(groups))
        await conn.executemany(
            "INSERT INTO billing.tiers (effective_from, market, category, from_volume, to_volume, rate)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [(r.effective_from, r.market, r.category, r.from_volume, r.to_volume, r.rate) for r in rows])
    return len(rows), min(r.effective_from for r in rows)
