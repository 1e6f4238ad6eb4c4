"""Meta's error codes mapped to what the sender does about them: one table, as data.

Sources: Meta's error codes page (§2 of the platform notes), its limits, and its business-scoped
user id page (131062). An error from the Cloud API
call is looked up by code; codes not in the table fall back on the HTTP status (5xx and timeouts
are retried, other 4xx fail the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    RETRY = "retry"  # send again after a delay
    THROTTLE_NUMBER = "throttle_number"  # back off the number's throughput, then retry
    THROTTLE_PAIR = "throttle_pair"  # back off this customer (4^x s), then retry
    PAUSE_NUMBER = "pause_number"  # stop sending from the number for a while, retry the message later
    FAIL = "fail"  # final failure of this message
    SUPPRESS_CONTACT = "suppress_contact"  # record the opt-out, fail this message
    SWITCH_TO_TEMPLATE = "switch_to_template"  # window closed: send the fallback template, else fail


@dataclass(frozen=True)
class ErrorRule:
    code: int
    action: Action
    meaning: str
    delay_s: float = 0.0  # minimum delay before the retry, or the pause length


ERROR_ACTIONS: tuple[ErrorRule, ...] = (
    ErrorRule(0, Action.FAIL, "authentication failed (token); fix the app's access token"),
    ErrorRule(190, Action.FAIL, "access token expired; fix the app's access token"),
    ErrorRule(3, Action.FAIL, "capability or permission missing"),
    ErrorRule(10, Action.FAIL, "permission denied"),
    ErrorRule(200, Action.FAIL, "permission missing"),
    ErrorRule(4, Action.RETRY, "app API call limit", 60.0),
    ErrorRule(80007, Action.RETRY, "WABA rate limit", 60.0),
    ErrorRule(130429, Action.THROTTLE_NUMBER, "per-number throughput exceeded", 1.0),
    ErrorRule(131056, Action.THROTTLE_PAIR, "pair rate limit to this customer", 4.0),
    ErrorRule(131048, Action.PAUSE_NUMBER, "spam rate limit: too many blocks or reports", 300.0),
    ErrorRule(131057, Action.RETRY, "account in maintenance or throughput upgrade", 60.0),
    ErrorRule(131047, Action.SWITCH_TO_TEMPLATE, "more than 24 hours since the customer's last message"),
    ErrorRule(131026, Action.FAIL, "message undeliverable to this recipient"),
    ErrorRule(131049, Action.FAIL, "per-user marketing limit; retrying within 24 h gets blocked"),
    ErrorRule(131050, Action.SUPPRESS_CONTACT, "the customer stopped marketing messages from this business"),
    ErrorRule(130472, Action.FAIL, "the customer is part of a Meta experiment"),
    ErrorRule(131062, Action.FAIL, "this message cannot go to a business-scoped user id; it needs a phone number"),
    ErrorRule(131051, Action.FAIL, "unsupported message type"),
    ErrorRule(131052, Action.FAIL, "media download failed"),
    ErrorRule(131053, Action.FAIL, "media upload failed"),
    ErrorRule(131042, Action.PAUSE_NUMBER, "business payment issue", 3600.0),
    ErrorRule(131031, Action.PAUSE_NUMBER, "account locked", 3600.0),
    ErrorRule(368, Action.PAUSE_NUMBER, "temporarily blocked for policy violations", 3600.0),
    ErrorRule(100, Action.FAIL, "invalid parameter"),
    ErrorRule(132000, Action.FAIL, "template parameter count mismatch"),
    ErrorRule(132001, Action.FAIL, "template missing in that language or not approved"),
    ErrorRule(132005, Action.FAIL, "translated text too long"),
    ErrorRule(132007, Action.FAIL, "template violates policy"),
    ErrorRule(132012, Action.FAIL, "template parameter format mismatch"),
    ErrorRule(132015, Action.FAIL, "template paused"),
    ErrorRule(132016, Action.FAIL, "template disabled"),
)

_BY_CODE = {r.code: r for r in ERROR_ACTIONS}
# 200-299 are all permission errors.
_PERMISSION = ErrorRule(200, Action.FAIL, "permission missing")


def action_for(code: int | None, http_status: int | None = None) -> ErrorRule:
    """What to do about an error from the Cloud API (``code`` None: no Meta error body)."""
    if code is not None:
        if code in _BY_CODE:
            return _BY_CODE[code]
        if 200 <= code <= 299:
            return _PERMISSION
    if http_status is None or http_status >= 500 or http_status == 429:
        return ErrorRule(code or 0, Action.RETRY, "server error, timeout or unreachable", 1.0)
    return ErrorRule(code or 0, Action.FAIL, f"unexpected error (HTTP {http_status})")
