"""A stand-in for Meta's Conversions API for business messaging (click-to-WhatsApp ads).

Parley's billing sends a ``Purchase`` for each paid order that came from an ad (ADR 0113) to the
tenant's conversions endpoint; pointed here, the simulator receives them like Meta would:
``POST /_sim/conversions`` takes the events (``{"data": [{event_name, event_time, action_source:
"business_messaging", messaging_channel: "whatsapp", user_data: {ctwa_clid}, custom_data}]}``),
checks each has what Meta requires of a business-messaging ``Purchase`` (a ``ctwa_clid``, a
currency and a value), counts an event id once (Meta deduplicates by it) and answers
``{"events_received": n}``; ``GET /_sim/conversions`` lists what arrived. When the simulator is
given the tenant's signing secret (``PARLEY_SIM_CONVERSIONS_SECRET``), requests whose
``X-Parley-Signature`` does not verify are refused with 401.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from parley_common.outbound import SIGNATURE_HEADER, SignatureError, verify

REQUIRED_PURCHASE = ("currency", "value")


@dataclass
class ConversionsReceiver:
    secret: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0

    def receive(self, body: bytes, signature: str | None) -> int:
        if self.secret:
            try:
                verify(signature or "", body, [self.secret], int(time.time()))
            except SignatureError as exc:
                raise HTTPException(401, f"signature: {exc}") from None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise HTTPException(400, "the body is not JSON") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not data:
            raise HTTPException(400, "data: expected a non-empty list of events")
        for n, event in enumerate(data):
            problem = _problem(event)
            if problem:
                raise HTTPException(400, f"data[{n}].{problem}")
        received = 0
        for event in data:
            event_id = str(event.get("event_id") or "")
            if event_id and event_id in self.seen:
                self.duplicates += 1
                continue
            if event_id:
                self.seen.add(event_id)
            self.events.append(event)
            received += 1
        return received

    def reset(self) -> None:
        self.events.clear()
        self.seen.clear()
        self.duplicates = 0


def _problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "expected an object"
    for name in ("event_name", "event_time", "action_source"):
        if not event.get(name):
            return f"{name} is required"
    if event["action_source"] == "business_messaging":
        if event.get("messaging_channel") != "whatsapp":
            return "messaging_channel must be whatsapp for click-to-WhatsApp ads"
        user = event.get("user_data")
        if not isinstance(user, dict) or not user.get("ctwa_clid"):
            return "user_data.ctwa_clid is required for business messaging"
    if event["event_name"] == "Purchase":
        custom = event.get("custom_data")
        missing = [k for k in REQUIRED_PURCHASE if not isinstance(custom, dict) or custom.get(k) in (None, "")]
        if missing:
            return f"custom_data.{missing[0]} is required for a Purchase"
    return None


def conversions_router(receiver: ConversionsReceiver | None = None) -> APIRouter:
    receiver = receiver or ConversionsReceiver(secret=os.environ.get("PARLEY_SIM_CONVERSIONS_SECRET") or None)
    router = APIRouter(prefix="/_sim/conversions", tags=["conversions"])

    @router.post("", summary="Conversion events, as Meta's Conversions API takes them")
    async def post(request: Request) -> dict[str, Any]:
        return {"events_received": receiver.receive(await request.body(), request.headers.get(SIGNATURE_HEADER))}

    @router.get("", summary="The conversion events received (duplicates by event_id counted once)")
    async def listed() -> dict[str, Any]:
        return {"events": receiver.events, "duplicates": receiver.duplicates}

    @router.delete("", summary="Forget the conversions received")
    async def reset() -> dict[str, str]:
        receiver.reset()
        return {"status": "reset"}

    return router
