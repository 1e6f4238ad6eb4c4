"""The Flows endpoint's cryptography (pure): Meta's request format both ways, key rotation."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from parley_ingest.domain.flows import (
    FlowDecryptError,
    builtin_answer,
    decrypt_request,
    decrypt_response,
    encrypt_request,
    encrypt_response,
    inverted,
)

from .conftest import FLOW_KEY, FLOW_OLD_KEY, STRANGER_KEY

PAYLOAD = {"version": "3.0", "action": "INIT", "flow_token": "tok-1", "screen": "", "data": {}}


def test_a_request_encrypted_as_meta_does_decrypts_and_the_answer_uses_the_inverted_iv() -> None:
    aes_key, iv = os.urandom(16), os.urandom(16)
    body = encrypt_request(PAYLOAD, FLOW_KEY.public_key(), aes_key, iv)
    req = decrypt_request(body, [FLOW_KEY])
    assert req.payload == PAYLOAD and req.aes_key == aes_key and req.iv == iv and req.action == "INIT"
    answer = encrypt_response({"screen": "TRIPS", "data": {}}, req.aes_key, req.iv)
    assert decrypt_response(answer, aes_key, iv) == {"screen": "TRIPS", "data": {}}
    assert inverted(iv) == bytes(255 - b for b in iv)
    with pytest.raises(InvalidTag):  # the request's own IV does not open the answer
        AESGCM(aes_key).decrypt(iv, base64.b64decode(answer), None)


def test_during_a_rotation_both_keys_open_requests_and_say_which() -> None:
    aes_key, iv = os.urandom(16), os.urandom(16)
    old = encrypt_request(PAYLOAD, FLOW_OLD_KEY.public_key(), aes_key, iv)
    assert decrypt_request(old, [FLOW_KEY, FLOW_OLD_KEY]).key_index == 1
    new = encrypt_request(PAYLOAD, FLOW_KEY.public_key(), aes_key, iv)
    assert decrypt_request(new, [FLOW_KEY, FLOW_OLD_KEY]).key_index == 0


@pytest.mark.parametrize("damage", ["stranger_key", "tampered_data", "missing_field", "not_base64", "short_iv"])
def test_what_cannot_be_decrypted_is_refused(damage: str) -> None:
    aes_key, iv = os.urandom(16), os.urandom(16)
    key = STRANGER_KEY if damage == "stranger_key" else FLOW_KEY
    body = encrypt_request(PAYLOAD, key.public_key(), aes_key, iv)
    if damage == "tampered_data":
        data = bytearray(base64.b64decode(body["encrypted_flow_data"]))
        data[0] ^= 1
        body["encrypted_flow_data"] = base64.b64encode(bytes(data)).decode()
    elif damage == "missing_field":
        del body["initial_vector"]
    elif damage == "not_base64":
        body["encrypted_aes_key"] = "%%%"
    elif damage == "short_iv":
        body["initial_vector"] = base64.b64encode(b"abc").decode()
    with pytest.raises(FlowDecryptError):
        decrypt_request(body, [FLOW_KEY, FLOW_OLD_KEY])


def test_ping_and_error_notifications_are_answered_without_a_backend() -> None:
    assert builtin_answer({"version": "3.0", "action": "ping"}) == {"data": {"status": "active"}}
    notification = {"version": "3.0", "action": "data_exchange", "flow_token": "t",
                    "data": {"error": "invalid-screen", "error_message": "screen not found"}}
    assert builtin_answer(notification) == {"data": {"acknowledged": True}}
    assert builtin_answer(PAYLOAD) is None
