"""The decision taken before any HTTP call: send what, in which category, or refuse and why.

Pure: every input (windows, catalogue, consent, the clock) is passed in. Whether a send counts
against the portfolio's messaging limit is decided here (``business_initiated``); the count
itself is shared by every replica and taken just after (docs/adr/0115-portfolio-messaging-limit.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from parley_common.contracts import FREE_FORM_TYPES, REPLY_BUTTONS_MAX, TEXT_BODY_MAX, OutboundMessage, TemplateRef

from parley_sender.domain.consent import ConsentState, marketing_undeliverable_to
from parley_sender.domain.standing import NumberStanding
from parley_sender.domain.templates import TemplateCatalogue, TemplateProblem, validate_send
from parley_sender.domain.windows import CUSTOMER_SERVICE, FREE_ENTRY_POINT, ConversationWindows

SERVICE = "service"


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str
    error_code: int | None = None  # the Meta error the send would have caused


@dataclass(frozen=True)
class SendPlan:
    """An allowed send: the Graph API body and what billing needs to know about it."""

    body: dict[str, Any]
    is_template: bool
    category: str  # marketing | utility | authentication | service
    free_window: str | None
    template_name: str | None = None
    template_language: str | None = None
    business_initiated: bool = False  # counts against the portfolio's messaging limit
    used_fallback_template: bool = False
    window_from_reply_reference: bool = False
    preview: str | None = None
    # Cloud API edge: "messages", or "marketing_messages" (the Marketing Messages API) for a
    # marketing template of a tenant that chose it.
    endpoint: str = "messages"


@dataclass(frozen=True)
class SendContext:
    """What the policy needs to know about one send, gathered by the caller."""

    now: datetime
    windows: ConversationWindows = field(default_factory=ConversationWindows)
    # The request replies to an inbound message the window tracker has not seen yet.
    unseen_reply_reference: bool = False
    catalogue: TemplateCatalogue = field(default_factory=TemplateCatalogue)
    consent: ConsentState = field(default_factory=ConsentState)
    language_fallbacks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # The business number's standing as Meta last reported it (quality holds marketing).
    number: NumberStanding = field(default_factory=NumberStanding)
    # The tenant sends marketing templates through the Marketing Messages API.
    marketing_messages_api: bool = False


def decide(msg: OutboundMessage, ctx: SendContext) -> SendPlan | Refusal:
    recipient = msg.recipient
    if not recipient:
        return Refusal("no_recipient", "the request names neither to nor to_user_id", 100)
    at = ctx.now
    csw_open = ctx.windows.csw.is_open(at)
    from_reference = False
    if not csw_open and msg.reply_to_wamid and ctx.unseen_reply_reference:
        # The customer's message exists (the request names it) but the tracker is behind:
        # the reference is the proof (docs/adr/0032-sender-reply-window.md).
        csw_open, from_reference = True, True
    fep_open = ctx.windows.fep.is_open(at)

    if msg.type != "template":
        problem = _free_form_problem(msg)
        if problem is not None:
            return problem
        if csw_open:
            return SendPlan(
                body=_base_body(msg) | {msg.type: dict(msg.content)},
                is_template=False,
                category=SERVICE,
                free_window=FREE_ENTRY_POINT if fep_open else CUSTOMER_SERVICE,
                window_from_reply_reference=from_reference,
            )
        if msg.fallback_template is None:
            return Refusal(
                "outside_customer_service_window",
                "free-form messages need a customer message in the last 24 hours; "
                "send a template or name a fallback_template",
                131047,
            )
        plan = _template_plan(msg, msg.fallback_template, ctx, recipient, csw_open=False, fep_open=fep_open)
        if isinstance(plan, SendPlan):
            return SendPlan(**{**plan.__dict__, "used_fallback_template": True})
        return plan

    if msg.template is None:
        return Refusal("template_missing", "type is template but no template is named", 100)
    return _template_plan(
        msg, msg.template, ctx, recipient, csw_open=csw_open, fep_open=fep_open, from_reference=from_reference
    )


def messaging_limit_reached(limit: int) -> Refusal:
    return Refusal(
        "messaging_limit_reached",
        f"the portfolio reached {limit} unique customers with business-initiated templates in 24 hours",
    )


def _free_form_problem(msg: OutboundMessage) -> Refusal | None:
    if msg.type not in FREE_FORM_TYPES:
        return Refusal("unsupported_type", f"message type {msg.type!r} is not supported", 131051)
    if msg.type == "text":
        body = msg.content.get("body")
        if not isinstance(body, str) or not body:
            return Refusal("invalid_content", "text needs a non-empty body", 100)
        if len(body) > TEXT_BODY_MAX:
            return Refusal("invalid_content", f"text body over {TEXT_BODY_MAX} characters", 100)
    if msg.type == "interactive" and msg.content.get("type") == "button":
        buttons = (msg.content.get("action") or {}).get("buttons") or []
        if not 1 <= len(buttons) <= REPLY_BUTTONS_MAX:
            return Refusal("invalid_content", f"reply buttons: 1 to {REPLY_BUTTONS_MAX}", 100)
    return None


def _base_body(msg: OutboundMessage) -> dict[str, Any]:
    """Meta takes ``to`` for a phone number and ``recipient`` for a business-scoped user id (or a
    parent one); with both, ``to`` wins, so only one is sent."""
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    if msg.to:  # ingest puts the contact's phone number here when Meta shared it (ADR 0117)
        body["to"] = msg.to
    else:
        body["recipient"] = msg.recipient
    body["type"] = msg.type
    if msg.reply_to_wamid:
        body["context"] = {"message_id": msg.reply_to_wamid}
    return body


def _template_plan(
    msg: OutboundMessage,
    ref: TemplateRef,
    ctx: SendContext,
    recipient: str,
    *,
    csw_open: bool,
    fep_open: bool,
    from_reference: bool = False,
) -> SendPlan | Refusal:
    components = [c.model_dump(exclude_none=True) for c in ref.components]
    try:
        template, rendered = validate_send(
            ctx.catalogue, ref.name, ref.language, components, ctx.language_fallbacks
        )
    except TemplateProblem as problem:
        return Refusal(problem.reason, problem.detail, problem.code)
    category = template.pricing_category
    if template.needs_phone_number and not msg.to:
        return Refusal(
            "phone_number_required",
            "one-tap, zero-tap and copy-code authentication templates need the customer's phone number; "
            "this customer is known only by their business-scoped user id",
            131062,
        )
    if category == "marketing":
        if ctx.consent.marketing_stopped:
            return Refusal("marketing_opted_out", "the customer stopped marketing from this business", 131050)
        if marketing_undeliverable_to(recipient):
            return Refusal("marketing_not_delivered_to_us", "Meta does not deliver marketing to US numbers")
        if ctx.number.holds_marketing:
            return Refusal(
                "number_quality_low",
                f"Meta reports this business number's quality as {ctx.number.quality}: marketing templates "
                "are refused until it recovers (send again then)",
            )
    # A reference the window tracker has not seen may be invented: it lets a reply through
    # (Meta judges the window), but only a known inbound message exempts it from the limit.
    business_initiated = not csw_open or from_reference
    template_obj: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if components:
        template_obj["components"] = components
    body = {**_base_body(msg), "type": "template", "template": template_obj}
    free_window = FREE_ENTRY_POINT if fep_open else (CUSTOMER_SERVICE if csw_open else None)
    return SendPlan(
        body=body,
        is_template=True,
        category=category,
        free_window=free_window,
        template_name=template.name,
        template_language=template.language,
        business_initiated=business_initiated,
        window_from_reply_reference=from_reference,
        preview=rendered.text,
        endpoint="marketing_messages" if category == "marketing" and ctx.marketing_messages_api else "messages",
    )
