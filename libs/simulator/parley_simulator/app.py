"""HTTP face of the simulator: Meta's Graph API routes plus a control API under ``/_sim``.

Graph API (answers in Meta's documented shapes):
- ``POST /{version}/{phone_number_id}/messages``
- ``POST /{version}/{phone_number_id}/marketing_messages`` (the Marketing Messages API: marketing
  templates only, the same body and answer)
- ``GET|POST /{version}/{waba_id}/message_templates``
- ``GET|POST /{version}/{phone_number_id}/whatsapp_business_encryption``  the number's Flows public key
- an interactive ``flow`` message (``flow_action: data_exchange``) of a configured Flow is opened by
  the customer, who plays it against the Flow's endpoint; the ``nfm_reply`` follows (flows.py)

Control API (tests and demos; not part of Meta's API):
- ``POST /_sim/inbound``          generate (``count``, ``seed``) or post explicit inbound messages
- ``POST /_sim/inbound/record``   record an inbound webhook body posted by someone else (windows)
- ``POST /_sim/windows``          open a customer-service window (``last_inbound_at``, ``referral``)
- ``POST /_sim/preferences``      a customer stops/resumes marketing (optionally posts the webhook)
- ``POST /_sim/user_id_update``   a user's BSUID changes (posts the ``user_id_update`` webhook)
- ``POST /_sim/templates/{waba_id}/{name}/{language}/status``  pause/disable/approve/reject
- ``POST /_sim/templates/{waba_id}/{name}/{language}/quality``  a new quality score (webhook)
- ``GET|POST /_sim/clock``        read or set the simulated clock
- ``GET|PATCH /_sim/behaviour``   latency, 5xx/timeout rates, ratios, ...
- ``PATCH /_sim/numbers/{phone_number_id}``  throughput
- ``POST /_sim/numbers/{phone_number_id}/events``  a ``phone_number_quality_update`` (FLAGGED,
  UNFLAGGED, THROUGHPUT_UPGRADE: the number then sends up to 1,000/s, a coexistence one 20/s)
- ``POST /_sim/portfolios/{portfolio_id}/limit``  a new messaging limit, reported by
  ``business_capability_update`` (templates past it are refused with 131048)
- ``POST /_sim/flows/{phone_number_id}/exchange``  one Flow screen played as Meta against an endpoint
- ``GET /_sim/flows``              the customers' passes through Flows (screens, outcome, problem)
- ``GET /_sim/payments``, ``POST /_sim/payments/{phone_number_id}/{reference_id}/refunds``
- ``GET /_sim/stats``, ``GET /_sim/messages``, ``GET /_sim/webhooks``, ``POST /_sim/drain``,
  ``POST /_sim/reset``, ``GET /healthz``
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from . import conversions, flows
from .config import SimulatorConfig, TemplateConfig
from .errors import GraphError
from .portfolio import MARKETING_MESSAGES, throughput_of
from .simulator import CloudApiSimulator
from .traffic import TrafficGenerator, custom_webhook
from .validation import normalise_recipient


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _graph_error(err: GraphError) -> Response:
    return _json(err.body(), err.http_status)


def _instant(value: str | float | int) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class InboundRequest(BaseModel):
    count: int = Field(default=0, ge=0, le=100_000)
    seed: int | None = None
    phone_number_ids: list[str] | None = None
    # Explicit messages for one number instead of generated ones.
    phone_number_id: str | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)


class RefundRequest(BaseModel):
    value: int | None = Field(default=None, gt=0, description="in units of the payment's offset; all when omitted")


class FlowExchangeRequest(BaseModel):
    endpoint: str = Field(description="the business's Flows data endpoint URL")
    public_key_pem: str = Field(description="the number's Flows public key (PEM)")
    payload: dict[str, Any] = Field(description="the decrypted request: version, action, flow_token, screen, data")
    customer: str | None = Field(default=None, description="wa_id to send the nfm_reply from when the Flow closes")


class WindowRequest(BaseModel):
    phone_number_id: str
    customer: str
    last_inbound_at: str | float | None = None  # unix seconds or ISO 8601; default: simulated now
    referral: bool = False


class PreferenceRequest(BaseModel):
    phone_number_id: str
    customer: str
    value: str = Field(pattern="^(stop|resume)$")
    notify: bool = True


class UserIdChangeRequest(BaseModel):
    phone_number_id: str
    customer: str  # the user's current BSUID or phone number
    new_user_id: str = Field(pattern=r"^[A-Z]{2}\.[A-Za-z0-9.]{1,140}$")
    notify: bool = True


class TemplateStatusRequest(BaseModel):
    status: str
    reason: str | None = None
    title: str | None = None


class TemplateQualityRequest(BaseModel):
    score: Literal["GREEN", "YELLOW", "RED", "UNKNOWN"]


class ClockRequest(BaseModel):
    now: str | float | None = None
    advance_s: float | None = None


class NumberPatch(BaseModel):
    throughput: int | None = Field(default=None, ge=1, le=10_000)


class NumberEventRequest(BaseModel):
    """A ``phone_number_quality_update`` Meta would send: FLAGGED, UNFLAGGED, THROUGHPUT_UPGRADE, ..."""

    event: str = Field(pattern=r"^[A-Z_]{1,40}$")


class PortfolioLimitRequest(BaseModel):
    messaging_limit: int = Field(ge=-1)  # -1: unlimited


# The send edges: the Cloud API's /messages and the Marketing Messages API's /marketing_messages.
_SEND_PATH = re.compile(r"^/([^/]+)/([^/]+)/(messages|marketing_messages)$")


class FastSendPath:
    """Answers ``POST /{version}/{phone_number_id}/messages`` before FastAPI's routing.

    The send path is the hot one (benchmarks drive thousands of sends per second through it);
    going straight from ASGI to the simulator roughly halves its cost. Every other route goes
    to the FastAPI app.
    """

    def __init__(self, app: ASGIApp, sim: CloudApiSimulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_post = scope["type"] == "http" and scope["method"] == "POST"
        match = _SEND_PATH.match(scope["path"]) if is_post else None
        if match is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
                break
        outcome = await self.sim.send(match.group(1), match.group(2), authorization, b"".join(chunks), match.group(3))
        if outcome.hang_s:
            await asyncio.sleep(outcome.hang_s)
        body = orjson.dumps(outcome.body)
        await send({"type": "http.response.start", "status": outcome.http_status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(config: SimulatorConfig, *, simulator: CloudApiSimulator | None = None) -> FastAPI:
    sim = simulator or CloudApiSimulator(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    app = FastAPI(
        title="Parley Cloud API simulator",
        lifespan=lifespan,
        docs_url="/_sim/docs",
        openapi_url="/_sim/openapi.json",
    )
    app.state.simulator = sim
    _routes_graph(app, sim)
    for routes in (_routes_inbound, _routes_customers, _routes_setup, _routes_observe, _routes_commerce,
                   _routes_lifecycle):
        routes(app, sim)
    app.include_router(conversions.conversions_router())  # stands in for Meta's Conversions API
    app.add_middleware(FastSendPath, sim=sim)
    return app


def _routes_graph(app: FastAPI, sim: CloudApiSimulator) -> None:
    @app.post("/{version}/{phone_number_id}/messages")
    async def send_message(version: str, phone_number_id: str, request: Request) -> Response:
        outcome = await sim.send(
            version, phone_number_id, request.headers.get("authorization"), await request.body()
        )
        if outcome.hang_s:
            await asyncio.sleep(outcome.hang_s)
        return _json(outcome.body, outcome.http_status)

    @app.post("/{version}/{phone_number_id}/marketing_messages")
    async def send_marketing_message(version: str, phone_number_id: str, request: Request) -> Response:
        """The Marketing Messages API: a template send's body and answer, marketing templates only."""
        outcome = await sim.send(
            version, phone_number_id, request.headers.get("authorization"), await request.body(), MARKETING_MESSAGES
        )
        if outcome.hang_s:
            await asyncio.sleep(outcome.hang_s)
        return _json(outcome.body, outcome.http_status)

    @app.get("/{version}/{phone_number_id}/payments/{configuration}/{reference_id}")
    async def lookup_payment(version: str, phone_number_id: str, configuration: str, reference_id: str,
                             request: Request) -> Response:
        try:
            return _json(sim.payments.lookup(phone_number_id, configuration, reference_id,
                                             request.headers.get("authorization")))
        except GraphError as err:
            return _graph_error(err)

    @app.post("/{version}/{phone_number_id}/whatsapp_business_encryption")
    async def upload_flows_key(version: str, phone_number_id: str, request: Request) -> Response:
        """The business uploads the number's Flows public key (form field ``business_public_key``)."""
        try:
            number = sim.numbers.get(phone_number_id)
            sim.tokens.check(request.headers.get("authorization"), (number.id, number.waba_id) if number else ())
            if number is None:
                raise GraphError(100, f"Unsupported post request. Object with ID '{phone_number_id}' does not exist")
            raw = (await request.body()).decode()
            form = json.loads(raw) if raw.lstrip().startswith("{") else {
                k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
            pem = form.get("business_public_key") if isinstance(form, dict) else None
            try:
                sim.flows.set_public_key(phone_number_id, str(pem or ""))
            except ValueError as exc:
                raise GraphError(100, f"business_public_key: {exc}") from None
            return _json({"success": True})
        except GraphError as err:
            return _graph_error(err)

    @app.get("/{version}/{phone_number_id}/whatsapp_business_encryption")
    async def read_flows_key(version: str, phone_number_id: str, request: Request) -> Response:
        try:
            number = sim.numbers.get(phone_number_id)
            sim.tokens.check(request.headers.get("authorization"), (number.id, number.waba_id) if number else ())
            key = sim.flows.public_key(phone_number_id)
        except GraphError as err:
            return _graph_error(err)
        from cryptography.hazmat.primitives import serialization

        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode() \
            if key else None
        return _json({"data": [{"business_public_key": pem,
                                "business_public_key_signature_status": "VALID" if pem else "MISMATCH"}]})

    @app.get("/{version}/{waba_id}/message_templates")
    async def list_templates(version: str, waba_id: str, request: Request) -> Response:
        try:
            return _json(
                sim.template_api.list_page(waba_id, request.headers.get("authorization"), dict(request.query_params))
            )
        except GraphError as err:
            return _graph_error(err)

    @app.post("/{version}/{waba_id}/message_templates")
    async def create_template(version: str, waba_id: str, request: Request) -> Response:
        try:
            try:
                body = json.loads(await request.body())
            except ValueError as exc:
                raise GraphError(100, "The request body is not valid JSON") from exc
            return _json(sim.template_api.create(waba_id, request.headers.get("authorization"), body))
        except GraphError as err:
            return _graph_error(err)


def _routes_inbound(app: FastAPI, sim: CloudApiSimulator) -> None:
    """Inbound traffic: what customers write, as Meta would post it."""

    @app.post("/_sim/inbound")
    async def inbound(req: InboundRequest) -> dict[str, Any]:
        hooks = []
        if req.messages:
            if req.phone_number_id not in sim.numbers:
                raise HTTPException(404, "unknown phone_number_id")
            number = sim.business_numbers([req.phone_number_id])[0]
            try:
                hooks.append(custom_webhook(number, req.messages, clock=sim.clock.now, rng=sim.rng))
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from exc
        if req.count:
            unknown = [i for i in req.phone_number_ids or [] if i not in sim.numbers]
            if unknown:
                raise HTTPException(404, f"unknown phone_number_ids {unknown}")
            gen = TrafficGenerator(
                sim.business_numbers(req.phone_number_ids),
                seed=req.seed if req.seed is not None else sim.rng.randrange(1 << 30),
                clock=sim.clock.now,
            )
            hooks.extend(gen.webhooks(req.count))
        for hook in hooks:
            sim.post_inbound(hook)
        return {
            "webhooks": len(hooks),
            "messages": [
                {
                    "wamid": r.wamid,
                    "phone_number_id": r.phone_number_id,
                    "customer_id": r.customer_id,
                    "timestamp": r.timestamp,
                    "language": r.language,
                    "intent": r.intent,
                    "type": r.type,
                    "referral": r.referral,
                    "username_only": r.username_only,
                }
                for h in hooks
                for r in h.records
            ],
        }

    @app.post("/_sim/inbound/record")
    async def inbound_record(request: Request) -> dict[str, int]:
        """Record the windows of an inbound webhook body that was posted by someone else (``drive``)."""
        payload = json.loads(await request.body())
        recorded = 0
        for entry in payload.get("entry", []):
            for change in entry.get("changes", []):
                value = change.get("value", {})
                pn = value.get("metadata", {}).get("phone_number_id")
                for msg in value.get("messages", []):
                    customer = msg.get("from") or msg.get("from_user_id")
                    if pn and customer:
                        sim.windows.record_inbound(
                            pn,
                            customer,
                            float(msg.get("timestamp", sim.clock.now())),
                            referral="referral" in msg,
                        )
                        recorded += 1
        sim.stats["inbound_messages"] += recorded
        return {"recorded": recorded}


def _routes_customers(app: FastAPI, sim: CloudApiSimulator) -> None:
    """Windows and marketing preferences of the simulated customers."""

    @app.post("/_sim/windows")
    async def open_window(req: WindowRequest) -> dict[str, Any]:
        at = sim.clock.now() if req.last_inbound_at is None else _instant(req.last_inbound_at)
        sim.windows.record_inbound(
            req.phone_number_id, normalise_recipient(req.customer), at, referral=req.referral
        )
        return {"phone_number_id": req.phone_number_id, "last_inbound_at": at}

    @app.post("/_sim/preferences")
    async def preferences(req: PreferenceRequest) -> dict[str, str]:
        if req.phone_number_id not in sim.numbers:
            raise HTTPException(404, "unknown phone_number_id")
        sim.customers.set_marketing_preference(req.phone_number_id, req.customer, req.value, notify=req.notify)
        return {"value": req.value}

    @app.post("/_sim/user_id_update")
    async def user_id_update(req: UserIdChangeRequest) -> dict[str, str]:
        if req.phone_number_id not in sim.numbers:
            raise HTTPException(404, "unknown phone_number_id")
        old = sim.customers.change_user_id(req.phone_number_id, req.customer, req.new_user_id, notify=req.notify)
        return {"previous": old, "current": req.new_user_id}


def _routes_setup(app: FastAPI, sim: CloudApiSimulator) -> None:
    """Templates, the clock, behaviour and numbers: what tests change while the simulator runs."""

    @app.post("/_sim/templates/{waba_id}/{name}/{language}/status")
    async def template_status(
        waba_id: str, name: str, language: str, req: TemplateStatusRequest
    ) -> dict[str, Any]:
        stored = sim.templates.find(waba_id, name, language)
        if stored is None:
            raise HTTPException(404, "unknown template")
        sim.template_api.set_status(stored, req.status.upper(), reason=req.reason, title=req.title)
        return stored.listing()

    @app.post("/_sim/templates/{waba_id}/{name}/{language}/quality")
    async def template_quality(waba_id: str, name: str, language: str, req: TemplateQualityRequest) -> dict[str, Any]:
        """Meta rates the template's quality and posts ``message_template_quality_update``."""
        stored = sim.templates.find(waba_id, name, language)
        if stored is None:
            raise HTTPException(404, "unknown template")
        sim.template_api.set_quality(stored, req.score)
        return {"id": stored.id, "quality_score": req.score}

    @app.post("/_sim/templates/{waba_id}")
    async def add_template(waba_id: str, template: TemplateConfig) -> dict[str, Any]:
        if waba_id not in sim.wabas:
            raise HTTPException(404, "unknown waba")
        return sim.template_api.add(waba_id, template).listing()

    @app.get("/_sim/clock")
    async def get_clock() -> dict[str, Any]:
        return {"now": sim.clock.now(), "iso": sim.clock.now_dt().isoformat()}

    @app.post("/_sim/clock")
    async def set_clock(req: ClockRequest) -> dict[str, Any]:
        if req.now is not None:
            sim.clock.set(datetime.fromtimestamp(_instant(req.now), UTC))
        if req.advance_s:
            sim.clock.advance(req.advance_s)
        return {"now": sim.clock.now(), "iso": sim.clock.now_dt().isoformat()}

    @app.get("/_sim/behaviour")
    async def get_behaviour() -> dict[str, Any]:
        return sim.behaviour.model_dump(mode="json")

    @app.patch("/_sim/behaviour")
    async def patch_behaviour(request: Request) -> dict[str, Any]:
        try:
            return sim.update_behaviour(json.loads(await request.body())).model_dump(mode="json")
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.patch("/_sim/numbers/{phone_number_id}")
    async def patch_number(phone_number_id: str, req: NumberPatch) -> dict[str, Any]:
        number = sim.numbers.get(phone_number_id)
        if number is None:
            raise HTTPException(404, "unknown phone_number_id")
        if req.throughput is not None:
            number.throughput = req.throughput
        return {"id": number.id, "throughput": number.throughput}

    @app.post("/_sim/numbers/{phone_number_id}/events")
    async def number_event(phone_number_id: str, req: NumberEventRequest) -> dict[str, Any]:
        """Meta reports a number's quality or throughput change (and a throughput upgrade takes effect)."""
        if phone_number_id not in sim.numbers:
            raise HTTPException(404, "unknown phone_number_id")
        sim.reports.report_number_event(phone_number_id, req.event)
        number = sim.numbers[phone_number_id]
        return {"id": number.id, "event": req.event, "throughput": throughput_of(number)}

    @app.post("/_sim/portfolios/{portfolio_id}/limit")
    async def portfolio_limit(portfolio_id: str, req: PortfolioLimitRequest) -> dict[str, Any]:
        """Meta moves a business portfolio to a new messaging limit and reports it."""
        if not any(w.portfolio == portfolio_id for w in sim.wabas.values()):
            raise HTTPException(404, "unknown portfolio")
        sim.reports.set_portfolio_limit(portfolio_id, req.messaging_limit)
        return {"id": portfolio_id, "messaging_limit": req.messaging_limit,
                "reached": sim.reach.count(portfolio_id, sim.clock.now())}


def _routes_observe(app: FastAPI, sim: CloudApiSimulator) -> None:
    """What the simulator received and posted, for tests to count."""

    @app.get("/_sim/stats")
    async def stats() -> Response:
        return _json(sim.stats_snapshot())

    @app.get("/_sim/messages")
    async def messages(
        wamid: str | None = None,
        biz_opaque_callback_data: str | None = None,
        phone_number_id: str | None = None,
        to: str | None = None,
        limit: int = 1000,
        compact: bool = False,
    ) -> Response:
        found = sim.find_messages(
            wamid=wamid,
            biz_opaque_callback_data=biz_opaque_callback_data,
            phone_number_id=phone_number_id,
            to=to,
        )
        if compact:  # who got what and which statuses were posted, without the bodies
            return _json({"count": len(found), "data": [
                {"wamid": m.wamid, "phone_number_id": m.phone_number_id, "to": m.to, "wa_id": m.wa_id,
                 "statuses": [{"status": s["status"]} for s in m.statuses]} for m in found[-limit:]]})
        return _json({"count": len(found), "data": [m.summary() for m in found[-limit:]]})

    @app.get("/_sim/webhooks")
    async def webhooks(kind: str | None = None, limit: int = 200) -> Response:
        posted = [w for w in sim.dispatcher.log if kind is None or w.kind == kind][-limit:]
        return _json(
            {
                "count": len(posted),
                "data": [
                    {
                        "app_id": w.app_id,
                        "kind": w.kind,
                        "http_status": w.http_status,
                        "attempt": w.attempt,
                        "signature": w.signature,
                        "body": w.body.decode(),
                    }
                    for w in posted
                ],
            }
        )


def _routes_commerce(app: FastAPI, sim: CloudApiSimulator) -> None:
    """Payments, refunds and Flows: Meta's side of in-chat commerce."""

    @app.get("/_sim/payments")
    async def list_payments() -> dict[str, Any]:
        return {"payments": [
            {"phone_number_id": p.phone_number_id, "reference_id": p.reference_id, "outcome": p.outcome,
             "amount": p.amount, "currency": p.currency, "refunds": p.refunds}
            for p in sim.payments.all()]}

    @app.post("/_sim/payments/{phone_number_id}/{reference_id}/refunds")
    async def refund_payment(phone_number_id: str, reference_id: str, req: RefundRequest) -> dict[str, Any]:
        """The business refunded through its gateway: Meta reports it with a payment update."""
        try:
            return sim.payments.refund(phone_number_id, reference_id, req.value)
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.get("/_sim/flows")
    async def flow_sessions() -> dict[str, Any]:
        return {"sessions": [
            {"phone_number_id": f.phone_number_id, "flow_id": f.flow_id, "flow_token": f.flow_token,
             "screens": f.screens, "requests": f.requests, "outcome": f.outcome, "problem": f.problem,
             "params": f.params} for f in sim.flows.sessions.values()]}

    @app.post("/_sim/flows/{phone_number_id}/exchange")
    async def flow_exchange(phone_number_id: str, req: FlowExchangeRequest) -> dict[str, Any]:
        """One screen of a customer's Flow, played as Meta does against the business's endpoint;
        on the SUCCESS screen the nfm_reply completion is posted as an inbound webhook."""
        number = sim.numbers.get(phone_number_id)
        if number is None:
            raise HTTPException(404, "unknown phone_number_id")
        app_id = sim.wabas[number.waba_id].app_id
        try:
            key = flows.public_key_from_pem(req.public_key_pem)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        async with httpx.AsyncClient(timeout=10) as client:
            result = await flows.exchange(client, endpoint=req.endpoint, public_key=key,
                                          app_secret=sim.apps[app_id].secret(), payload=req.payload)
        sim.stats["flow_requests"] += 1
        completion = None
        if result.completed and result.response is not None and req.customer:
            params = flows.completion_params(result.response)
            number_view = sim.business_numbers([phone_number_id])[0]
            hook = custom_webhook(number_view, [{"from": req.customer, "nfm_reply": {
                "name": "flow", "body": "Sent", "response_json": json.dumps(params)}}],
                clock=sim.clock.now, rng=sim.rng)
            sim.post_inbound(hook)
            completion = hook.records[0].wamid
        return {"http_status": result.http_status, "response": result.response, "problem": result.problem,
                "completed": result.completed, "nfm_reply_wamid": completion}


def _routes_lifecycle(app: FastAPI, sim: CloudApiSimulator) -> None:
    """Health, draining the webhook queue and resetting state."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/_sim/drain")
    async def drain(timeout_s: float = 30.0) -> dict[str, Any]:
        done = await sim.dispatcher.drain(timeout_s)
        return {"drained": done, "pending": sim.dispatcher.pending}

    @app.post("/_sim/reset")
    async def reset() -> dict[str, str]:
        sim.reset()
        return {"status": "reset"}
