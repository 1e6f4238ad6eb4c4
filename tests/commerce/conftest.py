"""Commerce tests: two tenants in the session database (API keys, a Meta app), Kafka helpers."""

from __future__ import annotations

import os
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.tenancy import import_tenants

APP_ID = "commerce-app-1"
APP_SECRET = "commerce-app-secret"
SHOP, OTHER = "commerce-bus", "commerce-cinema"
SHOP_NUMBER, OTHER_NUMBER = "770000000001", "770000000002"
SHOP_WABA, OTHER_WABA = "770000000101", "770000000102"

REGISTRY: dict[str, Any] = {
    "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:COMMERCE_TEST_APP_SECRET"]}],
    "tenants": [
        {"tenant_id": SHOP, "name": "Bengaluru Buses", "app_id": APP_ID, "business_country": "IN",
         "time_zone": "Asia/Kolkata", "wabas": [SHOP_WABA],
         "phone_numbers": [{"phone_number_id": SHOP_NUMBER, "display_phone_number": "918000000001",
                            "waba_id": SHOP_WABA}]},
        {"tenant_id": OTHER, "name": "Cinema", "app_id": APP_ID, "business_country": "BR",
         "time_zone": "America/Sao_Paulo", "wabas": [OTHER_WABA],
         "phone_numbers": [{"phone_number_id": OTHER_NUMBER, "display_phone_number": "5511900000002",
                            "waba_id": OTHER_WABA}]},
    ],
}


# The shop's Flows keys: the current one and the one being rotated out (both open requests).
FLOW_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FLOW_OLD_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


REGISTRY["tenants"][0]["settings"] = {"flows": {
    "private_key_refs": ["env:COMMERCE_FLOW_KEY", "env:COMMERCE_FLOW_OLD_KEY"], "hold_seconds": 120}}


@pytest.fixture(scope="session")
async def commerce_keys(database_url: str) -> dict[str, str]:
    """The two tenants in the session database; an API key each."""
    os.environ["COMMERCE_TEST_APP_SECRET"] = APP_SECRET
    os.environ["COMMERCE_FLOW_KEY"] = pem(FLOW_KEY)
    os.environ["COMMERCE_FLOW_OLD_KEY"] = pem(FLOW_OLD_KEY)
    return await import_tenants(database_url, REGISTRY, keys_for=[t["tenant_id"] for t in REGISTRY["tenants"]],
                                 key_label="commerce tests")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()
