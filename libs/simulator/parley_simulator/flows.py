"""Meta's side of a WhatsApp Flow with a data endpoint (a test double).

For one screen of a customer's Flow the simulator does what Meta documents: a fresh AES-128 key
encrypted with the number's Flows public key (RSA-OAEP, SHA-256), the request JSON encrypted with
AES-GCM under a random IV (tag appended), all base64; the body signed with the app secret
(``X-Hub-Signature-256``); then it checks the answer: HTTP 200, base64 of AES-GCM under the
bit-inverted IV, a JSON object (``data`` for ping and error notifications, ``screen`` and
``data`` otherwise). When the endpoint answers the ``SUCCESS`` screen, WhatsApp closes the Flow
and the business receives an inbound ``interactive`` ``nfm_reply`` message carrying the
``extension_message_response.params`` as ``response_json``.

When the business sends an interactive ``flow`` message with ``flow_action: data_exchange`` for
a Flow the simulator knows (``flows:`` in its configuration: the Flow's id, its endpoint URI and
how a customer fills each screen, standing in for the Flow JSON), the customer opens it and
``play`` runs the whole Flow: ``INIT``, then one ``data_exchange`` per screen until the endpoint
answers ``SUCCESS`` (the nfm_reply follows) or the customer gives up (nothing to choose, an
answer Meta would refuse, too many screens).

Written independently of Parley's endpoint (parley_ingest.domain.flows), so the two check each
other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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


# --- a customer going through a whole Flow ---------------------------------------------------

MAX_SCREENS = 12


@dataclass(frozen=True)
class FlowMessage:
    """What the customer's phone needs from an interactive ``flow`` message."""

    flow_id: str
    flow_token: str
    flow_action: str  # navigate | data_exchange


def flow_message_of(body: dict[str, Any]) -> FlowMessage | None:
    """The Flow of an interactive ``flow`` send (``action.parameters``), or None."""
    interactive = body.get("interactive")
    if body.get("type") != "interactive" or not isinstance(interactive, dict) or interactive.get("type") != "flow":
        return None
    action = interactive.get("action")
    params = action.get("parameters") if isinstance(action, dict) else None
    if not isinstance(params, dict):
        return None
    flow_id = params.get("flow_id") or params.get("flow_name")
    token = params.get("flow_token")
    if not isinstance(flow_id, str) or not isinstance(token, str) or not token:
        return None
    return FlowMessage(flow_id, token, str(params.get("flow_action") or "navigate"))


@dataclass(frozen=True)
class ScreenChoice:
    """How a customer fills one screen: pick the ``id`` of one item of the list ``data[choose_from]``
    (among the first ``among`` items, so customers race for the same ones) and send it as
    ``submit_as``, with the screen's other scalar data."""

    choose_from: str | None = None
    submit_as: str | None = None
    among: int = 4


@dataclass
class FlowSession:
    """One customer's pass through a Flow, as the simulator saw it (``GET /_sim/flows``)."""

    phone_number_id: str
    flow_id: str
    flow_token: str
    screens: list[str] = field(default_factory=list)
    requests: int = 0
    outcome: str = "open"  # completed | abandoned | failed
    problem: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


Exchange = Callable[[dict[str, Any]], Awaitable[FlowExchange]]


def submission(screen: str, data: dict[str, Any], choice: ScreenChoice | None, rng: random.Random,
               prefer: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """What the customer submits from ``screen`` showing ``data``; None when there is nothing to pick."""
    out = {k: v for k, v in data.items()
           if k != "error_message" and isinstance(v, str | int | float | bool) and not isinstance(v, dict)}
    if choice is None or not choice.choose_from:
        return out
    items = data.get(choice.choose_from)
    ids = [str(i["id"]) for i in items if isinstance(i, dict) and "id" in i] if isinstance(items, list) else []
    if not ids:
        return None
    preferred = [i for i in ids if i in prefer]
    out[choice.submit_as or f"{choice.choose_from}_id"] = (
        preferred[0] if preferred else rng.choice(ids[: max(1, choice.among)]))
    return out


async def play(exchange: Exchange, session: FlowSession, screens: dict[str, ScreenChoice], rng: random.Random,
               prefer: frozenset[str] = frozenset()) -> FlowSession:
    """The customer opens the Flow (``INIT``) and answers screen after screen until ``SUCCESS``."""
    base = {"version": "3.0", "flow_token": session.flow_token}
    request: dict[str, Any] = {**base, "action": "INIT"}
    for _ in range(MAX_SCREENS):
        result = await exchange(request)
        session.requests += 1
        if result.problem is not None or result.response is None:
            session.outcome, session.problem = "failed", result.problem or "no answer"
            return session
        if result.completed:
            session.screens.append("SUCCESS")
            session.outcome, session.params = "completed", completion_params(result.response)
            return session
        screen = str(result.response["screen"])
        session.screens.append(screen)
        data = submission(screen, result.response["data"], screens.get(screen), rng, prefer)
        if data is None:
            session.outcome, session.problem = "abandoned", f"nothing to choose on {screen}"
            return session
        request = {**base, "action": "data_exchange", "screen": screen, "data": data}
    session.outcome, session.problem = "abandoned", f"no SUCCESS after {MAX_SCREENS} screens"
    return session
