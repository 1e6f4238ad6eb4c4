"""Meta's side of a WhatsApp Flow with a data endpoint (a test double).

For one screen of a customer's Flow the simulator does what Meta documents: a fresh AES-128 key
encrypted with the number's Flows public key (RSA-OAEP, SHA-256), the request JSON encrypted with
AES-GCM under a random IV (tag appended), all base64; the body signed with the app secret
(``X-Hub-Signature-256``); then it checks the answer: HTTP 200, base64 of AES-GCM under the
bit-inverted IV, a JSON object (``data`` for ping and error notifications, ``screen`` and
``data`` otherwise). When the endpoint answers the ``SUCCESS`` screen, WhatsApp closes the Flow
and the business receives an inbound ``interactive`` ``nfm_reply`` message carrying the
``extension_message_response.params`` as ``response_json``.

Written independently of Parley's endpoint (parley_ingest.domain.flows), so the two check each
other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True)
class FlowExchange:
    http_status: int
    response: dict[str, Any] | None  # the decrypted answer (200 only)
    problem: str | None  # why the answer is not what Meta accepts, if it is not
    completed: bool  # the SUCCESS screen: the Flow closed


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def public_key_from_pem(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Flows public key must be an RSA key")
    return key


async def exchange(client: httpx.AsyncClient, *, endpoint: str, public_key: rsa.RSAPublicKey, app_secret: str,
                   payload: dict[str, Any]) -> FlowExchange:
    aes_key, iv = os.urandom(16), os.urandom(16)
    body = json.dumps({
        "encrypted_aes_key": base64.b64encode(public_key.encrypt(aes_key, _oaep())).decode(),
        "encrypted_flow_data": base64.b64encode(
            AESGCM(aes_key).encrypt(iv, json.dumps(payload).encode(), None)).decode(),
        "initial_vector": base64.b64encode(iv).decode(),
    }).encode()
    signature = "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    r = await client.post(endpoint, content=body, headers={"content-type": "application/json",
                                                           "x-hub-signature-256": signature})
    if r.status_code != 200:
        return FlowExchange(r.status_code, None, f"the endpoint answered HTTP {r.status_code}", False)
    try:
        flipped = bytes(b ^ 0xFF for b in iv)
        answer = json.loads(AESGCM(aes_key).decrypt(flipped, base64.b64decode(r.content), None))
    except (InvalidTag, ValueError):
        return FlowExchange(200, None, "the answer is not encrypted with the request's key and the inverted IV",
                            False)
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), dict):
        return FlowExchange(200, None, "the answer has no data object", False)
    if payload.get("action") not in ("ping",) and "error" not in payload.get("data", {}) \
            and not isinstance(answer.get("screen"), str):
        return FlowExchange(200, answer, "the answer names no screen", False)
    return FlowExchange(200, answer, None, answer.get("screen") == "SUCCESS")


def completion_params(answer: dict[str, Any]) -> dict[str, Any]:
    """What the closed Flow hands to the chat (``response_json`` of the nfm_reply)."""
    ext = answer.get("data", {}).get("extension_message_response")
    params = ext.get("params") if isinstance(ext, dict) else None
    return params if isinstance(params, dict) else {}
