"""The outcome of one send request, built from what happened (the rules are in
:mod:`parley_sender.domain.outcomes`; this applies them with the process's governor and metrics)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from parley_common.contracts import OutboundMessage
from parley_common.deadletter import is_transient
from parley_common.tenancy.models import Tenant

from parley_sender.cloudapi import SendResponse
from parley_sender.domain.outcomes import Kind, MessageState, Throttle, interpret, plan_retry
from parley_sender.domain.policy import Refusal, SendPlan
from parley_sender.effects import Outcome
from parley_sender.pacing import NumberPacer, NumberStates
from parley_sender.results import now_utc
from parley_sender.settings import SenderSettings
from parley_sender.store import MessageRow

if TYPE_CHECKING:
    from parley_sender.delivery import Metrics

S = MessageState


class OutcomeBuilder:
    def __init__(
        self,
        settings: SenderSettings,
        metrics: Metrics,
        numbers: NumberStates,
        pacer: Callable[[str], NumberPacer],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.numbers = numbers
        self.pacer = pacer

    def not_recorded(
        self, m: OutboundMessage, plan: SendPlan, tenant: Tenant, raw: bytes | None, exc: Exception
    ) -> Outcome:
        """Its 'sending' row could not be written, so no call was made."""
        if is_transient(exc):  # the database is away: not sent, read again from this offset later
            return self.released(m, plan, tenant)
        reason = f"the database refused the request ({type(exc).__name__})"
        self.metrics.sends.labels("failed", "unstorable").inc()
        row = self.row(m, plan, tenant.tenant_id, S.DEAD, reason=reason)
        return Outcome(row, written=True, dead_letter_reason=reason, dead_letter_value=raw)

    def conclude(self, m: OutboundMessage, plan: SendPlan, tenant: Tenant, resp: SendResponse) -> Outcome:
        verdict = interpret(
            accepted=resp.accepted,
            in_doubt=resp.in_doubt,
            error_code=resp.error_code,
            http_status=resp.http_status,
            has_fallback_template=m.fallback_template is not None and m.type != "template",
        )
        tid, number = tenant.tenant_id, m.phone_number_id
        if verdict.kind is Kind.ACCEPTED:
            self.numbers.pair(number).on_success(m.customer_id)
            self.metrics.accepted(plan.category).inc()
            self.metrics.accepted_on(number)
            status = None if resp.message_status in (None, "accepted") else resp.message_status
            row = self.row(m, plan, tid, S.ACCEPTED, wamid=resp.wamid, reason=status)
            return Outcome(row, reached=plan.business_initiated, fep_started=plan.free_window == "free_entry_point")
        if verdict.kind is Kind.IN_DOUBT:
            self.metrics.sends.labels("in_doubt", "in_doubt").inc()  # the error text is no label
            row = self.row(m, plan, tid, S.IN_DOUBT, reason=f"in doubt: {resp.error_message}")
            return Outcome(row, publish_result=False)
        code = resp.error_code
        reason = f"{verdict.meaning} ({resp.error_details or resp.error_message or ''})"[:500]
        if verdict.kind is Kind.RETRY:
            delay = verdict.delay_s
            if verdict.throttle is not Throttle.NONE:
                self.metrics.throttled.labels(number, str(code)).inc()
            if verdict.throttle is Throttle.NUMBER:
                self.pacer(number).on_throttled()
            elif verdict.throttle is Throttle.PAIR:
                delay = self.numbers.pair(number).on_throttled(m.customer_id, time.monotonic())
            elif verdict.throttle is Throttle.PAUSE:
                self.pacer(number).pause(verdict.delay_s)
            return self.retry(m, plan, tid, reason, code, delay)
        if verdict.kind is Kind.SWITCH_TO_TEMPLATE:
            nxt = m.model_copy(
                update={
                    "type": "template",
                    "template": m.fallback_template,
                    "fallback_template": None,
                    "attempt": m.attempt + 1,
                    "not_before": None,
                }
            )
            row = self.row(nxt, plan, tid, S.RETRYING, reason=reason, error_code=code)
            return Outcome(row, publish_result=False, retry=nxt)
        failed = self.failed(m, tid, plan, reason, code)
        failed.consent_stop = verdict.consent_stop
        return failed

    def row(
        self,
        m: OutboundMessage,
        plan: SendPlan | None,
        tenant_id: str | None,
        state: MessageState,
        *,
        request_json: bytes | None = None,
        keep_request: bool = False,
        **kw: Any,
    ) -> MessageRow:
        """``request_json``: the request as received (its record's value), stored as is;
        ``keep_request``: store this (changed) request instead (a retry's next attempt)."""
        return MessageRow(
            message_id=m.message_id,
            tenant_id=tenant_id,
            phone_number_id=m.phone_number_id,
            recipient=m.customer_id,  # the contact: every per-person rule keys on it (ADR 0117)
            state=state.value,
            attempt=m.attempt,
            callback_data=m.message_id,
            is_template=plan.is_template if plan else m.type == "template",
            template_name=plan.template_name if plan else (m.template.name if m.template else None),
            category=plan.category if plan else None,
            free_window=plan.free_window if plan else None,
            business_initiated=plan.business_initiated if plan else False,
            request=m.model_dump(mode="json") if keep_request else None,
            request_json=request_json.decode() if request_json is not None else None,
            **kw,
        )

    def refused(self, m: OutboundMessage, tenant_id: str | None, refusal: Refusal) -> Outcome:
        self.metrics.sends.labels("refused", refusal.reason).inc()
        reason = f"{refusal.reason}: {refusal.detail}"
        return Outcome(self.row(m, None, tenant_id, S.REFUSED, reason=reason, error_code=refusal.error_code))

    def failed(
        self,
        m: OutboundMessage,
        tenant_id: str | None,
        plan: SendPlan | None,
        reason: str,
        code: int | None,
        *,
        dead: bool = False,
    ) -> Outcome:
        self.metrics.sends.labels("failed", str(code or "none")).inc()
        row = self.row(
            m, plan, tenant_id, S.DEAD if dead else S.FAILED, reason=reason, error_code=code, keep_request=dead
        )
        return Outcome(row, dead_letter_reason=reason if dead else None)

    def retry(
        self,
        m: OutboundMessage,
        plan: SendPlan | None,
        tenant_id: str,
        reason: str,
        code: int | None,
        min_delay: float,
        *,
        counts_as_attempt: bool = True,
    ) -> Outcome:
        s = self.settings
        retry = plan_retry(
            m.attempt,
            min_delay_s=min_delay,
            max_attempts=s.max_attempts,
            initial_s=s.retry_initial_s,
            max_s=s.retry_max_s,
            jitter=random.random(),
            counts_as_attempt=counts_as_attempt,
        )
        if retry.exhausted:
            return self.failed(m, tenant_id, plan, f"attempts exhausted: {reason}", code, dead=True)
        nxt = m.model_copy(
            update={"attempt": retry.attempt, "not_before": now_utc() + timedelta(seconds=retry.delay_s)}
        )
        self.metrics.sends.labels("retrying", str(code or "none")).inc()
        row = self.row(nxt, plan, tenant_id, S.RETRYING, reason=reason, error_code=code, keep_request=True)
        return Outcome(row, publish_result=False, retry=nxt)

    def released(self, m: OutboundMessage, plan: SendPlan, tenant: Tenant) -> Outcome:
        """Not sent: the partition went to another consumer (or the process is stopping, or the
        database could not record the call) first. Recorded as ``retrying`` at the same attempt,
        so the next reader of the partition, from the committed offset, sends it normally."""
        row = self.row(m, plan, tenant.tenant_id, S.RETRYING, reason="released: not sent")
        return Outcome(row, publish_result=False, released=True)
