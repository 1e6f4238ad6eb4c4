"""Tenants, secrets and helpers shared by ingest's tests (ids match tests/fixtures/webhooks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parley_common.meta.webhook import MappingTenants

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"

APP_1, APP_2 = "ingest-app-1", "ingest-app-2"
SECRETS = {  # env var → value; APP_1 has two active secrets (rotation)
    "INGEST_TEST_APP1_SECRET": "app-1-old-secret",
    "INGEST_TEST_APP1_SECRET_NEW": "app-1-new-secret",
    "INGEST_TEST_APP2_SECRET": "app-2-secret",
    "INGEST_TEST_VERIFY_TOKEN": "verify-me-please",
}
APP1_SECRET = SECRETS["INGEST_TEST_APP1_SECRET"].encode()
APP1_SECRET_NEW = SECRETS["INGEST_TEST_APP1_SECRET_NEW"].encode()
APP2_SECRET = SECRETS["INGEST_TEST_APP2_SECRET"].encode()

REGISTRY: dict[str, Any] = {
    "apps": [
        {
            "app_id": APP_1,
            "app_secret_refs": ["env:INGEST_TEST_APP1_SECRET", "env:INGEST_TEST_APP1_SECRET_NEW"],
            "verify_token_ref": "env:INGEST_TEST_VERIFY_TOKEN",
        },
        {"app_id": APP_2, "app_secret_refs": ["env:INGEST_TEST_APP2_SECRET"]},
    ],
    "tenants": [
        {
            "tenant_id": "ingest-acme",
            "name": "Acme",
            "app_id": APP_1,
            "business_country": "US",
            "time_zone": "America/New_York",
            "wabas": ["880000000101"],
            "phone_numbers": [
                {
                    "phone_number_id": "880000000001",
                    "display_phone_number": "15550100001",
                    "waba_id": "880000000101",
                },
                {
                    "phone_number_id": "880000000002",
                    "display_phone_number": "15550100002",
                    "waba_id": "880000000101",
                },
            ],
        },
        {
            "tenant_id": "ingest-globex",
            "name": "Globex",
            "app_id": APP_1,
            "business_country": "DE",
            "time_zone": "Europe/Berlin",
            "wabas": ["880000000102"],
            "phone_numbers": [
                {
                    "phone_number_id": "880000000003",
                    "display_phone_number": "15550100003",
                    "waba_id": "880000000102",
                }
            ],
        },
        {
            "tenant_id": "ingest-initech",
            "name": "Initech",
            "app_id": APP_2,
            "business_country": "GB",
            "time_zone": "Europe/London",
            "wabas": ["880000000103"],
            "settings": {"ingest_rate_limit": "3/minute"},
            "phone_numbers": [
                {
                    "phone_number_id": "880000000004",
                    "display_phone_number": "15550100004",
                    "waba_id": "880000000103",
                }
            ],
        },
    ],
}

# The same tenancy for the pure tests (no database).
CORPUS_TENANTS = MappingTenants(
    numbers={n["phone_number_id"]: t["tenant_id"] for t in REGISTRY["tenants"] for n in t["phone_numbers"]},
    wabas={w: t["tenant_id"] for t in REGISTRY["tenants"] for w in t["wabas"]},
)


def corpus_cases() -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(CORPUS.glob("*.json"))]


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every key of ``expected`` is in ``actual`` with an equal value (recursively for objects)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for k, v in expected.items():
            assert k in actual, f"{path}.{k}: missing (have {sorted(actual)})"
            assert_subset(v, actual[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (
            f"{path}: expected {len(expected)} items, got {actual!r}"
        )
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: expected {expected!r}, got {actual!r}"
