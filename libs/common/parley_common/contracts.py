"""Event contracts of every Kafka topic (docs/ARCHITECTURE.md, "Contracts").

Every record is one pydantic model with a ``schema_version``, a deterministic ``event_id``
(Meta's wamid for a message, ``wamid:status`` for a status, a hash of the body otherwise),
event time (``occurred_at``) and processing time (``received_at``).

Meta adds fields and enum values often: unknown fields are kept (``extra="allow"`` on the
shapes that mirror Meta's), and enum-like fields are plain strings with the known values
listed as constants, so a new value never fails validation.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def body_hash(*parts: object) -> str:
    """A stable id for records that have no natural id of Meta's: sha256 of canonical JSON."""
    canonical = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()[:32]


class Event(BaseModel):
    """Fields every record carries.

    ``tenant_id`` is decided once, where the event enters Parley, by what was verified: the Meta
    app whose secret matched the webhook's signature (a number of a tenant of that app), or the
    API key of a send request. ``tenant_source`` says which (``meta_app:<app id>``,
    ``api_key:<key id>``); records derived from an event carry the tenant and source of the
    event they came from. Consumers act on ``tenant_id`` as given and never re-derive a tenant
    from a phone number or WABA (``TenantDirectory.resolve``; docs/adr/0100-tenant-binding.md).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = 1
    event_id: str
    tenant_id: str | None = None
    phone_number_id: str
    occurred_at: datetime
    received_at: datetime = Field(default_factory=utcnow)
    tenant_source: str | None = None

    @property
    def event_time(self) -> datetime:
        """``occurred_at`` as far as it can be believed (``believable_time``); rules that order
        events by time ("the later consent wins", windows) use this."""
        return believable_time(self.occurred_at, self.received_at)


def believable_time(claimed: datetime, received_at: datetime) -> datetime:
    """A timestamp someone else wrote, never later than when Parley received it: a time in the
    future (a STOP dated 2100) must not win every "later one wins" comparison. No allowance for
    clock skew: a sender's clock ahead of ours only makes its event count as of its receipt."""
    return received_at if claimed > received_at else claimed


class MetaShape(BaseModel):
    """A sub-object mirroring Meta's JSON: unknown fields are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")


# ``notes`` on the records made from Meta's webhooks say what the normaliser could not take as
# Meta sent it: a field kept raw (``pricing.billable: Input should be a valid boolean; kept raw
# as raw_billable``), or a fallback (``timestamp missing; occurred_at is the receive time``).
# Field paths and reasons only, never the values.


# --- wa.messages.in ------------------------------------------------------------------------

MESSAGE_TYPES = (
    "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
    "reaction", "interactive", "button", "order", "system", "unsupported",
)


class Referral(MetaShape):
    """A click-to-WhatsApp ad (or Page CTA) that started the conversation."""

    source_url: str | None = None
    source_id: str | None = None
    source_type: str | None = None  # "ad", "post", ...
    body: str | None = None
    headline: str | None = None
    media_type: str | None = None
    ctwa_clid: str | None = None


class MessageContext(MetaShape):
    # by name too, so the record read back from Kafka (dumped by field name) keeps its values
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    message_id: str | None = Field(default=None, validation_alias="id")
    sender: str | None = Field(default=None, validation_alias="from")
    forwarded: bool | None = None


class MetaError(MetaShape):
    code: int
    title: str | None = None
    message: str | None = None
    details: str | None = None
    href: str | None = None


class InboundMessage(Event):
    """A customer's message to a business number (event_id = wamid)."""

    waba_id: str | None = None
    display_phone_number: str | None = None
    wamid: str
    customer_wa_id: str | None = None  # phone number; absent for username-only users
    customer_user_id: str | None = None  # business-scoped user id (BSUID)
    customer_parent_user_id: str | None = None
    customer_username: str | None = None
    # The customer's contact in the tenant (docs/adr/0117-contacts.md), decided by ingest from
    # every identifier Meta sent; every rule about a person keys on it.
    contact_id: str | None = None
    profile_name: str | None = None
    type: str  # one of MESSAGE_TYPES, or a value Meta added later
    text: str | None = None  # text body, caption, or the title of a reply
    interactive_reply_id: str | None = None  # button_reply/list_reply id
    button_payload: str | None = None  # template quick-reply payload
    context: MessageContext | None = None
    referral: Referral | None = None
    errors: list[MetaError] = Field(default_factory=list)
    payload: dict[str, Any] = Field(default_factory=dict)  # the type object as Meta sent it
    notes: list[str] = Field(default_factory=list)  # what could not be normalised (see above)

    @property
    def has_sender(self) -> bool:
        return bool(self.customer_wa_id or self.customer_user_id)

    @property
    def customer_id(self) -> str:
        """The identity to key per-customer state on: the contact, else phone number, else BSUID.

        A message Meta sent without any sender is its own customer (``no-sender:<wamid>``), so
        two such messages never share a window, a consent state or a pair-rate budget.
        """
        return self.contact_id or self.customer_wa_id or self.customer_user_id or f"no-sender:{self.wamid}"


# --- wa.statuses ---------------------------------------------------------------------------

STATUS_ORDER = {"sent": 1, "delivered": 2, "read": 3, "played": 4, "failed": 5}


class Pricing(MetaShape):
    billable: bool | None = None
    pricing_model: str | None = None  # "CBP" | "PMP"
    type: str | None = None  # regular | free_customer_service | free_entry_point
    category: str | None = None


class Conversation(MetaShape):
    id: str | None = None
    expiration_timestamp: str | None = None
    origin_type: str | None = None


class MessageStatus(Event):
    """A delivery status of a business message (event_id = ``wamid:status``)."""

    waba_id: str | None = None
    wamid: str
    status: str  # sent | delivered | read | failed | played | (new values kept)
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    recipient_parent_user_id: str | None = None
    contact_id: str | None = None  # the recipient's contact in the tenant (ADR 0117)
    biz_opaque_callback_data: str | None = None
    pricing: Pricing | None = None
    conversation: Conversation | None = None
    errors: list[MetaError] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # what could not be normalised (see above)

    @staticmethod
    def make_event_id(wamid: str, status: str) -> str:
        return f"{wamid}:{status}"

    @property
    def customer_id(self) -> str | None:
        """The recipient's contact, else the phone number or BSUID the status names."""
        return self.contact_id or self.recipient_id or self.recipient_user_id


# --- wa.account.events ---------------------------------------------------------------------

class AccountEvent(Event):
    """Every non-message webhook field (template status, quality, user preferences, ...).

    ``phone_number_id`` is the number the event concerns when Meta names one, else the WABA
    id (so the record still has a key). ``kind`` is Meta's field name, or ``consent`` for a
    consent change decided by Parley (router opt-outs, 131050).
    """

    waba_id: str | None = None
    kind: str
    value: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)  # what could not be normalised (see above)
    # The contact of each customer identifier the event names (``user_preferences``,
    # ``user_id_update``), added by ingest (ADR 0117).
    contacts: dict[str, str] = Field(default_factory=dict)


class ContactMerged(Event):
    """Two or more contacts of a tenant turned out to be one person (on wa.account.events).

    Ingest decided it (a webhook named identifiers held by different contacts; ADR 0117): every
    service folds the state it keeps under an ``absorbed`` key into ``contact_id``. event_id is a
    hash of (tenant, contact, absorbed), so a repeat is recognised.
    """

    kind: Literal["contact_merged"] = "contact_merged"
    contact_id: str
    absorbed: list[str]


class ConsentChange(Event):
    """A customer stopped or resumed marketing from a business (on wa.account.events).

    event_id is a hash of (tenant, customer, action, source event).
    """

    kind: Literal["consent"] = "consent"
    customer_id: str
    category: str = "marketing"
    action: Literal["stop", "resume"]
    source: str  # router_keyword | quick_reply | user_preferences | error_131050


# --- wa.commerce ---------------------------------------------------------------------------
# Payment updates and inbound carts (docs/adr/0110-commerce-placement.md). Both keep what Meta
# sent: the typed fields are read from it, the whole object travels beside them.

class Amount(MetaShape):
    """Meta's exact amount: ``value`` in units of 1/``offset`` (45000 with offset 100 is 450.00)."""

    value: int
    offset: int = 100

    def exact(self) -> Decimal:
        return Decimal(self.value) / Decimal(self.offset)


class PaymentRefund(MetaShape):
    id: str | None = None
    status: str | None = None  # pending | success | failed | (new values kept)
    amount: Amount | None = None
    currency: str | None = None


class PaymentTransaction(MetaShape):
    id: str | None = None
    type: str | None = None  # the gateway or method family (razorpay, payu, pix, ...)
    status: str | None = None  # pending | success | failed | (new values kept)
    amount: Amount | None = None
    currency: str | None = None
    method: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    refunds: list[PaymentRefund] = Field(default_factory=list)


class PaymentUpdate(Event):
    """A payment of an ``order_details`` request changed (``statuses[]`` with ``type: payment``).

    Not a message status. ``event_id`` is ``payment:`` and a hash of the status object, so a
    redelivery has the same id and every later update (a refund, a retry) a new one.
    """

    kind: Literal["payment"] = "payment"
    waba_id: str | None = None
    payment_id: str | None = None  # the status object's ``id``
    reference_id: str
    status: str  # captured | pending | failed | (new values kept)
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    amount: Amount | None = None
    currency: str | None = None
    transactions: list[PaymentTransaction] = Field(default_factory=list)
    payment: dict[str, Any] = Field(default_factory=dict)  # ``payment`` as Meta sent it
    status_object: dict[str, Any] = Field(default_factory=dict)  # the whole status as Meta sent it

    @staticmethod
    def make_event_id(status_object: dict[str, Any]) -> str:
        return "payment:" + body_hash(status_object)


class CartItem(MetaShape):
    product_retailer_id: str
    quantity: int
    item_price: Decimal
    currency: str


class OrderCart(Event):
    """A customer sent a cart from a catalog (an inbound ``order`` message; event_id ``cart:<wamid>``).

    The same message also goes to wa.messages.in as an ``InboundMessage`` (it opens the window).
    """

    kind: Literal["cart"] = "cart"
    waba_id: str | None = None
    wamid: str
    customer_wa_id: str | None = None
    customer_user_id: str | None = None
    catalog_id: str | None = None
    text: str | None = None
    product_items: list[CartItem] = Field(default_factory=list)
    referral: Referral | None = None
    order: dict[str, Any] = Field(default_factory=dict)  # ``order`` as Meta sent it

    @staticmethod
    def make_event_id(wamid: str) -> str:
        return f"cart:{wamid}"

    def total(self) -> Decimal:
        return sum((i.item_price * i.quantity for i in self.product_items), Decimal(0))


# --- wa.messages.out -----------------------------------------------------------------------

# The send contract: what Parley sends, one home for every service (docs/adr/0007). Ingest
# refuses anything else at the door; the sender checks requests again (the router's, billing's and
# replayed ones did not come through ingest) and refuses with Meta's code. The simulator keeps its
# own copy on purpose: it stands for Meta, and must not agree with Parley by construction.
SendType = Literal[
    "text", "image", "video", "audio", "document", "sticker", "location", "contacts", "interactive",
    "template", "reaction",
]
SEND_TYPES: tuple[str, ...] = get_args(SendType)
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
FREE_FORM_TYPES = frozenset(SEND_TYPES) - {"template"}  # allowed only inside the customer-service window
TEXT_BODY_MAX = 4096  # characters of a text message's body
REPLY_BUTTONS_MAX = 3  # reply buttons of an interactive "button" message
# Served in this order when a number's throughput is short: replies first, marketing last.
SendPriority = Literal["reply", "authentication", "utility", "marketing"]
SEND_PRIORITIES: tuple[str, ...] = get_args(SendPriority)


class OrderEvent(Event):
    """An order entered a state, as billing folded it (``wa.orders``; ADR 0113).

    ``type`` is ``order.requested``, ``order.payment_pending``, ``order.payment_captured``,
    ``order.payment_failed``, ``order.shipped``, ``order.completed``, ``order.canceled`` or
    ``order.refunded`` (each refund, partial or full). ``event_id`` is a hash of the tenant, the
    reference id, the state and the amount refunded, so the same change seen twice is one event.
    ``order`` is the whole order as ``GET /v1/orders/{reference_id}`` shows it (without fees).
    """

    kind: Literal["order"] = "order"
    type: str
    reference_id: str
    state: str
    payment_status: str | None = None
    ctwa_clid: str | None = None
    order: dict[str, Any] = Field(default_factory=dict)


class TemplateParameter(MetaShape):
    type: str = "text"
    text: str | None = None
    parameter_name: str | None = None


class TemplateComponent(MetaShape):
    type: str  # header | body | button
    sub_type: str | None = None
    index: str | int | None = None
    parameters: list[dict[str, Any]] = Field(default_factory=list)


class TemplateRef(MetaShape):
    name: str
    language: str
    components: list[TemplateComponent] = Field(default_factory=list)


class OutboundMessage(Event):
    """A request to send one message (event_id = Parley's message id, the request id)."""

    message_id: str
    to: str | None = None  # customer's phone number (E.164 without +) ...
    to_user_id: str | None = None  # ... or BSUID
    contact_id: str | None = None  # the customer's contact in the tenant, set by ingest (ADR 0117)
    type: str  # one of SEND_TYPES (a string, so a request of another type is refused, not undecodable)
    content: dict[str, Any] = Field(default_factory=dict)  # the type object for Meta
    template: TemplateRef | None = None
    fallback_template: TemplateRef | None = None
    reply_to_wamid: str | None = None
    priority: str = "reply"  # one of SEND_PRIORITIES
    biz_opaque_callback_data: str | None = None
    origin: str = "api"  # api | router | campaign | replay
    attempt: int = 0
    not_before: datetime | None = None  # retry scheduling

    @property
    def recipient(self) -> str:
        """Whom Meta is asked to send to (the address)."""
        return self.to or self.to_user_id or ""

    @property
    def customer_id(self) -> str:
        """Whom the per-person rules are about: the contact, else the address."""
        return self.contact_id or self.to or self.to_user_id or ""


# --- wa.messages.routed --------------------------------------------------------------------

class RouteDestination(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str  # agent_queue | auto_reply | tenant_webhook | consent | none
    target: str | None = None  # topic, template name or URL


class RoutedMessage(Event):
    """The router's decision for one inbound message (event_id = wamid)."""

    wamid: str
    customer_id: str
    intent: str
    confidence: float
    language: str | None = None
    rule: str
    destination: RouteDestination
    signal: str  # interactive | quick_reply | keyword | referral | classifier


class AgentTask(Event):
    """A customer message waiting for a human agent (on wa.agents; event_id = wamid).

    Agents' tools filter on ``tenant_id``, ``skill`` and ``language`` (also sent as headers
    ``x-parley-tenant``, ``x-parley-skill``, ``x-parley-language``).
    """

    wamid: str
    customer_id: str
    skill: str
    language: str | None = None
    intent: str
    confidence: float
    reason: str  # rule | low_confidence | out_of_scope | human_agent
    text: str | None = None
    profile_name: str | None = None


# --- wa.sends ------------------------------------------------------------------------------

class SendResult(Event):
    """What happened to one OutboundMessage (event_id = ``message_id:outcome``)."""

    message_id: str
    outcome: str  # accepted | refused | failed
    wamid: str | None = None
    recipient: str | None = None
    is_template: bool = False
    template_name: str | None = None
    category: str | None = None  # marketing | utility | authentication | service
    free_window: str | None = None  # customer_service | free_entry_point | None
    reason: str | None = None
    error_code: int | None = None
    attempt: int = 0
    # The Cloud API call's span, as a W3C traceparent value: a reference kept with the wamid so that
    # the message's later statuses and its billing link to the send (docs/adr/0090-span-links-by-wamid.md).
    # Not trace propagation (that travels in headers): set only when the send span was sampled.
    send_span: str | None = None


# --- dead letters --------------------------------------------------------------------------

class DeadLetter(BaseModel):
    """A record that could not be handled, with why; replayable onto ``source_topic``."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    event_id: str
    service: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    key: str | None = None
    reason: str
    error_type: str
    attempts: int = 1
    payload: str  # the original record value, utf-8 (base64 if it was not utf-8)
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    headers: dict[str, str] = Field(default_factory=dict)
    failed_at: datetime = Field(default_factory=utcnow)


# --- helpers shared by producers -----------------------------------------------------------

def from_unix(ts: str | int | float | None) -> datetime:
    if ts is None or ts == "":
        return utcnow()
    return datetime.fromtimestamp(int(float(ts)), tz=UTC)
