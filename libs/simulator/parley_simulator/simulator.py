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

import orjson

from .auth import AccessTokens, unknown_object
from .clock import SimClock
from .config import Behaviour, PhoneNumberConfig, SimulatorConfig, WabaConfig
from .customer_changes import CustomerChanges
from .errors import GraphError
from .flow_customers import FlowCustomers
from .flows import flow_message_of
from .limits import PairRateLimiter, ThroughputLimiter
from .payloads import (
    planned_statuses,
    status_object,
)
from .payments import PaymentGateway, order_details_of
from .people import People, is_bsuid
from .portfolio import (
    MARKETING_MESSAGES,
    MESSAGING_LIMIT_CODE,
    AccountReports,
    PortfolioReach,
    throughput_of,
)
from .pricing import PricedMessage, PricingEngine
from .sent import SentLog, SentMessage
from .template_api import TemplateManagement
from .templates import StoredTemplate, TemplateCatalogue
from .traffic import BusinessNumber, InboundWebhook
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
        self.templates = TemplateCatalogue()
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
        self.stats: Counter[str] = Counter()
        self.errors_by_code: Counter[int] = Counter()
        self.per_number: dict[str, Counter[str]] = defaultdict(Counter)
        self._wamid_seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.dispatcher = WebhookDispatcher(
            url_template=config.webhook_url,
            app_secrets={a.app_id: a.secret() for a in config.apps},
            behaviour=self.behaviour,
            rng=self.rng,
        )
        self.template_api = TemplateManagement(
            catalogue=self.templates, tokens=self.tokens, wabas=self.wabas, numbers=self.numbers,
            behaviour=self.behaviour, stats=self.stats, dispatcher=self.dispatcher, clock=self.clock, spawn=self._spawn,
        )
        self.payments = PaymentGateway(behaviour=self.behaviour, rng=self.rng, clock=self.clock, tokens=self.tokens,
                                       numbers=self.numbers, stats=self.stats, post=self._post_status)
        self.flows = FlowCustomers(config.flows, sim=self)
        self.customers = CustomerChanges(numbers=self.numbers, wabas=self.wabas, people=self.people,
                                         consent=self.consent, dispatcher=self.dispatcher, now=self.clock.now)
        self.reports = AccountReports(config.portfolios, numbers=self.numbers, wabas=self.wabas,
                                      dispatcher=self.dispatcher, now=self.clock.now)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.dispatcher.start()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.stop()
        await self.flows.close()

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
        self.flows.sessions.clear()
        self.flows.carts.clear()
        self.stats.clear()
        self.errors_by_code.clear()
        self.per_number.clear()
        self.dispatcher.reset()

    # --- auth -----------------------------------------------------------------------------

    def _number_tokens_scope(self, number: PhoneNumberConfig) -> tuple[str, ...]:
        return (number.id, number.waba_id)

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
        if initiated and (over := self.reach.refusal(portfolio, person, self.reports.limit_of(portfolio), now)):
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

        self._take_rate(number, wa_id)
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
            order = order_details_of(req.body)
            if order is not None:
                self.payments.plan(number, msg.wamid, msg.wa_id, msg.accepted_at, order)
            flow = flow_message_of(req.body)
            if flow is not None:
                self.flows.open(msg, number, flow)
        return SendOutcome(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": req.to, "user_id" if req.by_user_id else "wa_id": wa_id}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            },
        )

    def _take_rate(self, number: PhoneNumberConfig, wa_id: str) -> None:
        """Meta's rate limits, answered at once: the number's throughput (130429) and the pair
        rate to one customer (131056); a send that passes both is counted."""
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
        self.flows.remember_carts(webhook.payload)
        self.stats["inbound_webhooks"] += 1
        self.dispatcher.post_payload(webhook.app_id, webhook.payload, kind="inbound")

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

