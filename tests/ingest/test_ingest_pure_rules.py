"""Pure rules of ingest: signatures, and what a send request may contain (no infrastructure)."""

from __future__ import annotations

import pytest
from parley_common.meta.signature import find_signing_app, sign, signature_matches
from parley_ingest.domain.send_requests import SendMessageRequest, new_message_id
from pydantic import ValidationError

BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def test_either_of_two_rotating_secrets_verifies_and_others_do_not() -> None:
    old, new = b"old-secret", b"new-secret"
    assert signature_matches(BODY, sign(BODY, old), [old, new])
    assert signature_matches(BODY, sign(BODY, new), [old, new])
    assert not signature_matches(BODY, sign(BODY, b"other"), [old, new])
    assert not signature_matches(BODY + b" ", sign(BODY, old), [old])
    for header in (None, "", "sha1=" + "0" * 40, "sha256=zz", "sha256=" + "0" * 63):
        assert not signature_matches(BODY, header, [old])


def test_app_is_found_by_its_secret_without_an_app_id() -> None:
    apps = {"a": [b"sa"], "b": [b"sb1", b"sb2"]}
    assert find_signing_app(BODY, sign(BODY, b"sb2"), apps) == "b"
    assert find_signing_app(BODY, sign(BODY, b"nobody"), apps) is None


def _req(**fields: object) -> SendMessageRequest:
    return SendMessageRequest.model_validate(
        {"from": "880000000001", "to": "+16505551234", "type": "text", "text": {"body": "hi"}, **fields}
    )


def test_recipient_number_is_normalised_to_e164_digits() -> None:
    assert _req(to="+44 7911 123456").to == "447911123456"
    with pytest.raises(ValidationError, match="not a valid phone number"):
        _req(to="+1555")


def test_cross_field_rules_name_the_field() -> None:
    assert _req().problems() == []
    assert ("to", "give one of 'to' or 'to_user_id', not both") in _req(to_user_id="US.1234").problems()
    nobody = _req(to=None).problems()
    assert nobody == [("to", "give 'to' or 'to_user_id', or 'reply_to' to answer the sender of that message")]
    assert _req(to=None, reply_to="wamid.IN1").problems() == []  # the reply goes to whoever wrote wamid.IN1
    audio = _req(type="audio", text=None)
    assert audio.problems() == [("audio", "a 'audio' message needs the 'audio' object")]
    fields = [f for f, _ in _req(image={"id": "m1"}).problems()]
    assert fields == ["image"]


def test_idempotent_message_ids_are_stable_per_tenant_key_and_position() -> None:
    assert new_message_id("t1", "k", 0) == new_message_id("t1", "k", 0)
    assert (
        len({new_message_id("t1", "k", 0), new_message_id("t2", "k", 0), new_message_id("t1", "k", 1)}) == 3
    )
    assert new_message_id("t1", None, 0) != new_message_id("t1", None, 0)


def test_send_request_with_values_json_cannot_carry_is_a_validation_error_not_a_crash():
    """Found by the OpenAPI fuzz run: a 35-digit integer inside contacts crashed fingerprinting."""
    import pytest
    from parley_ingest.domain.send_requests import SendMessageRequest
    from pydantic import ValidationError

    base = {"from": "99", "type": "contacts", "to": "447911123456"}
    with pytest.raises(ValidationError, match="JSON cannot carry"):
        SendMessageRequest.model_validate({**base, "contacts": [{"n": -114221568902742553052117207089152}]})
    # a lone surrogate (or NUL) is named field by field, as a 422 the caller can act on
    for text in ("\ud937x", "a\x00b"):
        named = SendMessageRequest.model_validate({**base, "contacts": [{"name": text}]})
        assert [field for field, _ in named.problems()] == ["contacts.0.name"]
    ok = SendMessageRequest.model_validate({**base, "contacts": [{"name": {"formatted_name": "Ana"}}]})
    assert ok.fingerprint()
