"""The 24-hour customer-service window and the 72-hour free entry point, in event time.

A customer's message opens (or resets) the customer-service window (CSW) of that business
number for 24 hours from the message's own timestamp (Meta's, not the time Parley saw it).
A message from a click-to-WhatsApp ad (``referral``) additionally offers a free entry point
(FEP): if the business replies within 24 hours, every message is free for 72 hours from that
reply (Meta's pricing documentation). The CSW still governs free-form sends inside an FEP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

CSW_LENGTH = timedelta(hours=24)
FEP_REPLY_DEADLINE = timedelta(hours=24)
FEP_LENGTH = timedelta(hours=72)

CUSTOMER_SERVICE = "customer_service"
FREE_ENTRY_POINT = "free_entry_point"


@dataclass(frozen=True)
class CustomerServiceWindow:
    """The last inbound message of one customer to one business number."""

    last_inbound_at: datetime | None = None

    def observe(self, inbound_at: datetime) -> CustomerServiceWindow:
        """Event time moves forward only: a late, older message never shortens the window."""
        if self.last_inbound_at is None or inbound_at > self.last_inbound_at:
            return replace(self, last_inbound_at=inbound_at)
        return self

    def is_open(self, at: datetime) -> bool:
        return (
            self.last_inbound_at is not None
            and self.last_inbound_at <= at + _CLOCK_SKEW
            and at < self.last_inbound_at + CSW_LENGTH
        )

    def closes_at(self) -> datetime | None:
        return self.last_inbound_at + CSW_LENGTH if self.last_inbound_at else None


# Meta's timestamps and ours may disagree by a little; an inbound "from the future" by less than
# this still opens the window.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class FreeEntryPointWindow:
    """An ad referral and, once the business replied in time, the 72-hour free window."""

    referral_at: datetime | None = None
    started_at: datetime | None = None  # the business's first reply within 24 h of the referral

    def observe_referral(self, at: datetime) -> FreeEntryPointWindow:
        if self.referral_at is None or at > self.referral_at:
            # A new referral after an expired FEP offers a new one.
            if self.started_at is not None and at >= self.started_at + FEP_LENGTH:
                return FreeEntryPointWindow(referral_at=at)
            return replace(self, referral_at=at)
        return self

    def is_open(self, at: datetime) -> bool:
        """Would a message sent at ``at`` be inside a free entry point window?"""
        if self.started_at is not None:
            return self.started_at <= at < self.started_at + FEP_LENGTH
        return (
            self.referral_at is not None
            and self.referral_at <= at + _CLOCK_SKEW
            and at < self.referral_at + FEP_REPLY_DEADLINE
        )

    def on_send(self, at: datetime) -> FreeEntryPointWindow:
        """The business replied at ``at``: the first reply in time starts the 72 hours."""
        if self.started_at is None and self.is_open(at):
            return replace(self, started_at=at)
        return self


@dataclass(frozen=True)
class ConversationWindows:
    """Both windows of one (business number, customer)."""

    csw: CustomerServiceWindow = CustomerServiceWindow()
    fep: FreeEntryPointWindow = FreeEntryPointWindow()

    def observe_inbound(self, at: datetime, *, from_referral: bool) -> ConversationWindows:
        fep = self.fep.observe_referral(at) if from_referral else self.fep
        return ConversationWindows(self.csw.observe(at), fep)

    def free_window(self, at: datetime) -> str | None:
        """The free window a message sent at ``at`` falls in, as reported to billing."""
        if self.fep.is_open(at):
            return FREE_ENTRY_POINT
        if self.csw.is_open(at):
            return CUSTOMER_SERVICE
        return None
