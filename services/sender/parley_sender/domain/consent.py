"""Marketing consent: who stopped marketing from a business, and who Meta will not deliver it to.

Opt-outs arrive from the router (keywords, "Stop promotions" taps), from Meta's
``user_preferences`` webhooks and from error 131050. They suppress *marketing* only; utility and
authentication templates are unaffected. Marketing to US numbers is refused outright: Meta has
not delivered it since 2025-04-01 (Meta: per-user marketing template limits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import phonenumbers

MARKETING = "marketing"
# US territories share the +1 country code and are treated as US numbers by Meta's rule.
UNDELIVERABLE_MARKETING_REGIONS = frozenset({"US", "PR", "VI", "GU", "AS", "MP"})


def region_of(recipient: str) -> str | None:
    """ISO region of a phone number (digits, with or without +) or of a BSUID (``US.abc…``)."""
    if not recipient:
        return None
    if "." in recipient and recipient.split(".", 1)[0].isalpha():
        return recipient.split(".", 1)[0].upper()
    try:
        number = phonenumbers.parse("+" + recipient.lstrip("+"))
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(number)


def marketing_undeliverable_to(recipient: str) -> bool:
    return region_of(recipient) in UNDELIVERABLE_MARKETING_REGIONS


@dataclass(frozen=True)
class ConsentState:
    marketing_stopped: bool = False
    changed_at: datetime | None = None
    source: str | None = None

    def apply(self, action: str, at: datetime, source: str) -> ConsentState:
        """Later changes win; an older change arriving late is ignored."""
        if self.changed_at is not None and at < self.changed_at:
            return self
        return ConsentState(action == "stop", at, source)


@dataclass
class ConsentBook:
    """Consent of one tenant's customers (customer id -> state)."""

    states: dict[str, ConsentState] = field(default_factory=dict)

    def apply(self, customer_id: str, action: str, at: datetime, source: str) -> ConsentState:
        new = self.states.get(customer_id, ConsentState()).apply(action, at, source)
        self.states[customer_id] = new
        return new

    def marketing_allowed(self, customer_id: str) -> bool:
        return not self.states.get(customer_id, ConsentState()).marketing_stopped
