from datetime import UTC, datetime, timedelta
from typing import Any

from parley_common.contracts import OutboundMessage
from parley_sender.domain.consent import ConsentState
from parley_sender.domain.policy import Refusal, SendContext, SendPlan, decide
from parley_sender.domain.templates import Template, TemplateCatalogue
from parley_sender.domain.windows import ConversationWindows

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
UK = "442071234567"
US = "16505551234"


def _tpl(name: str, category: str) -> Template:
    return Template(
        name=name,
        language="en",
        category=category,
        status="APPROVED",
        components=({"type": "BODY", "text": "Hello {{1}}"},),
    )


def _otp(name: str, otp_type: str) -> Template:
    return Template(
        name=name,
        language="en",
        category="AUTHENTICATION",
        status="APPROVED",
        components=(
            {"type": "BODY", "text": "{{1}} is your code"},
            {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": otp_type, "text": "Copy"}]},
        ),
    )


CATALOGUE = TemplateCatalogue.of(
    [
        _tpl("promo", "MARKETING"),
        _tpl("shipping", "UTILITY"),
        _tpl("login", "AUTHENTICATION"),
        _otp("copy_code", "COPY_CODE"),
        _otp("one_tap", "ONE_TAP"),
        _otp("zero_tap", "ZERO_TAP"),
    ]
)
BSUID = "GB.13491208655302741918"
PARAMS = [{"type": "body", "parameters": [{"type": "text", "text": "Ann"}]}]
OPEN = ConversationWindows().observe_inbound(NOW - 2 * H, from_referral=False)
CLOSED = ConversationWindows().observe_inbound(NOW - 30 * H, from_referral=False)


def _text(**kw: Any) -> OutboundMessage:
    return OutboundMessage(
        event_id="m1",
        message_id="m1",
        phone_number_id="pn1",
        occurred_at=NOW,
        to=kw.pop("to", UK),
        type="text",
        content={"body": "hi"},
        **kw,
    )


def _template(name: str, to: str = UK, **kw: Any) -> OutboundMessage:
    return OutboundMessage(
        event_id="m2",
        message_id="m2",
        phone_number_id="pn1",
        occurred_at=NOW,
        to=to,
        type="template",
        template={"name": name, "language": "en", "components": PARAMS},
        **kw,
    )


def _ctx(windows: ConversationWindows = OPEN, **kw: Any) -> SendContext:
    return SendContext(now=NOW, windows=windows, catalogue=CATALOGUE, **kw)


def test_free_form_inside_window_is_sent_as_service() -> None:
    plan = decide(_text(reply_to_wamid="wamid.in"), _ctx())
    assert isinstance(plan, SendPlan)
    assert (plan.category, plan.free_window, plan.is_template) == ("service", "customer_service", False)
    assert plan.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": UK,
        "type": "text",
        "text": {"body": "hi"},
        "context": {"message_id": "wamid.in"},
    }


def test_free_form_reply_outside_window_is_refused_with_131047_reason() -> None:
    out = decide(_text(), _ctx(CLOSED))
    assert isinstance(out, Refusal)
    assert (out.reason, out.error_code) == ("outside_customer_service_window", 131047)


def test_free_form_outside_window_sends_the_named_fallback_template() -> None:
    msg = _text(fallback_template={"name": "shipping", "language": "en", "components": PARAMS})
    plan = decide(msg, _ctx(CLOSED))
    assert isinstance(plan, SendPlan)
    assert plan.used_fallback_template and plan.is_template and plan.category == "utility"
    assert plan.body["type"] == "template" and plan.body["template"]["name"] == "shipping"
    assert plan.business_initiated and plan.free_window is None


def test_reply_naming_an_inbound_the_tracker_has_not_seen_is_never_refused() -> None:
    plan = decide(_text(reply_to_wamid="wamid.new"), _ctx(ConversationWindows(), unseen_reply_reference=True))
    assert isinstance(plan, SendPlan)
    assert plan.window_from_reply_reference and plan.free_window == "customer_service"


def test_seen_reference_does_not_override_a_closed_window() -> None:
    out = decide(_text(reply_to_wamid="wamid.old"), _ctx(CLOSED, unseen_reply_reference=False))
    assert isinstance(out, Refusal)


def test_templates_are_allowed_outside_the_window() -> None:
    plan = decide(_template("shipping"), _ctx(CLOSED))
    assert isinstance(plan, SendPlan)
    assert plan.category == "utility" and plan.free_window is None and plan.business_initiated
    assert plan.preview == "Hello Ann"


def test_utility_template_inside_window_reports_the_free_window() -> None:
    plan = decide(_template("shipping"), _ctx(OPEN))
    assert isinstance(plan, SendPlan) and plan.free_window == "customer_service"
    assert not plan.business_initiated


def test_free_entry_point_is_reported_for_an_ad_conversation() -> None:
    windows = ConversationWindows().observe_inbound(NOW - H, from_referral=True)
    plan = decide(_template("login"), _ctx(windows))
    assert isinstance(plan, SendPlan) and plan.free_window == "free_entry_point"


def test_template_problem_becomes_a_refusal_with_its_code() -> None:
    out = decide(_template("missing"), _ctx())
    assert isinstance(out, Refusal) and out.error_code == 132001


def test_opted_out_customer_gets_no_marketing_but_still_gets_utility() -> None:
    stopped = ConsentState(marketing_stopped=True, changed_at=NOW, source="user_preferences")
    out = decide(_template("promo"), _ctx(consent=stopped))
    assert isinstance(out, Refusal) and out.reason == "marketing_opted_out"
    assert isinstance(decide(_template("shipping"), _ctx(consent=stopped)), SendPlan)
    assert isinstance(decide(_template("login"), _ctx(consent=stopped)), SendPlan)


def test_marketing_to_us_numbers_is_refused() -> None:
    out = decide(_template("promo", to=US), _ctx())
    assert isinstance(out, Refusal) and out.reason == "marketing_not_delivered_to_us"
    assert isinstance(decide(_template("shipping", to=US), _ctx()), SendPlan)


def test_only_templates_outside_a_window_count_against_the_messaging_limit() -> None:
    closed = decide(_template("shipping"), _ctx(CLOSED))
    assert isinstance(closed, SendPlan) and closed.business_initiated
    # Inside the customer's window the message is not business-initiated: no limit applies.
    inside = decide(_template("shipping"), _ctx(OPEN))
    assert isinstance(inside, SendPlan) and not inside.business_initiated


def test_a_reply_reference_the_tracker_has_not_seen_does_not_exempt_a_template_from_the_limit() -> None:
    # The reference may be invented: the reply goes out (Meta judges the window), and counts.
    plan = decide(
        _template("shipping", reply_to_wamid="wamid.unseen"), _ctx(CLOSED, unseen_reply_reference=True)
    )
    assert isinstance(plan, SendPlan) and plan.window_from_reply_reference and plan.business_initiated


def test_invalid_free_form_content_is_refused() -> None:
    msg = OutboundMessage(
        event_id="m",
        message_id="m",
        phone_number_id="pn1",
        occurred_at=NOW,
        to=UK,
        type="text",
        content={"body": "x" * 4097},
    )
    assert isinstance(decide(msg, _ctx()), Refusal)
    no_recipient = OutboundMessage(
        event_id="m",
        message_id="m",
        phone_number_id="pn1",
        occurred_at=NOW,
        type="text",
        content={"body": "x"},
    )
    out = decide(no_recipient, _ctx())
    assert isinstance(out, Refusal) and out.reason == "no_recipient"


def test_a_customer_known_by_phone_number_is_addressed_with_to_and_by_bsuid_only_with_recipient() -> None:
    by_phone = decide(_text(), _ctx())
    assert isinstance(by_phone, SendPlan) and by_phone.body["to"] == UK and "recipient" not in by_phone.body
    by_bsuid = decide(_text(to=None, to_user_id=BSUID), _ctx())
    assert isinstance(by_bsuid, SendPlan) and by_bsuid.body["recipient"] == BSUID and "to" not in by_bsuid.body
    parent = "GB.ENT.99887766554433221100"
    tpl = decide(_template("shipping", to=None, to_user_id=parent), _ctx(CLOSED))
    assert isinstance(tpl, SendPlan) and tpl.body["recipient"] == parent and "to" not in tpl.body


def test_authentication_templates_that_need_a_phone_number_are_refused_for_bsuid_only_customers() -> None:
    for name in ("copy_code", "one_tap", "zero_tap"):
        out = decide(_template(name, to=None, to_user_id=BSUID), _ctx(CLOSED))
        assert isinstance(out, Refusal), name
        assert (out.reason, out.error_code) == ("phone_number_required", 131062)
        assert isinstance(decide(_template(name), _ctx(CLOSED)), SendPlan)  # with the phone number
    # An authentication template without a one-tap, zero-tap or copy-code button goes out.
    assert isinstance(decide(_template("login", to=None, to_user_id=BSUID), _ctx(CLOSED)), SendPlan)
