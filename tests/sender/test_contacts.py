"""One customer, whatever Meta calls them: merging contacts, a BSUID change, and the per-person rules
(window, free entry point, consent, addressing) applied to the merged contact."""

from datetime import UTC, datetime, timedelta

import pytest
from parley_common.contracts import OutboundMessage
from parley_sender.domain.consent import ConsentState
from parley_sender.domain.contacts import (
    Contact,
    NoIdentifier,
    Sighting,
    change_bsuid,
    merge_consent,
    merge_windows,
    resolve,
)
from parley_sender.domain.policy import Refusal, SendContext, SendPlan, decide
from parley_sender.domain.templates import Template, TemplateCatalogue
from parley_sender.domain.windows import FREE_ENTRY_POINT, ConversationWindows

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
PHONE = "447700900123"
BSUID = "GB.13491208655302741918"
NEW_BSUID = "GB.55500011122233344455"
PARENT = "GB.ENT.99887766554433221100"


def test_phone_first_then_a_webhook_with_phone_and_bsuid_completes_the_same_contact() -> None:
    first = resolve([], Sighting(phone=PHONE), T0).contact
    assert first.contact_id == PHONE and first.bsuid is None
    later = resolve([first], Sighting(phone=PHONE, bsuid=BSUID, username="ann"), T0 + H)
    assert not later.merged
    assert later.contact == Contact(PHONE, T0, PHONE, BSUID, None, "ann")


def test_bsuid_first_then_the_phone_number_is_the_same_contact_keyed_by_the_bsuid() -> None:
    first = resolve([], Sighting(bsuid=BSUID, username="ann"), T0).contact
    assert first.contact_id == BSUID and first.phone is None
    assert first.address == ("recipient", BSUID)
    later = resolve([first], Sighting(phone=PHONE, bsuid=BSUID), T0 + H).contact
    assert (later.contact_id, later.phone, later.bsuid, later.username) == (BSUID, PHONE, BSUID, "ann")
    assert later.address == ("to", PHONE)


def test_two_contacts_named_by_one_webhook_are_merged_into_the_older() -> None:
    by_phone = resolve([], Sighting(phone=PHONE), T0).contact
    by_user = resolve([], Sighting(bsuid=BSUID, parent_bsuid=PARENT, username="ann"), T0 + H).contact
    merged = resolve([by_user, by_phone], Sighting(phone=PHONE, bsuid=BSUID), T0 + 2 * H)
    assert merged.absorbed == (BSUID,)
    assert merged.contact == Contact(PHONE, T0, PHONE, BSUID, PARENT, "ann")


def test_a_bsuid_change_moves_the_contact_and_keeps_its_key() -> None:
    contact = resolve([], Sighting(bsuid=BSUID), T0).contact
    moved = change_bsuid(contact, BSUID, NEW_BSUID)
    assert (moved.contact_id, moved.bsuid) == (BSUID, NEW_BSUID)
    assert moved.address == ("recipient", NEW_BSUID)
    # The next webhook carries only the new id: it finds the same contact.
    again = resolve([moved], Sighting(bsuid=NEW_BSUID), T0 + H)
    assert again.contact.contact_id == BSUID and not again.merged
    # A change naming another id leaves the contact alone.
    assert change_bsuid(moved, "GB.1", "GB.2") == moved


def test_a_sighting_naming_nobody_is_refused() -> None:
    with pytest.raises(NoIdentifier):
        resolve([], Sighting(username="ann"), T0)


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


def _to_user(kind: str = "text", name: str | None = None) -> OutboundMessage:
    extra = (
        {"template": {"name": name, "language": "en", "components": PARAMS}}
        if kind == "template"
        else {"content": {"body": "hi"}}
    )
    return OutboundMessage(
        event_id="m", message_id="m", phone_number_id="pn1", occurred_at=T0, to_user_id=BSUID, type=kind, **extra
    )


def test_the_window_opened_by_phone_lets_a_reply_to_the_bsuid_go_out_to_the_phone_number() -> None:
    by_phone = ConversationWindows().observe_inbound(T0, from_referral=False)
    by_user = ConversationWindows()
    contact = Contact(PHONE, T0, PHONE, BSUID)
    at = T0 + 2 * H
    refused = decide(_to_user(), SendContext(now=at, windows=by_user, catalogue=CATALOGUE))
    assert isinstance(refused, Refusal) and refused.reason == "outside_customer_service_window"
    windows = merge_windows(by_user, by_phone)
    plan = decide(_to_user(), SendContext(now=at, windows=windows, catalogue=CATALOGUE, contact=contact))
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
        _to_user("template", "promo"),
        SendContext(now=T0 + 2 * H, catalogue=CATALOGUE, consent=consent, contact=Contact(PHONE, T0, PHONE, BSUID)),
    )
    assert isinstance(out, Refusal) and out.reason == "marketing_opted_out"
    resumed = ConsentState().apply("resume", T0 + 3 * H, "keyword")
    assert not merge_consent(stopped, resumed).marketing_stopped
    assert merge_consent(resumed, stopped) == resumed


def test_an_authentication_template_to_the_bsuid_goes_out_when_the_contact_has_the_phone_number() -> None:
    msg = _to_user("template", "copy_code")
    alone = decide(msg, SendContext(now=T0, catalogue=CATALOGUE, contact=Contact(BSUID, T0, None, BSUID)))
    assert isinstance(alone, Refusal) and alone.error_code == 131062
    known = decide(msg, SendContext(now=T0, catalogue=CATALOGUE, contact=Contact(BSUID, T0, PHONE, BSUID)))
    assert isinstance(known, SendPlan) and known.body["to"] == PHONE
