"""Every per-person rule keys on the contact ingest decided (ADR 0117), whatever address an event
names; an event without a contact (an older producer) keys on its phone number, else its BSUID."""

from datetime import UTC, datetime

from parley_common.contracts import InboundMessage, MessageStatus, OutboundMessage

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PHONE, BSUID = "8801712345678", "BD.71349120865530274"


def test_inbound_status_and_request_of_one_contact_share_one_key() -> None:
    by_user = InboundMessage(event_id="w1", phone_number_id="pn", occurred_at=AT, wamid="w1", type="text",
                             customer_user_id=BSUID, contact_id=BSUID)
    by_phone = InboundMessage(event_id="w2", phone_number_id="pn", occurred_at=AT, wamid="w2", type="text",
                              customer_wa_id=PHONE, customer_user_id=BSUID, contact_id=BSUID)
    status = MessageStatus(event_id="s:read", phone_number_id="pn", occurred_at=AT, wamid="s", status="read",
                           recipient_id=PHONE, contact_id=BSUID)
    request = OutboundMessage(event_id="m", message_id="m", phone_number_id="pn", occurred_at=AT, type="text",
                              to=PHONE, contact_id=BSUID)
    assert by_user.customer_id == by_phone.customer_id == status.customer_id == request.customer_id == BSUID
    assert request.recipient == PHONE  # the address stays what Meta is asked to send to


def test_without_a_contact_the_key_is_the_phone_number_else_the_bsuid() -> None:
    legacy = InboundMessage(event_id="w", phone_number_id="pn", occurred_at=AT, wamid="w", type="text",
                            customer_wa_id=PHONE, customer_user_id=BSUID)
    assert legacy.customer_id == PHONE
    request = OutboundMessage(event_id="m", message_id="m", phone_number_id="pn", occurred_at=AT, type="text",
                              to_user_id=BSUID)
    assert request.customer_id == BSUID
