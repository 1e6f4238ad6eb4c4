"""What the fuzz runs (test_fuzz_openapi.py) found, each kept as a regression test: input that
answered 500 is now refused as a 422 naming the field, before anything is stored or sent."""

from __future__ import annotations

import pytest
from pydantic import ValidationError


@pytest.mark.parametrize("example", ["book a\x00 ticket", "lone \ud800 surrogate"])
def test_router_intent_example_postgres_cannot_store_is_refused(example: str) -> None:
    """PUT /v1/intents/{name}: PostgreSQL's jsonb refuses NUL and unpaired surrogates (was a 500)."""
    from parley_router.api import IntentExamples

    with pytest.raises(ValidationError, match="cannot be stored"):
        IntentExamples.model_validate({"examples": ["a fine example", example]})


@pytest.mark.parametrize("component", [
    {"type": "BODY", "text": "Hi {{1}}", "example": {"body_text": [[14666136827086117025347534848]]}},
    {"type": "BODY", "text": "Hi \udc00 {{1}}"},
])
def test_sender_template_with_values_json_cannot_carry_is_refused(component: dict[str, object]) -> None:
    """POST /v1/templates: a 29-digit integer in a component crashed the Graph API call (was a 500)."""
    from parley_sender.api import TemplateCreate, TemplatePreview

    body = {"name": "order_update", "language": "en", "category": "UTILITY", "components": [component]}
    with pytest.raises(ValidationError, match="JSON cannot carry"):
        TemplateCreate.model_validate(body)
    with pytest.raises(ValidationError, match="JSON cannot carry"):
        TemplatePreview.model_validate({"name": "order_update", "language": "en", "components": [component]})


@pytest.mark.parametrize("offset", [3, 7, 999_999, 250])
def test_billing_refund_amount_offset_must_be_a_power_of_ten(offset: int) -> None:
    """POST /v1/orders/{ref}/refunds: {"value": 1, "offset": 999999} is not an exact decimal amount;
    it was rounded and then overflowed the 64-bit JSON integer of the refund (was a 500)."""
    from parley_billing.order_api import MetaAmount

    with pytest.raises(ValidationError, match="power of ten"):
        MetaAmount.model_validate({"value": 1, "offset": offset})
    assert MetaAmount.model_validate({"value": 45000, "offset": 1000}).offset == 1000
