"""The sender's results on wa.sends, built from a recorded row (one outcome per state)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from parley_common.contracts import SendResult

from parley_sender.domain.outcomes import MessageState
from parley_sender.store import MessageRow


def now_utc() -> datetime:
    return datetime.now(UTC)


def result_json(row: MessageRow, send_span: str | None = None) -> bytes:
    """``result_of(row).model_dump_json()`` without building and validating the model (hot path:
    one per send). The same JSON, field for field (tests/sender/test_fast_paths.py checks it)."""
    outcome = MessageState(row.state).outcome
    now = now_utc()
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": f"{row.message_id}:{outcome}",
            "tenant_id": row.tenant_id,
            "phone_number_id": row.phone_number_id,
            "occurred_at": now,
            "received_at": now,
            "tenant_source": None,  # the sender's own record: its tenant is the request's, checked
            "message_id": row.message_id,
            "outcome": outcome,
            "wamid": row.wamid,
            "recipient": row.recipient,
            "is_template": row.is_template,
            "template_name": row.template_name,
            "category": row.category,
            "free_window": row.free_window,
            "reason": row.reason,
            "error_code": row.error_code,
            "attempt": row.attempt,
            "send_span": send_span,
        },
        option=orjson.OPT_UTC_Z,
    )


def result_of(row: MessageRow) -> SendResult:
    outcome = MessageState(row.state).outcome
    return SendResult(
        event_id=f"{row.message_id}:{outcome}",
        tenant_id=row.tenant_id,
        phone_number_id=row.phone_number_id,
        occurred_at=now_utc(),
        message_id=row.message_id,
        outcome=outcome,
        wamid=row.wamid,
        recipient=row.recipient,
        is_template=row.is_template,
        template_name=row.template_name,
        category=row.category,
        free_window=row.free_window,
        reason=row.reason,
        error_code=row.error_code,
        attempt=row.attempt,
    )
