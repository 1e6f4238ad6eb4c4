from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from parley_common.contracts import InboundMessage
from parley_router.domain.classifier import IntentClassifier
from parley_router.domain.defaults import RouterDefaults, load_defaults
from parley_router.models import default_model
from parley_router.settings import RouterSettings


def inbound(text: str | None = "hello", **kw: Any) -> InboundMessage:
    base: dict[str, Any] = {
        "event_id": kw.get("wamid", "wamid.T1"), "wamid": "wamid.T1", "phone_number_id": "100000000000001",
        "tenant_id": "dhaka-tickets", "occurred_at": datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
        "customer_wa_id": "8801711111111", "type": "text", "text": text,
    }
    base.update(kw)
    return InboundMessage.model_validate(base)


@pytest.fixture(scope="session")
def defaults() -> RouterDefaults:
    return load_defaults()


@pytest.fixture(scope="session")
def model() -> IntentClassifier:
    return default_model(RouterSettings().model_cache_dir)
