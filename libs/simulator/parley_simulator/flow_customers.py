"""Customers who open interactive flow messages (a test double of Meta's Flows): whether and when
a customer opens one, and the whole Flow played against the business's endpoint (INIT, a
``data_exchange`` per screen, encrypted with the number's Flows public key as Meta documents),
then the ``nfm_reply`` webhook. The protocol itself is in ``flows.py``."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from . import flows
from .config import FlowConfig, PhoneNumberConfig
from .sent import SentMessage
from .traffic import custom_webhook

if TYPE_CHECKING:
    from .simulator import CloudApiSimulator


class FlowCustomers:
    def __init__(self, configs: list[FlowConfig], *, sim: CloudApiSimulator) -> None:
        self.configs = {f.flow_id: f for f in configs}
        self.sessions: dict[tuple[str, str], flows.FlowSession] = {}
        # What each customer put in a cart, (number, customer) -> retailer ids: they pick the same
        # trip when a Flow offers it.
        self.carts: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._sim = sim  # its behaviour, randomness, numbers, stats and webhooks
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._http: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def remember_carts(self, payload: dict[str, Any]) -> None:
        """The carts (inbound ``order`` messages) of an inbound webhook."""
        for entry in payload.get("entry", []):
            for change in entry.get("changes", []):
                value = change.get("value", {})
                number = value.get("metadata", {}).get("phone_number_id")
                for m in value.get("messages", []):
                    if m.get("type") == "order" and number and m.get("from"):
                        items = m.get("order", {}).get("product_items", [])
                        self.carts[(number, m["from"])].update(
                            str(i["product_retailer_id"]) for i in items if "product_retailer_id" in i)

    def set_public_key(self, phone_number_id: str, pem: str) -> None:
        """``POST /{phone_number_id}/whatsapp_business_encryption``: the business uploads its key."""
        self._keys[phone_number_id] = flows.public_key_from_pem(pem)

    def public_key(self, phone_number_id: str) -> rsa.RSAPublicKey | None:
        if phone_number_id not in self._keys:
            number = self._sim.numbers.get(phone_number_id)
            pem = number.flows_key() if number else None
            if pem is None:
                return None
            self._keys[phone_number_id] = flows.public_key_from_pem(pem)
        return self._keys[phone_number_id]

    def open(self, msg: SentMessage, number: PhoneNumberConfig, flow: flows.FlowMessage) -> None:
        """The customer received a flow message: whether and when they open it."""
        stats = self._sim.stats
        if flow.flow_action != "data_exchange":
            stats["flow_without_endpoint"] += 1  # navigate: the screens come with the message
            return
        if flow.flow_id not in self.configs:
            stats["flow_unknown"] += 1
            return
        if not any(s["status"] in ("delivered", "read") for s in msg.statuses):
            stats["flow_not_delivered"] += 1
            return
        if self._sim.rng.random() >= self._sim.behaviour.flow_open_ratio:
            stats["flow_not_opened"] += 1
            return
        session = flows.FlowSession(number.id, flow.flow_id, flow.flow_token)
        self.sessions[(number.id, flow.flow_token)] = session
        self._sim._spawn(self._play(msg, number, session))

    async def _play(self, msg: SentMessage, number: PhoneNumberConfig, session: flows.FlowSession) -> None:
        sim = self._sim
        b = sim.behaviour
        config = self.configs[session.flow_id]
        key = self.public_key(number.id)
        await asyncio.sleep(b.flow_open_delay_ms / 1000)
        if key is None:
            session.outcome, session.problem = "failed", "the number has no Flows public key"
            sim.stats["flow_failed"] += 1
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=b.flow_endpoint_timeout_s, trust_env=False)
        client, secret = self._http, sim.apps[sim.wabas[number.waba_id].app_id].secret()
        endpoint = config.endpoint_uri.replace("{phone_number_id}", number.id)
        screens = {name: flows.ScreenChoice(c.choose_from, c.submit_as, c.among) for name, c in config.screens.items()}

        async def exchange(payload: dict[str, Any]) -> flows.FlowExchange:
            if payload.get("action") != "INIT":
                await asyncio.sleep(b.flow_screen_delay_ms / 1000)
            problem = ""
            for _ in range(2):  # the app repeats a request once when the connection broke
                sim.stats["flow_requests"] += 1
                try:
                    return await flows.exchange(client, endpoint=endpoint, public_key=key, app_secret=secret,
                                                payload=payload)
                except httpx.TimeoutException:
                    problem = "the endpoint did not answer in time"
                    break
                except httpx.HTTPError as exc:
                    problem = f"the endpoint did not answer ({type(exc).__name__})"
            return flows.FlowExchange(0, None, problem, False)

        await flows.play(exchange, session, screens, sim.rng, frozenset(self.carts.get((number.id, msg.wa_id), ())))
        sim.stats[f"flow_{session.outcome}"] += 1
        if session.outcome == "completed":
            hook = custom_webhook(sim.business_numbers([number.id])[0], [{
                "from": msg.wa_id, "context": {"from": number.display_phone_number, "id": msg.wamid},
                "nfm_reply": {"name": "flow", "body": "Sent", "response_json": orjson.dumps(session.params).decode()},
            }], clock=sim.clock.now, rng=sim.rng)
            sim.post_inbound(hook)
