"""Which of Meta's pricing markets a recipient is in: country from the number (``phonenumbers``),
then the shipped country → market table, "Other" as the fallback."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import phonenumbers

OTHER = "Other"


@dataclass(frozen=True)
class Market:
    country: str | None  # ISO 3166-1 alpha-2, None when the number gives none
    name: str  # Meta's market name
    fallback: str | None = None  # the market to use when the rate card has no row for ``name``


@lru_cache(maxsize=1)
def market_table() -> dict[str, tuple[str, str | None]]:
    text = resources.files("parley_billing.data").joinpath("markets.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["country"]: (r["market"], r["fallback_market"] or None) for r in rows}


@lru_cache(maxsize=1)
def _single_region_codes() -> dict[str, str]:
    """Calling code → region, for the codes that belong to one region only (most of them)."""
    from phonenumbers.data import _COUNTRY_CODE_TO_REGION_CODE

    return {str(code): regions[0] for code, regions in _COUNTRY_CODE_TO_REGION_CODE.items() if len(regions) == 1}


@lru_cache(maxsize=65536)
def country_of(number: str | None) -> str | None:
    """ISO country of an E.164 number given with or without ``+`` (None for BSUIDs or junk)."""
    if not number:
        return None
    digits = number.lstrip("+")
    if not digits.isdigit():
        return None
    if 8 <= len(digits) <= 15:
        # Fast path, same answer as the full parse below: a calling code of a single region names
        # that region whether or not the number is valid there (calling codes are prefix-free).
        single = _single_region_codes()
        for n in (1, 2, 3):
            region = single.get(digits[:n])
            if region is not None:
                return region if region != "ZZ" else None
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    # A valid number names its region; otherwise Meta prices by the calling code, whose main
    # region is the best guess (e.g. +44 → GB for a number outside the allocated ranges).
    region = phonenumbers.region_code_for_number(parsed) or (
        phonenumbers.region_code_for_country_code(parsed.country_code) if parsed.country_code else None)
    return region if region and region != "ZZ" else None


def market_of_country(country: str | None) -> Market:
    if country is None:
        return Market(None, OTHER)
    name, fallback = market_table().get(country, (OTHER, None))
    return Market(country, name, fallback)


@lru_cache(maxsize=65536)
def market_for_number(number: str | None) -> Market:
    return market_of_country(country_of(number))


# A business-scoped user id: ISO country, a dot, then alphanumerics (a parent BSUID has ``.ENT.``).
BSUID_PATTERN = re.compile(r"^([A-Z]{2})\.(?:ENT\.)?[A-Za-z0-9]{1,128}$")


def is_bsuid(customer: str | None) -> bool:
    return bool(customer) and BSUID_PATTERN.match(customer or "") is not None


@lru_cache(maxsize=65536)
def market_for_customer(customer: str | None, phone: str | None = None) -> tuple[Market, str]:
    """The customer's market and where it came from: ``phone`` (the customer is a number),
    ``contact_phone`` (a BSUID whose number another record of the customer carried),
    ``bsuid_prefix`` (a BSUID's country prefix), or ``unknown``."""
    if customer and not is_bsuid(customer):
        return market_for_number(customer), "phone"
    if phone:
        return market_for_number(phone), "contact_phone"
    if customer:
        m = BSUID_PATTERN.match(customer)
        if m and m.group(1) in phonenumbers.SUPPORTED_REGIONS:
            return market_of_country(m.group(1)), "bsuid_prefix"
    return Market(None, OTHER), "unknown"
