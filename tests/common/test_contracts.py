from datetime import UTC, datetime

from parley_common.contracts import InboundMessage, MessageStatus, body_hash
from parley_common.redaction import Redactor
from parley_common.topics import ALL_TOPICS


def test_status_event_id_is_wamid_and_status():
    assert MessageStatus.make_event_id("wamid.X", "read") == "wamid.X:read"


def test_body_hash_is_stable_and_order_independent_for_dict_keys():
    assert body_hash({"a": 1, "b": 2}) == body_hash({"b": 2, "a": 1})
    assert body_hash({"a": 1}) != body_hash({"a": 2})


def test_inbound_message_keeps_unknown_type_and_round_trips():
    msg = InboundMessage(event_id="wamid.1", wamid="wamid.1", phone_number_id="1", type="hologram",
                         occurred_at=datetime(2026, 1, 1, tzinfo=UTC), payload={"hologram": {"x": 1}})
    again = InboundMessage.model_validate_json(msg.model_dump_json())
    assert again == msg and again.type == "hologram"


def test_customer_id_prefers_phone_then_bsuid():
    base = dict(event_id="w", wamid="w", phone_number_id="1", type="text", occurred_at=datetime.now(UTC))
    assert InboundMessage(**base, customer_wa_id="15550001", customer_user_id="US.abc").customer_id == "15550001"
    assert InboundMessage(**base, customer_user_id="US.abc").customer_id == "US.abc"


def test_topic_namespace_prefixes_every_name(monkeypatch):
    monkeypatch.setenv("PARLEY_TOPIC_NAMESPACE", "ns1.")
    assert all(t.name == "ns1." + t.base for t in ALL_TOPICS)
    monkeypatch.delenv("PARLEY_TOPIC_NAMESPACE")
    assert {t.name for t in ALL_TOPICS} >= {"wa.messages.in", "wa.statuses", "wa.sends", "wa.deadletter"}


def test_redactor_pseudonymises_phone_numbers_and_sensitive_fields():
    r = Redactor("k")
    text = r.scrub_text("customer +880 1700-000001 wrote")
    assert "1700" not in text and "h:" in text
    assert r.scrub_value("text", "my secret order") != "my secret order"
    assert r.pseudonym("8801700000001") == r.pseudonym("8801700000001")
    assert Redactor("other").pseudonym("8801700000001") != r.pseudonym("8801700000001")


def test_redactor_pseudonymises_contacts_bsuids_and_usernames_like_phone_numbers():
    r = Redactor("k")
    bsuid, username = "BD.71349120865530274", "@rahim.buys"
    # a contact key is a phone number or a BSUID: personal data wherever it is logged
    assert r.scrub_value("contact_id", bsuid) == r.pseudonym(bsuid)
    assert r.scrub_value("absorbed", [bsuid]) == [r.pseudonym(bsuid)]
    assert r.scrub_value("contacts", {bsuid: bsuid}) == {r.pseudonym(bsuid): r.pseudonym(bsuid)}
    text = r.scrub_text(f"contact {bsuid} ({username}) merged")
    assert bsuid not in text and "rahim" not in text and text.count("h:") == 2
