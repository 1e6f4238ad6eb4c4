"""WhatsApp Flows data endpoint, pure: decrypting Meta's request, encrypting the answer.

Meta POSTs ``{"encrypted_aes_key", "encrypted_flow_data", "initial_vector"}`` (base64): a fresh
AES-128 key encrypted with the number's RSA public key (RSA-OAEP, SHA-256 for hash and MGF1),
the request JSON encrypted with AES-GCM under that key and IV (the 16-byte tag appended). The
answer is the response JSON encrypted with the same key and the IV with every bit inverted,
tag appended, base64, sent as plain text.

Status codes Meta documents for the endpoint: 421 when the request cannot be decrypted (the
client then re-fetches the public key), 432 when the request signature does not verify, 427 when
the flow token is no longer valid. During a key rotation two private keys are tried in turn.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CANNOT_DECRYPT = 421
FLOW_TOKEN_EXPIRED = 427
BAD_SIGNATURE = 432

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class FlowDecryptError(ValueError):
    """The request cannot be decrypted with any of the number's keys (answer 421)."""


@dataclass(frozen=True)
class DecryptedRequest:
    payload: dict[str, Any]
    aes_key: bytes
    iv: bytes
    key_index: int  # which private key opened it (0: current, 1: the one being rotated out)

    @property
    def action(self) -> str:
        return str(self.payload.get("action", ""))


def decrypt_request(body: Any, private_keys: Sequence[rsa.RSAPrivateKey]) -> DecryptedRequest:
    if not isinstance(body, dict):
        raise FlowDecryptError("the body is not a JSON object")
    try:
        encrypted_key = base64.b64decode(body["encrypted_aes_key"], validate=True)
        data = base64.b64decode(body["encrypted_flow_data"], validate=True)
        iv = base64.b64decode(body["initial_vector"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise FlowDecryptError(f"missing or malformed field: {exc}") from None
    if len(iv) < 8 or len(data) < 16:
        raise FlowDecryptError("initial_vector or encrypted_flow_data is too short")
    for index, key in enumerate(private_keys):
        try:
            aes_key = key.decrypt(encrypted_key, _OAEP)
        except ValueError:
            continue
        if len(aes_key) not in (16, 24, 32):
            continue
        try:
            plain = AESGCM(aes_key).decrypt(iv, data, None)
        except InvalidTag:
            raise FlowDecryptError("the flow data does not decrypt under the request's key") from None
        try:
            payload = orjson.loads(plain)
        except orjson.JSONDecodeError:
            raise FlowDecryptError("the decrypted flow data is not JSON") from None
        if not isinstance(payload, dict):
            raise FlowDecryptError("the decrypted flow data is not a JSON object")
        return DecryptedRequest(payload, aes_key, iv, index)
    raise FlowDecryptError("no private key of this number opens encrypted_aes_key")


def inverted(iv: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in iv)


def encrypt_response(response: dict[str, Any], aes_key: bytes, iv: bytes) -> bytes:
    """The answer Meta expects: base64 of AES-GCM(response JSON) under the inverted IV, tag appended."""
    return base64.b64encode(AESGCM(aes_key).encrypt(inverted(iv), orjson.dumps(response), None))


# --- Meta's side (the simulator and the tests encrypt requests exactly this way) -------------


def encrypt_request(payload: dict[str, Any], public_key: rsa.RSAPublicKey, aes_key: bytes, iv: bytes
                    ) -> dict[str, str]:
    return {
        "encrypted_aes_key": base64.b64encode(public_key.encrypt(aes_key, _OAEP)).decode(),
        "encrypted_flow_data": base64.b64encode(AESGCM(aes_key).encrypt(iv, orjson.dumps(payload), None)).decode(),
        "initial_vector": base64.b64encode(iv).decode(),
    }


def decrypt_response(answer: bytes, aes_key: bytes, iv: bytes) -> dict[str, Any]:
    plain = AESGCM(aes_key).decrypt(inverted(iv), base64.b64decode(answer), None)
    result = orjson.loads(plain)
    assert isinstance(result, dict)
    return result


# --- what the endpoint answers by itself ---------------------------------------------------


def builtin_answer(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Health checks and error notifications are answered without the tenant's backend."""
    if payload.get("action") == "ping":
        return {"data": {"status": "active"}}
    data = payload.get("data")
    if isinstance(data, dict) and "error" in data and payload.get("action") in ("INIT", "data_exchange", "BACK"):
        return {"data": {"acknowledged": True}}
    return None


BACKEND_ACTIONS = ("INIT", "data_exchange", "BACK")
