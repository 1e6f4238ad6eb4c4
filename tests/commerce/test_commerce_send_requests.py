"""The send API's commerce messages (pure rules of ingest): typed, validated, 422 naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from parley_ingest.domain.send_requests import SendMessageRequest


def order_details(**override: Any) -> dict[str, Any]:
    params = {
        "reference_id": "bus-ord-0001", "type": "digital-goods", "currency": "INR",
        "total_amount": {"value": 95000, "offset": 100},
        "payment_settings": [{"type": "payment_gateway",
                              "payment_gateway": {"type": "razorpay", "configuration_name": "buses"}}],
        "order": {"status": "pending", "items": [
            {"retailer_id": "seat-3A", "name": "Seat 3A", "amount": {"value": 45000, "offset": 100}, "quantity": 2}],
            "subtotal": {"value": 90000, "offset": 100}, "tax": {"value": 5000, "offset": 100}},
    }
    params.update(override)
    return {"from": "100000000000001", "to": "919900000001", "type": "interactive",
            "interactive": {"type": "order_details", "body": {"text": "Your tickets"},
                            "action": {"name": "review_and_pay", "parameters": params}}}


def problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    return SendMessageRequest.model_validate(body).problems()


P = "interactive.action.parameters"


def test_a_well_formed_order_details_message_is_sendable_and_reaches_the_sender_whole() -> None:
    body = order_details()
    request = SendMessageRequest.model_validate(body)
    assert request.problems() == []
    assert request.content() == body["interactive"]


@pytest.mark.parametrize(("change", "field"), [
    (lambda b: b["interactive"]["action"]["parameters"].pop("reference_id"), f"{P}.reference_id"),
    (lambda b: b["interactive"]["action"]["parameters"].update(reference_id="has spaces"), f"{P}.reference_id"),
    (lambda b: b["interactive"]["action"]["parameters"].update(currency="inr"), f"{P}.currency"),
    (lambda b: b["interactive"]["action"]["parameters"]["total_amount"].update(value=95001), P),
    (lambda b: b["interactive"]["action"]["parameters"]["total_amount"].update(value=9.5), f"{P}.total_amount.value"),
    (lambda b: b["interactive"]["action"]["parameters"]["order"]["subtotal"].update(value=1), P),
    (lambda b: b["interactive"]["action"]["parameters"]["order"].update(items=[]), f"{P}.order.items"),
    (lambda b: b["interactive"]["action"]["parameters"]["order"]["items"][0].update(quantity=0),
     f"{P}.order.items.0.quantity"),
    (lambda b: b["interactive"]["action"].update(name="pay"), "interactive.action.name"),
    (lambda b: b["interactive"].pop("body"), "interactive.body"),
    (lambda b: b["interactive"]["action"]["parameters"].update(type="services"), f"{P}.type"),
])
def test_a_bad_order_details_message_names_the_field(change: Any, field: str) -> None:
    body = copy.deepcopy(order_details())
    change(body)
    found = problems(body)
    assert found, "the request must be refused"
    assert field in [f for f, _ in found], found


def test_the_sum_rules_say_what_does_not_add_up() -> None:
    body = order_details(total_amount={"value": 95001, "offset": 100})
    [(field, reason)] = problems(body)
    assert field == P and "950.01" in reason and "950" in reason


def test_order_status_product_product_list_and_catalog_messages() -> None:
    base = {"from": "100000000000001", "to": "919900000001", "type": "interactive"}
    ok = [
        {"type": "order_status", "body": {"text": "On its way"}, "action": {"name": "review_order", "parameters": {
            "reference_id": "bus-ord-0001", "order": {"status": "shipped", "description": "Bus leaves 9:00"}}}},
        {"type": "product", "action": {"catalog_id": "cat-1", "product_retailer_id": "trip-1"}},
        {"type": "product_list", "header": {"type": "text", "text": "Buses today"}, "body": {"text": "Pick one"},
         "action": {"catalog_id": "cat-1", "sections": [
             {"title": "Morning", "product_items": [{"product_retailer_id": "trip-1"}]}]}},
        {"type": "catalog_message", "body": {"text": "Our trips"},
         "action": {"name": "catalog_message", "parameters": {"thumbnail_product_retailer_id": "trip-1"}}},
        {"type": "button", "body": {"text": "Yes?"},  # not commerce: its own rules only
             "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Yes"}}]}},
    ]
    for interactive in ok:
        assert problems({**base, "interactive": interactive}) == [], interactive["type"]
    bad = [
        ({"type": "order_status", "body": {"text": "x"}, "action": {"name": "review_order", "parameters": {
            "reference_id": "r1", "order": {"status": "lost"}}}}, f"{P}.order.status"),
        ({"type": "product", "action": {"catalog_id": "cat-1"}}, "interactive.action.product_retailer_id"),
        ({"type": "product_list", "body": {"text": "x"}, "action": {"catalog_id": "c", "sections": [
            {"title": "A", "product_items": [{"product_retailer_id": "p"}]}]}}, "interactive.header"),
        ({"type": "product_list", "header": {"type": "text", "text": "h"}, "body": {"text": "x"}, "action": {
            "catalog_id": "c", "sections": [{"title": "A", "product_items": [{"product_retailer_id": f"p{i}"}
                                                                            for i in range(20)]},
                                            {"title": "B", "product_items": [{"product_retailer_id": f"q{i}"}
                                                                            for i in range(11)]}]}},
         "interactive.action"),
        ({"type": "catalog_message", "action": {"name": "catalog_message"}}, "interactive.body"),
    ]
    for interactive, field in bad:
        found = problems({**base, "interactive": interactive})
        assert field in [f for f, _ in found], (interactive["type"], found)


def test_the_order_details_button_of_a_template_is_checked_too() -> None:
    params = order_details()["interactive"]["action"]["parameters"]
    template = {"name": "order_confirmation", "language": "en", "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "Asha"}]},
        {"type": "button", "sub_type": "order_details", "index": 0,
         "parameters": [{"type": "action", "action": {"order_details": params}}]}]}
    body = {"from": "100000000000001", "to": "919900000001", "type": "template", "template": template}
    assert problems(body) == []
    broken = copy.deepcopy(body)
    broken["template"]["components"][1]["parameters"][0]["action"]["order_details"]["currency"] = "rupees"
    assert [f for f, _ in problems(broken)] == ["template.components.1.parameters.0.action.order_details.currency"]


def flow(**override: Any) -> dict[str, Any]:
    params = {"flow_message_version": "3", "flow_token": "ft-asha-1", "flow_id": "1234567890",
              "flow_cta": "Choose a seat", "flow_action": "data_exchange", **override}
    return {"from": "100000000000001", "to": "919900000001", "type": "interactive",
            "interactive": {"type": "flow", "body": {"text": "Pick your seat"},
                            "action": {"name": "flow", "parameters": params}}}


def test_a_seat_flow_message_is_sendable_whole() -> None:
    body = flow(seat_map_hint="kept")  # unknown fields go to Meta unchanged
    request = SendMessageRequest.model_validate(body)
    assert request.problems() == []
    assert request.content() == body["interactive"]
    navigate = flow(flow_action="navigate", flow_action_payload={"screen": "TRIPS", "data": {"city": "BLR"}})
    assert problems(navigate) == []


@pytest.mark.parametrize(("body", "field", "reason"), [
    (flow(flow_message_version="2"), f"{P}.flow_message_version", "'3'"),
    (flow(flow_cta="Choose the seat you would like most"), f"{P}.flow_cta", "30 characters"),
    (flow(flow_name="seats"), P, "exactly one of 'flow_id' or 'flow_name'"),
    (flow(flow_action="navigate"), P, "needs 'flow_action_payload'"),
    (flow(flow_action_payload={"screen": "TRIPS"}), P, "takes no 'flow_action_payload'"),
    (flow(flow_action="open"), f"{P}.flow_action", "'navigate' or 'data_exchange'"),
])
def test_a_bad_flow_message_names_the_field(body: dict[str, Any], field: str, reason: str) -> None:
    found = problems(body)
    assert [f for f, _ in found] == [field] and reason in found[0][1], found


def test_a_flow_message_needs_a_body() -> None:
    body = flow()
    del body["interactive"]["body"]
    assert [f for f, _ in problems(body)] == ["interactive.body"]
