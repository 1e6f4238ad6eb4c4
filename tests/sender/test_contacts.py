"""One customer, whatever Meta calls them: the sender's per-person rules (window, free entry point,
consent, addressing) applied to a merged contact (ADR 0117)."""

from datetime import UTC, datetime, timedelta

from parley_common.contracts import OutboundMessage
from parley_sender.domain.consent import ConsentState
from parley_sender.domain.contacts import merge_consent, merge_windows
from parley_sender.domain.policy import Refusal, SendContext, SendPlan, decide
from parley_sender.domain.templates import Template, TemplateCatalogue
from parley_sender.domain.windows import FREE_ENTRY_POINT, ConversationWindows

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
PHONE = "447700900123"
BSUID = "GB.13491208655302741918"


# --- the rules, keyed by the merged contact ----------------------------------------------

CATALOGUE = TemplateCatalogue.of(
    [
        Template("promo", "en", "MARKETING", "APPROVED", ({"type": "BODY", "text": "Sale {{1}}"},)),
        Template(
            "copy_code",
            "en",
            "AUTHENTICATION",
            "APPROVED",
            (
                {"type": "BODY", "text": "{{1}} is your code"},
                {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy"}]},
            ),
        ),
    ]
)
PARAMS = [{"type": "body", "parameters": [{"type": "text", "text": "1"}]}]


def _to_user(kind: str = "text", name: str | None = None, phone: str | None = None) -> OutboundMessage:
    """A request naming the BSUID; ingest adds the contact's phone number (``to``) when Meta shared it."""
    extra = (
        {"template": {"name": name, "language": "en", "components": PARAMS}}
        if kind == "template"
        else {"content": {"body": "hi"}}
    )
    return OutboundMessage(
        event_id="m", message_id="m", phone_number_id="pn1", occurred_at=T0, to_user_id=BSUID, to=phone,
        contact_id=BSUID, type=kind, **extra
    )


def test_the_window_opened_by_phone_lets_a_reply_to_the_bsuid_go_out_to_the_phone_number() -> None:
    by_phone = ConversationWindows().observe_inbound(T0, from_referral=False)
    by_user = ConversationWindows()
    at = T0 + 2 * H
    refused = decide(_to_user(), SendContext(now=at, windows=by_user, catalogue=CATALOGUE))
    assert isinstance(refused, Refusal) and refused.reason == "outside_customer_service_window"
    windows = merge_windows(by_user, by_phone)
    plan = decide(_to_user(phone=PHONE), SendContext(now=at, windows=windows, catalogue=CATALOGUE))
    assert isinstance(plan, SendPlan) and plan.body["to"] == PHONE and "recipient" not in plan.body


def test_a_free_entry_point_started_under_one_identifier_holds_for_the_contact() -> None:
    ad = ConversationWindows().observe_inbound(T0, from_referral=True)
    started = type(ad)(ad.csw, ad.fep.on_send(T0 + H))
    windows = merge_windows(ConversationWindows(), started)
    assert windows.free_window(T0 + 30 * H) == FREE_ENTRY_POINT
    assert merge_windows(started, ConversationWindows()) == windows


def test_a_stop_given_under_the_bsuid_stops_marketing_to_the_phone_number_and_the_latest_word_wins() -> None:
    stopped = ConsentState().apply("stop", T0 + H, "button")
    consent = merge_consent(ConsentState(), stopped)
    out = decide(
        _to_user("template", "promo", phone=PHONE),
        SendContext(now=T0 + 2 * H, catalogue=CATALOGUE, consent=consent),
    )
    assert isinstance(out, Refusal) and out.reason == "marketing_opted_out"
    resumed = ConsentState().apply("resume", T0 + 3 * H, "keyword")
    assert not merge_consent(stopped, resumed).marketing_stopped
    assert merge_consent(resumed, stopped) == resumed


def test_an_authentication_template_to_the_bsuid_goes_out_when_the_contact_has_the_phone_number() -> None:
    alone = decide(_to_user("template", "copy_code"), SendContext(now=T0, catalogue=CATALOGUE))
    assert isinstance(alone, Refusal) and alone.error_code == 131062
    known = decide(_to_user("template", "copy_code", phone=PHONE), SendContext(now=T0, catalogue=CATALOGUE))
    assert isinstance(known, SendPlan) and known.body["to"] == PHONE
