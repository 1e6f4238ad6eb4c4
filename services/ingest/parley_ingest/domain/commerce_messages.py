"""Commerce messages a business may send (pure): ``order_details``, ``order_status``, ``product``,
``product_list``, ``catalog_message`` and ``flow`` (a WhatsApp Flow, e.g. seat selection)
interactive messages, and the order-details button of a template. Meta's shapes (payments in
India, Brazil and Singapore; catalog messages; Flows), checked here so that a bad one is a 422
naming the field instead of a failed send minutes later.

Unknown fields pass through to Meta unchanged (Meta adds them); amounts are exact integers
``{value, offset}`` and an order's sums must add up as Meta checks them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

COMMERCE_INTERACTIVE_TYPES = ("order_details", "order_status", "product", "product_list", "catalog_message", "flow")
ORDER_STATUSES = ("pending", "processing", "partially_shipped", "shipped", "completed", "canceled")


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Amount(_Meta):
    value: int = Field(ge=0, le=10**15)
    offset: int = Field(gt=0, le=10**6)

    def exact(self) -> Decimal:
        return Decimal(self.value) / Decimal(self.offset)


class TextPart(_Meta):
    text: str = Field(min_length=1, max_length=1024)


class OrderItem(_Meta):
    retailer_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    amount: Amount
    quantity: int = Field(ge=1, le=10_000)
    sale_amount: Amount | None = None

    def line_total(self) -> Decimal:
        return (self.sale_amount or self.amount).exact() * self.quantity


class Order(_Meta):
    status: Literal["pending"] = "pending"
    catalog_id: str | None = Field(default=None, min_length=1)
    items: list[OrderItem] = Field(min_length=1, max_length=999)
    subtotal: Amount
    tax: Amount | None = None
    shipping: Amount | None = None
    discount: Amount | None = None


class OrderDetailsParameters(_Meta):
    reference_id: str = Field(min_length=1, max_length=35, pattern=r"^[A-Za-z0-9_\-.]+$",
                              description="the business's unique id of the order")
    type: Literal["digital-goods", "physical-goods"]
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    total_amount: Amount
    order: Order
    payment_settings: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    payment_configuration: str | None = None
    payment_type: str | None = None

    @model_validator(mode="after")
    def _sums(self) -> OrderDetailsParameters:
        o = self.order
        items = sum((i.line_total() for i in o.items), Decimal(0))
        if items != o.subtotal.exact():
            raise PydanticCustomError(
                "order_subtotal", "order.subtotal ({subtotal}) is not the sum of the items ({items})",
                {"subtotal": str(o.subtotal.exact()), "items": str(items)})
        total = (o.subtotal.exact() + (o.tax.exact() if o.tax else 0) + (o.shipping.exact() if o.shipping else 0)
                 - (o.discount.exact() if o.discount else 0))
        if total != self.total_amount.exact():
            raise PydanticCustomError(
                "order_total", "total_amount ({given}) is not subtotal + tax + shipping - discount ({total})",
                {"given": str(self.total_amount.exact()), "total": str(total)})
        return self


class OrderDetailsAction(_Meta):
    name: Literal["review_and_pay"]
    parameters: OrderDetailsParameters


class OrderDetails(_Meta):
    type: Literal["order_details"]
    body: TextPart
    action: OrderDetailsAction


class OrderStatusOrder(_Meta):
    status: Literal["pending", "processing", "partially_shipped", "shipped", "completed", "canceled"]
    description: str | None = Field(default=None, max_length=120)


class OrderStatusParameters(_Meta):
    reference_id: str = Field(min_length=1, max_length=35, pattern=r"^[A-Za-z0-9_\-.]+$")
    order: OrderStatusOrder


class OrderStatusAction(_Meta):
    name: Literal["review_order"]
    parameters: OrderStatusParameters


class OrderStatus(_Meta):
    type: Literal["order_status"]
    body: TextPart
    action: OrderStatusAction


class ProductAction(_Meta):
    catalog_id: str = Field(min_length=1, max_length=64)
    product_retailer_id: str = Field(min_length=1, max_length=128)


class Product(_Meta):
    type: Literal["product"]
    action: ProductAction


class ProductItem(_Meta):
    product_retailer_id: str = Field(min_length=1, max_length=128)


class ProductSection(_Meta):
    title: str = Field(min_length=1, max_length=24)
    product_items: list[ProductItem] = Field(min_length=1, max_length=30)


class ProductListAction(_Meta):
    catalog_id: str = Field(min_length=1, max_length=64)
    sections: list[ProductSection] = Field(min_length=1, max_length=10)

    @model_validator(mode="after")
    def _at_most_30(self) -> ProductListAction:
        if sum(len(s.product_items) for s in self.sections) > 30:
            raise PydanticCustomError("product_list_size", "a product list holds at most 30 products in all")
        return self


class TextHeader(_Meta):
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=60)


class ProductList(_Meta):
    type: Literal["product_list"]
    header: TextHeader
    body: TextPart
    action: ProductListAction


class CatalogParameters(_Meta):
    thumbnail_product_retailer_id: str | None = Field(default=None, min_length=1)


class CatalogAction(_Meta):
    name: Literal["catalog_message"]
    parameters: CatalogParameters | None = None


class CatalogMessage(_Meta):
    type: Literal["catalog_message"]
    body: TextPart
    action: CatalogAction


class FlowActionPayload(_Meta):
    screen: str = Field(min_length=1, max_length=128)
    data: dict[str, Any] | None = None


class FlowParameters(_Meta):
    """Meta's ``action.parameters`` of a flow message: the Flow by id or name, the button's text,
    and either the first screen (``navigate``) or a call to the Flow's endpoint (``data_exchange``)."""

    flow_message_version: Literal["3"]
    flow_token: str | None = Field(default=None, min_length=1, max_length=512)
    flow_id: str | None = Field(default=None, min_length=1, max_length=64)
    flow_name: str | None = Field(default=None, min_length=1, max_length=200)
    flow_cta: str = Field(min_length=1, max_length=30)
    flow_action: Literal["navigate", "data_exchange"] = "navigate"
    flow_action_payload: FlowActionPayload | None = None
    mode: Literal["draft", "published"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FlowParameters:
        if (self.flow_id is None) == (self.flow_name is None):
            raise PydanticCustomError("flow_ref", "give exactly one of 'flow_id' or 'flow_name'")
        if self.flow_action == "navigate" and self.flow_action_payload is None:
            raise PydanticCustomError("flow_payload", "a 'navigate' flow needs 'flow_action_payload' with its screen")
        if self.flow_action == "data_exchange" and self.flow_action_payload is not None:
            raise PydanticCustomError("flow_payload", "a 'data_exchange' flow takes no 'flow_action_payload'")
        return self


class FlowAction(_Meta):
    name: Literal["flow"]
    parameters: FlowParameters


class FlowMessage(_Meta):
    type: Literal["flow"]
    body: TextPart
    action: FlowAction


_MODELS: dict[str, type[BaseModel]] = {
    "order_details": OrderDetails, "order_status": OrderStatus, "product": Product,
    "product_list": ProductList, "catalog_message": CatalogMessage, "flow": FlowMessage,
}


def interactive_problems(interactive: dict[str, Any], where: str = "interactive") -> list[tuple[str, str]]:
    """(field, reason) for each problem of a commerce interactive object; [] for other types."""
    model = _MODELS.get(str(interactive.get("type")))
    if model is None:
        return []
    return _problems(model, interactive, where)


def template_problems(components: list[dict[str, Any]], where: str = "template.components") -> list[tuple[str, str]]:
    """Problems of the order-details button of a template (``sub_type: order_details``)."""
    found: list[tuple[str, str]] = []
    for n, c in enumerate(components):
        if c.get("type") != "button" or c.get("sub_type") != "order_details":
            continue
        params = c.get("parameters")
        first = params[0] if isinstance(params, list) and params else None
        action = first.get("action") if isinstance(first, dict) else None
        details = action.get("order_details") if isinstance(action, dict) else None
        if not isinstance(details, dict):
            found.append((f"{where}.{n}.parameters.0.action.order_details", "an order_details button needs it"))
            continue
        found += _problems(OrderDetailsParameters, details, f"{where}.{n}.parameters.0.action.order_details")
    return found


def _problems(model: type[BaseModel], data: dict[str, Any], where: str) -> list[tuple[str, str]]:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [(".".join([where, *(str(p) for p in e["loc"])]), e["msg"]) for e in exc.errors()]
    return []
