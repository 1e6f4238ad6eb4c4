"""The simulator's behaviour, independent of HTTP: what Meta answers to a send and which
webhooks follow. ``app.py`` puts routes in front of it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import re
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from . import flows, payments
from .auth import AccessTokens, unknown_object
from .clock import SimClock
from .config import Behaviour, PhoneNumberConfig, SimulatorConfig, TemplateConfig, WabaConfig
from .errors import GraphError
from .limits import PairRateLimiter, ThroughputLimiter
from .payloads import (
    planned_statuses,
    status_object,
    template_quality_webhook,
    template_status_webhook,
    templates_page,
    user_id_update_webhook,
    user_preferences_webhook,
)
from .people import People, is_bsuid
from .portfolio import (
    MARKETING_MESSAGES,
    MESSAGING_LIMIT_CODE,
    UPGRADED_MPS,
    PortfolioReach,
    capability_webhook,
    number_quality_webhook,
    throughput_of,
)
from .pricing import PricedMessage, PricingEngine
from .sent import SentLog, SentMessage
from .templates import StoredTemplate, TemplateCatalogue, parse_new_template
from .traffic import BusinessNumber, InboundWebhook, custom_webhook
from .validation import SendRequest, check_template_parameters, needs_phone_number, normalise_recipient, parse_send
from .webhooks import PendingStatus, WebhookDispatcher
from .windows import CustomerWindows, MarketingConsent

# Failures Meta reports by a status webhook after answering "accepted" (unless configured sync).
ASYNC_BY_DEFAULT = frozenset({131026, 131047, 131049, 131050, 132015})
_VERSION = re.compile(r"^v(\d+)(?:\.\d+)?$")


class SendOutcome:
    def __init__(self, http_status: int, body: dict[str, Any], *, hang_s: float = 0.0) -> None:
        self.http_status = http_status
        self.body = body
        self.hang_s = hang_s


class CloudApiSimulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.behaviour: Behaviour = config.behaviour.model_copy()
        self.rng = random.Random(config.seed)
        self.clock = SimClock(self.behaviour.clock_start)
        self.windows = CustomerWindows()
        self.consent = MarketingConsent()
        self.people = People()  # Meta's rules are about the person, however addressed
        self.pricing = PricingEngine()
        self.throughput = ThroughputLimiter()
        self.pair_rate = PairRateLimiter()
        self.reach = PortfolioReach()
        self.portfolio_limits: dict[str, int | None] = {p.id: p.messaging_limit for p in config.portfolios}
        self.templates = TemplateCatalogue()
        self.template_quality: dict[str, str] = {}  # template id -> Meta's quality score
        self.apps = {a.app_id: a for a in config.apps}
        self.wabas: dict[str, WabaConfig] = {w.id: w for w in config.wabas}
        self.numbers: dict[str, PhoneNumberConfig] = {p.id: p.model_copy() for p in config.phone_numbers}
        self.unknown_recipients: set[str] = {
            normalise_recipient(r) for r in self.behaviour.unknown_recipients
        }
        self.tokens = AccessTokens(config.wabas, config.phone_numbers)
        for w in config.wabas:
            for t in w.templates:
                self.templates.add(w.id, t)
        self.sent = SentLog(config.max_messages_kept)
        self.messages = self.sent.messages  # the same dict: tests read it
        self.payments: dict[tuple[str, str], payments.SimulatedPayment] = {}
        self.stats: Counter[str] = Counter()
        self.errors_by_code: Counter[int] = Counter()
        self.per_number: dict[str, Counter[str]] = defaultdict(Counter)
        self._wamid_seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.flows = {f.flow_id: f for f in config.flows}
        self._flow_keys: dict[str, rsa.RSAPublicKey] = {}
        self.flow_sessions: dict[tuple[str, str], flows.FlowSession] = {}
        self.carts: dict[tuple[str, str], set[str]] = defaultdict(set)  # (number, customer) -> retailer ids
        self._http: httpx.AsyncClient | None = None
        self.dispatcher = WebhookDispatcher(
            url_template=config.webhook_url,
            app_secrets={a.app_id: a.secret() for a in config.apps},
            behaviour=self.behaviour,
            rng=self.rng,
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.dispatcher.start()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.stop()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def update_behaviour(self, changes: dict[str, Any]) -> Behaviour:
        merged = Behaviour.model_validate({**self.behaviour.model_dump(), **changes})
        for key in changes:
            setattr(self.behaviour, key, getattr(merged, key))
        if "unknown_recipients" in changes:
            self.unknown_recipients = {normalise_recipient(r) for r in self.behaviour.unknown_recipients}
        if "clock_start" in changes and merged.clock_start is not None:
            self.clock.set(merged.clock_start)
        return self.behaviour

    def reset(self) -> None:
        """Forget runtime state (messages, windows, consent, limits, counters); keep the config."""
        self.windows.reset()
        self.consent.reset()
        self.people.reset()
        self.pricing.reset()
        self.throughput.reset()
        self.pair_rate.reset()
        self.reach.reset()
        self.sent.clear()
        self.payments.clear()
        self.flow_sessions.clear()
        self.carts.clear()
        self.stats.clear()
        self.errors_by_code.clear()
        self.per_number.clear()
        self.dispatcher.reset()

    # --- auth -----------------------------------------------------------------------------

    def _number_tokens_scope(self, number: PhoneNumberConfig) -> tuple[str, ...]:
        return (number.id, number.waba_id)

    def _waba_scope(self, waba_id: str) -> tuple[str, ...]:
        return (waba_id, *(p.id for p in self.numbers.values() if p.waba_id == waba_id))

    # --- sending --------------------------------------------------------------------------

    def _fail(self, phone_number_id: str, err: GraphError) -> SendOutcome:
        self.stats["requests_rejected"] += 1
        self.errors_by_code[err.code] += 1
        self.per_number[phone_number_id][f"error_{err.code}"] += 1
        return SendOutcome(err.http_status, err.body())

    async def send(
        self, version: str, phone_number_id: str, authorization: str | None, raw_body: bytes,
        api: str = "messages",
    ) -> SendOutcome:
        """``POST /{version}/{phone_number_id}/messages`` (or ``/marketing_messages``)."""
        self.stats["requests"] += 1
        b = self.behaviour
        delay = b.latency_ms + (self.rng.random() * b.latency_jitter_ms if b.latency_jitter_ms else 0.0)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        try:
            number = self.numbers.get(phone_number_id)
            self.tokens.check(authorization, self._number_tokens_scope(number) if number else ())
            if number is None:
                raise unknown_object(phone_number_id)
        except GraphError as err:
            return self._fail(phone_number_id, err)
        if b.timeout_rate and self.rng.random() < b.timeout_rate:
            self.stats["timeouts"] += 1
            self.per_number[phone_number_id]["timeouts"] += 1
            return SendOutcome(504, GraphError(2, "Request timed out").body(), hang_s=b.hang_seconds)
        if b.error_5xx_rate and self.rng.random() < b.error_5xx_rate:
            code = self.rng.choice((1, 2))
            return self._fail(phone_number_id, GraphError(code, "Simulated server error"))
        try:
            try:
                body = orjson.loads(raw_body)
            except orjson.JSONDecodeError as exc:
                raise GraphError(100, "The request body is not valid JSON") from exc
            request = parse_send(body)
            if api == MARKETING_MESSAGES:
                self._marketing_template(number, request)
            outcome = self._accept(version, number, request, api)
        except GraphError as err:
            return self._fail(phone_number_id, err)
        if b.timeout_accepted_rate and self.rng.random() < b.timeout_accepted_rate:
            self.stats["timeouts_after_accept"] += 1
            self.per_number[phone_number_id]["timeouts_after_accept"] += 1
            return SendOutcome(504, GraphError(2, "Request timed out").body(), hang_s=b.hang_seconds)
        return outcome

    def _sync(self, code: int) -> bool:
        return code in self.behaviour.sync_error_codes or code not in ASYNC_BY_DEFAULT

    def _sendable_template(self, number: PhoneNumberConfig, req: SendRequest) -> StoredTemplate:
        """The template a send names, refused as Meta refuses a missing, unapproved or disabled one
        or parameters that do not fit it."""
        assert req.template_name is not None and req.template_language is not None
        stored = self.templates.find(number.waba_id, req.template_name, req.template_language)
        if stored is None or stored.status in ("PENDING", "REJECTED", "IN_APPEAL", "ARCHIVED"):
            raise GraphError(132001, f"template name ({req.template_name}) does not exist in {req.template_language}")
        if stored.status == "DISABLED":
            raise GraphError(132016, f"template {req.template_name} is disabled")
        check_template_parameters(stored.template, req.template_components)
        return stored

    def _marketing_template(self, number: PhoneNumberConfig, req: SendRequest) -> None:
        """The Marketing Messages API takes marketing templates only (code 100 otherwise)."""
        stored = self._sendable_template(number, req) if req.is_template else None
        if stored is None or stored.template.category != "MARKETING":
            raise GraphError(100, "The Marketing Messages API sends marketing templates only")

    def _accept(self, version: str, number: PhoneNumberConfig, req: SendRequest, api: str = "messages") -> SendOutcome:
        now = self.clock.now()
        wa_id = normalise_recipient(req.to)
        person = self.people.person(wa_id)  # windows, consent and the limit are the person's
        category = "service"
        stored: StoredTemplate | None = None
        async_failure: tuple[int, str] | None = None

        def problem(code: int, details: str) -> None:
            nonlocal async_failure
            if self._sync(code):
                raise GraphError(code, details)
            if async_failure is None:
                async_failure = (code, details)

        if req.is_template:
            stored = self._sendable_template(number, req)
            category = stored.template.category.lower()
            if stored.status == "PAUSED":
                problem(132015, f"template {req.template_name} is paused")
            if req.by_user_id and needs_phone_number(list(stored.template.components)):
                problem(131062, "Business-scoped user ID recipients are not supported for this message.")
        in_window = self.windows.in_service_window(number.id, person, now)
        portfolio = self.wabas[number.waba_id].portfolio
        initiated = req.is_template and not in_window  # counts against the portfolio's messaging limit
        if initiated and (over := self.reach.refusal(portfolio, person, self.portfolio_limits.get(portfolio), now)):
            problem(MESSAGING_LIMIT_CODE, over)
        if not req.is_template and not in_window:
            problem(
                131047,
                "Message failed to send because more than 24 hours have passed since the "
                "customer last replied to this number.",
            )
        if wa_id in self.unknown_recipients or (
            self.behaviour.unknown_recipient_pattern
            and re.search(self.behaviour.unknown_recipient_pattern, wa_id)
        ):
            problem(131026, "Message Undeliverable.")
        if category == "marketing" and self.consent.stopped(number.waba_id, person):
            problem(131050, "The recipient has stopped marketing messages from this business.")
        if (
            category == "marketing"
            and async_failure is None
            and self.behaviour.failure_131049_rate
            and self.rng.random() < self.behaviour.failure_131049_rate
        ):
            problem(131049, "This message was not delivered to maintain healthy ecosystem engagement.")

        mono = time.monotonic()
        if not self.throughput.allows(number.id, throughput_of(number), mono):
            raise GraphError(130429, "Message failed to send because there were too many messages sent from this "
                             f"phone number in a short period of time (limit {throughput_of(number)}/s).")
        if not self.pair_rate.try_acquire(
            number.id,
            wa_id,
            burst=self.behaviour.pair_burst,
            interval_s=self.behaviour.pair_interval_s,
            now=mono,
        ):
            raise GraphError(131056, "Message failed to send because there were too many messages sent from this "
                             "phone number to the same phone number in a short period of time.")
        self.throughput.record(number.id, mono)
        if initiated and async_failure is None:
            self.reach.record(portfolio, person, now)

        wamid = self._new_wamid(wa_id)
        api_version = _version_number(version)
        fep = False if async_failure else self.windows.entry_point_open_for_send(number.id, person, now)
        msg = SentMessage(
            wamid=wamid,
            phone_number_id=number.id,
            waba_id=number.waba_id,
            to=req.to,
            wa_id=wa_id,
            type=req.type,
            category=category,
            template_name=req.template_name,
            template_language=req.template_language,
            biz_opaque_callback_data=req.biz_opaque_callback_data,
            api_version=version,
            accepted_at=now,
            free_entry_point=fep,
            in_service_window=in_window,
            failure_code=async_failure[0] if async_failure else None,
            # statuses name the user as Meta knows them: the BSUID always, the number once shared
            recipient_phone=self.people.phone_of(wa_id) or (None if is_bsuid(wa_id) else wa_id),
            recipient_user_id=self.people.bsuid_of(wa_id) or (wa_id if is_bsuid(wa_id) else None),
            request=req.body,
            api=api,
        )
        self.sent.remember(msg)
        self.stats["requests_accepted"] += 1
        self.per_number[number.id]["accepted"] += 1
        if async_failure:
            self._plan_failure(msg, number, *async_failure)
        else:
            priced = self.pricing.price(
                phone_number_id=number.id,
                customer=wa_id,
                now=now,
                category=category,
                in_service_window=in_window,
                free_entry_point=fep,
                api_version=api_version,
            )
            self._plan_statuses(msg, number, priced)
            order = payments.order_details_of(req.body)
            if order is not None:
                self._plan_payment(msg, number, order)
            flow = flows.flow_message_of(req.body)
            if flow is not None:
                self._open_flow(msg, number, flow)
        return SendOutcome(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": req.to, "user_id" if req.by_user_id else "wa_id": wa_id}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            },
        )

    def _new_wamid(self, wa_id: str) -> str:
        raw = f"{wa_id}:{next(self._wamid_seq)}:{self.rng.getrandbits(64):016x}".encode()
        return "wamid." + base64.b64encode(b"\x15\x02\x00\x11\x18\x12" + raw).decode()

    # --- statuses -------------------------------------------------------------------------

    def _schedule(
        self, msg: SentMessage, number: PhoneNumberConfig, delay_s: float, status: dict[str, Any]
    ) -> None:
        msg.statuses.append(status)
        self.stats[f"status_{status['status']}"] += 1
        self._post_status(number, delay_s, status)

    def _post_status(self, number: PhoneNumberConfig, delay_s: float, status: dict[str, Any]) -> None:
        if self.dispatcher.url_template is None:
            return  # nowhere to post: the statuses stay observable through /_sim/messages
        waba = self.wabas[number.waba_id]
        self.dispatcher.schedule_status(delay_s, PendingStatus(
            app_id=waba.app_id, waba_id=waba.id,
            metadata={"display_phone_number": number.display_phone_number, "phone_number_id": number.id},
            status=status))

    def _plan_failure(self, msg: SentMessage, number: PhoneNumberConfig, code: int, details: str) -> None:
        from .errors import status_error

        self.stats[f"async_failure_{code}"] += 1
        self.errors_by_code[code] += 1
        self.per_number[number.id][f"failed_{code}"] += 1
        delay = self.behaviour.sent_delay_ms / 1000
        self._schedule(
            msg, number, delay, status_object(msg, "failed", delay, errors=[status_error(code, details)])
        )

    def _plan_statuses(self, msg: SentMessage, number: PhoneNumberConfig, priced: PricedMessage) -> None:
        for delay_s, status in planned_statuses(msg, priced, self.behaviour, self.rng):
            self._schedule(msg, number, delay_s, status)

    # --- payments (payments.py) -------------------------------------------------------------

    def _plan_payment(self, msg: SentMessage, number: PhoneNumberConfig, order: dict[str, Any]) -> None:
        """The customer's payment of an accepted order_details message: pending, then an outcome."""
        b = self.behaviour
        p = payments.new_payment(order, phone_number_id=number.id, wamid=msg.wamid, recipient=msg.wa_id,
                                 now=msg.accepted_at, rng=self.rng)
        self.payments[(number.id, p.reference_id)] = p
        pending_s = b.payment_pending_delay_ms / 1000
        self._schedule_payment(number, pending_s, payments.payment_status(p, "pending", pending_s))
        p.outcome = payments.decide_outcome(self.rng, b.payment_capture_ratio, b.payment_fail_ratio)
        if p.outcome != "pending":
            done_s = pending_s + b.payment_outcome_delay_ms / 1000
            p.settled_at = p.accepted_at + done_s
            if b.payment_webhook_loss_ratio and self.rng.random() < b.payment_webhook_loss_ratio:
                self.stats["payment_webhook_lost"] += 1
            else:
                self._schedule_payment(number, done_s, payments.payment_status(p, p.outcome, done_s))

    def lookup_payment(self, phone_number_id: str, configuration: str, reference_id: str,
                       authorization: str | None) -> dict[str, Any]:
        """Meta's payment lookup (``GET /{phone_number_id}/payments/{configuration}/{reference_id}``):
        the source of truth, whether or not its webhooks arrived."""
        number = self.numbers.get(phone_number_id)
        if number is None:
            raise unknown_object(phone_number_id)
        self.tokens.check(authorization, self._number_tokens_scope(number))
        p = self.payments.get((phone_number_id, reference_id))
        if p is None:
            raise GraphError(100, f"no payment with reference_id {reference_id}")
        return {"payments": [payments.lookup_entry(p, self.clock.now())]}

    def refund_payment(self, phone_number_id: str, reference_id: str, value: int | None) -> dict[str, Any]:
        """A refund through the gateway: recorded on the payment, reported by a payment update."""
        p = self.payments.get((phone_number_id, reference_id))
        number = self.numbers.get(phone_number_id)
        if p is None or number is None:
            raise KeyError(f"no payment {reference_id!r} on number {phone_number_id}")
        now = self.clock.now()
        refund = payments.add_refund(p, value, now, self.rng)
        self._schedule_payment(number, 0.0, payments.payment_status(p, "captured", now - p.accepted_at))
        return refund

    def _schedule_payment(self, number: PhoneNumberConfig, delay_s: float, status: dict[str, Any]) -> None:
        self.stats[f"payment_{status['status']}"] += 1
        self._post_status(number, delay_s, status)

    # --- Flows (flows.py) ---------------------------------------------------------------------

    def set_flows_public_key(self, phone_number_id: str, pem: str) -> None:
        """``POST /{phone_number_id}/whatsapp_business_encryption``: the business uploads its key."""
        self._flow_keys[phone_number_id] = flows.public_key_from_pem(pem)

    def flows_public_key(self, phone_number_id: str) -> rsa.RSAPublicKey | None:
        if phone_number_id not in self._flow_keys:
            number = self.numbers.get(phone_number_id)
            pem = number.flows_key() if number else None
            if pem is None:
                return None
            self._flow_keys[phone_number_id] = flows.public_key_from_pem(pem)
        return self._flow_keys[phone_number_id]

    def _open_flow(self, msg: SentMessage, number: PhoneNumberConfig, flow: flows.FlowMessage) -> None:
        """The customer received a flow message: whether and when they open it."""
        if flow.flow_action != "data_exchange":
            self.stats["flow_without_endpoint"] += 1  # navigate: the screens come with the message
            return
        if flow.flow_id not in self.flows:
            self.stats["flow_unknown"] += 1
            return
        if not any(s["status"] in ("delivered", "read") for s in msg.statuses):
            self.stats["flow_not_delivered"] += 1
            return
        if self.rng.random() >= self.behaviour.flow_open_ratio:
            self.stats["flow_not_opened"] += 1
            return
        session = flows.FlowSession(number.id, flow.flow_id, flow.flow_token)
        self.flow_sessions[(number.id, flow.flow_token)] = session
        self._spawn(self._play_flow(msg, number, session))

    async def _play_flow(self, msg: SentMessage, number: PhoneNumberConfig, session: flows.FlowSession) -> None:
        b = self.behaviour
        config = self.flows[session.flow_id]
        key = self.flows_public_key(number.id)
        await asyncio.sleep(b.flow_open_delay_ms / 1000)
        if key is None:
            session.outcome, session.problem = "failed", "the number has no Flows public key"
            self.stats["flow_failed"] += 1
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=b.flow_endpoint_timeout_s, trust_env=False)
        client, secret = self._http, self.apps[self.wabas[number.waba_id].app_id].secret()
        endpoint = config.endpoint_uri.replace("{phone_number_id}", number.id)
        screens = {name: flows.ScreenChoice(c.choose_from, c.submit_as, c.among) for name, c in config.screens.items()}

        async def exchange(payload: dict[str, Any]) -> flows.FlowExchange:
            if payload.get("action") != "INIT":
                await asyncio.sleep(b.flow_screen_delay_ms / 1000)
            problem = ""
            for _ in range(2):  # the app repeats a request once when the connection broke
                self.stats["flow_requests"] += 1
                try:
                    return await flows.exchange(client, endpoint=endpoint, public_key=key, app_secret=secret,
                                                payload=payload)
                except httpx.TimeoutException:
                    problem = "the endpoint did not answer in time"
                    break
                except httpx.HTTPError as exc:
                    problem = f"the endpoint did not answer ({type(exc).__name__})"
            return flows.FlowExchange(0, None, problem, False)

        await flows.play(exchange, session, screens, self.rng, frozenset(self.carts.get((number.id, msg.wa_id), ())))
        self.stats[f"flow_{session.outcome}"] += 1
        if session.outcome == "completed":
            hook = custom_webhook(self.business_numbers([number.id])[0], [{
                "from": msg.wa_id, "context": {"from": number.display_phone_number, "id": msg.wamid},
                "nfm_reply": {"name": "flow", "body": "Sent", "response_json": orjson.dumps(session.params).decode()},
            }], clock=self.clock.now, rng=self.rng)
            self.post_inbound(hook)

    # --- inbound --------------------------------------------------------------------------

    def business_numbers(self, ids: list[str] | None = None) -> list[BusinessNumber]:
        chosen = [self.numbers[i] for i in ids] if ids else list(self.numbers.values())
        return [
            BusinessNumber(
                phone_number_id=p.id,
                waba_id=p.waba_id,
                display_phone_number=p.display_phone_number,
                app_id=self.wabas[p.waba_id].app_id,
            )
            for p in chosen
        ]

    def record_inbound(self, webhook: InboundWebhook) -> None:
        for r in webhook.records:
            person = self.people.learn(r.phone, r.user_id) if (r.phone or r.user_id) else r.customer_id
            self.windows.record_inbound(r.phone_number_id, person, float(r.timestamp), referral=r.referral)
            self.stats["inbound_messages"] += 1
            self.per_number[r.phone_number_id]["inbound"] += 1

    def post_inbound(self, webhook: InboundWebhook) -> None:
        self.record_inbound(webhook)
        self._remember_carts(webhook.payload)
        self.stats["inbound_webhooks"] += 1
        self.dispatcher.post_payload(webhook.app_id, webhook.payload, kind="inbound")

    def _remember_carts(self, payload: dict[str, Any]) -> None:
        """What each customer put in a cart: they pick the same trip when a Flow offers it."""
        for entry in payload.get("entry", []):
            for change in entry.get("changes", []):
                value = change.get("value", {})
                number = value.get("metadata", {}).get("phone_number_id")
                for m in value.get("messages", []):
                    if m.get("type") == "order" and number and m.get("from"):
                        items = m.get("order", {}).get("product_items", [])
                        self.carts[(number, m["from"])].update(
                            str(i["product_retailer_id"]) for i in items if "product_retailer_id" in i)

    # --- consent --------------------------------------------------------------------------

    def set_marketing_preference(
        self, phone_number_id: str, customer: str, value: str, *, notify: bool
    ) -> None:
        number = self.numbers[phone_number_id]
        wa_id = normalise_recipient(customer)
        if value == "stop":
            self.consent.stop(number.waba_id, self.people.person(wa_id))
        else:
            self.consent.resume(number.waba_id, self.people.person(wa_id))
        if notify:
            waba = self.wabas[number.waba_id]
            self.dispatcher.post_payload(waba.app_id,
                                         user_preferences_webhook(number, waba, wa_id, value, self.clock.now()),
                                         kind="user_preferences")

    def change_user_id(self, phone_number_id: str, customer: str, new: str, *, notify: bool = True) -> str:
        """A user's BSUID changes (``user_id_update``); the person, their windows, consent and place
        in the limits stay. Returns the old BSUID."""
        number = self.numbers[phone_number_id]
        old = self.people.bsuid_of(customer) or customer
        self.people.change_bsuid(old, new)
        if notify:
            waba = self.wabas[number.waba_id]
            self.dispatcher.post_payload(
                waba.app_id,
                user_id_update_webhook(number, waba, old, new, self.people.phone_of(new), self.clock.now()),
                kind="user_id_update",
            )
        return old

    # --- templates ------------------------------------------------------------------------

    def list_templates(
        self, waba_id: str, authorization: str | None, query: dict[str, str]
    ) -> dict[str, Any]:
        self._check_waba(waba_id, authorization)
        items = self.templates.list(
            waba_id,
            name=query.get("name"),
            status=query.get("status"),
            category=query.get("category"),
            language=query.get("language"),
        )
        return templates_page(items, waba_id, query)

    def create_template(self, waba_id: str, authorization: str | None, body: Any) -> dict[str, Any]:
        self._check_waba(waba_id, authorization)
        template = parse_new_template(body)
        existing = self.templates.find(waba_id, template.name, template.language)
        if existing is not None:
            raise GraphError(
                100,
                f"Content in this language already exists for template {template.name} ({template.language})",
            )
        stored = self.templates.add(waba_id, template)
        self.stats["templates_created"] += 1
        self._spawn(self._approve_later(stored))
        return {"id": stored.id, "status": "PENDING", "category": stored.template.category}

    async def _approve_later(self, stored: StoredTemplate) -> None:
        await asyncio.sleep(self.behaviour.template_approval_delay_s)
        if stored.status == "PENDING":
            self.set_template_status(stored, "APPROVED")

    def _check_waba(self, waba_id: str, authorization: str | None) -> None:
        self.tokens.check(authorization, self._waba_scope(waba_id))
        if waba_id not in self.wabas:
            raise unknown_object(waba_id)

    def set_template_status(
        self, stored: StoredTemplate, status: str, *, reason: str | None = None, title: str | None = None
    ) -> None:
        self.templates.set_status(stored, status)
        self.stats[f"template_status_{status}"] += 1
        waba = self.wabas[stored.waba_id]
        self.dispatcher.post_payload(
            waba.app_id,
            template_status_webhook(stored, waba, status, reason=reason, title=title, now=self.clock.now()),
            kind="template_status",
        )

    def set_template_quality(self, stored: StoredTemplate, score: str) -> None:
        """Meta rates a template's quality (GREEN, YELLOW, RED, UNKNOWN) and reports the change."""
        previous = self.template_quality.get(stored.id, "UNKNOWN")
        self.template_quality[stored.id] = score
        waba = self.wabas[stored.waba_id]
        self.dispatcher.post_payload(waba.app_id, template_quality_webhook(
            stored, waba, previous, score, self.clock.now()), kind="template_quality")

    def add_template(self, waba_id: str, template: TemplateConfig) -> StoredTemplate:
        return self.templates.add(waba_id, template)

    # --- what Meta reports about numbers and portfolios (portfolio.py) ----------------------

    def report_number_event(self, phone_number_id: str, event: str) -> None:
        """A ``phone_number_quality_update`` (FLAGGED, UNFLAGGED, THROUGHPUT_UPGRADE, ...); an
        upgrade lifts the number to 1,000 msg/s (a coexistence number stays at 20)."""
        number = self.numbers[phone_number_id]
        if event == "THROUGHPUT_UPGRADE":
            number.throughput = UPGRADED_MPS
        waba = self.wabas[number.waba_id]
        limit = self.portfolio_limits.get(waba.portfolio)
        self.dispatcher.post_payload(waba.app_id, number_quality_webhook(
            number, waba, event, self.clock.now(), messaging_limit=-1 if limit is None else limit), kind="quality")

    def set_portfolio_limit(self, portfolio: str, messaging_limit: int) -> None:
        """Meta moved a portfolio to a new messaging limit (-1: unlimited) and reports it."""
        self.portfolio_limits[portfolio] = None if messaging_limit < 0 else messaging_limit
        wabas = [w for w in self.wabas.values() if w.portfolio == portfolio]
        for app_id in {w.app_id for w in wabas}:
            self.dispatcher.post_payload(app_id, capability_webhook(
                [w for w in wabas if w.app_id == app_id], messaging_limit, self.clock.now()), kind="capability")

    # --- queries --------------------------------------------------------------------------

    def find_messages(self, *, wamid: str | None = None, biz_opaque_callback_data: str | None = None,
                      phone_number_id: str | None = None, to: str | None = None) -> list[SentMessage]:
        return self.sent.find(wamid=wamid, biz_opaque_callback_data=biz_opaque_callback_data,
                              phone_number_id=phone_number_id, to=to)

    def stats_snapshot(self) -> dict[str, Any]:
        return {
            "requests": {
                "total": self.stats["requests"],
                "accepted": self.stats["requests_accepted"],
                "rejected": self.stats["requests_rejected"],
                "timeouts": self.stats["timeouts"],
                "timeouts_after_accept": self.stats["timeouts_after_accept"],
            },
            "errors_by_code": {str(k): v for k, v in sorted(self.errors_by_code.items())},
            "statuses": {k[len("status_") :]: v for k, v in self.stats.items() if k.startswith("status_")},
            "per_number": {pn: dict(c) for pn, c in self.per_number.items()},
            "inbound": {
                "messages": self.stats["inbound_messages"],
                "webhooks": self.stats["inbound_webhooks"],
            },
            "templates": {k: v for k, v in self.stats.items() if k.startswith("template")},
            "webhooks": dict(self.dispatcher.stats) | {"pending": self.dispatcher.pending},
            "duplicate_biz_opaque_callback_data": self.sent.duplicated_callback_data(),
        }


def _version_number(version: str) -> int:
    m = _VERSION.match(version)
    return int(m.group(1)) if m else 99

