"""One customer of a portfolio, whatever Meta calls them: phone number, BSUID, parent BSUID.

Meta identifies a customer by a business-scoped user id (BSUID, ``GB.1349…``) in every webhook,
by their phone number only when it shares it, and by a parent BSUID (``GB.ENT.…``) across the
portfolios of a managed business; a customer with a username may never show a phone number. One
person who writes once by phone number and once by username is one contact (ADR 0117):

- a webhook naming two identifiers of one person merges the contacts holding them (the older
  contact is kept; the other's state - windows, consent, the messaging limit's place - is folded
  into it by :func:`merge_windows` and :func:`merge_consent`);
- ``user_id_update`` moves the contact to its new BSUID (:func:`change_bsuid`); its key stays;
- a contact's key (``contact_id``) is the first identifier the portfolio saw for the person, so
  state keyed by a phone number or a BSUID before contacts existed stays keyed the same.

Pure: the caller reads the contacts holding a sighting's identifiers and writes the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from parley_sender.domain.consent import ConsentState
from parley_sender.domain.windows import ConversationWindows, FreeEntryPointWindow


@dataclass(frozen=True)
class Sighting:
    """What one webhook (or send request) says about who the customer is."""

    phone: str | None = None
    bsuid: str | None = None
    parent_bsuid: str | None = None
    username: str | None = None

    def identifiers(self) -> tuple[str, ...]:
        return tuple(i for i in (self.phone, self.bsuid, self.parent_bsuid) if i)


@dataclass(frozen=True)
class Contact:
    contact_id: str  # the key of every per-person rule; never changes
    first_seen: datetime
    phone: str | None = None
    bsuid: str | None = None
    parent_bsuid: str | None = None
    username: str | None = None

    def identifiers(self) -> tuple[str, ...]:
        return tuple(i for i in (self.phone, self.bsuid, self.parent_bsuid) if i)

    @property
    def address(self) -> tuple[str, str]:
        """How Meta is to be addressed: ``("to", phone)`` when known, else ``("recipient", id)``."""
        if self.phone:
            return "to", self.phone
        return "recipient", self.bsuid or self.parent_bsuid or self.contact_id


@dataclass(frozen=True)
class Resolution:
    contact: Contact
    absorbed: tuple[str, ...] = ()  # contact ids merged into ``contact`` (their state moves to it)

    @property
    def merged(self) -> bool:
        return bool(self.absorbed)


class NoIdentifier(ValueError):
    """A sighting with neither phone number nor user id names nobody."""


def resolve(found: Sequence[Contact], seen: Sighting, at: datetime) -> Resolution:
    """The contact of ``seen``, given the contacts ``found`` holding any of its identifiers.

    None found: a new contact keyed by its first identifier (phone number, else BSUID). One or
    more: the oldest is kept (ties by key) and the others are absorbed into it. What the sighting
    says wins over what was stored (a newer BSUID, a username set); what it leaves out is kept.
    """
    if not seen.identifiers():
        raise NoIdentifier("a customer needs a phone number or a business-scoped user id")
    if not found:
        key = seen.identifiers()[0]
        return Resolution(Contact(key, at, seen.phone, seen.bsuid, seen.parent_bsuid, seen.username))
    ordered = sorted({c.contact_id: c for c in found}.values(), key=lambda c: (c.first_seen, c.contact_id))
    keeper, others = ordered[0], ordered[1:]
    newest_first = [c for c in reversed(ordered) if c is not keeper] + [keeper]

    def pick(name: str) -> str | None:
        value = getattr(seen, name)
        if value:
            return str(value)
        return next((getattr(c, name) for c in newest_first if getattr(c, name)), None)

    merged = replace(
        keeper,
        phone=pick("phone"),
        bsuid=pick("bsuid"),
        parent_bsuid=pick("parent_bsuid"),
        username=pick("username"),
    )
    return Resolution(merged, tuple(c.contact_id for c in others))


def change_bsuid(contact: Contact, old: str, new: str) -> Contact:
    """``user_id_update``: the contact that held ``old`` is now known by ``new``."""
    if contact.bsuid == old or contact.bsuid is None:
        return replace(contact, bsuid=new)
    return contact


def merge_windows(kept: ConversationWindows, absorbed: ConversationWindows) -> ConversationWindows:
    """One person's windows with one number, from two contacts: the latest of each event."""
    csw = kept.csw
    if absorbed.csw.last_inbound_at is not None:
        csw = csw.observe(absorbed.csw.last_inbound_at)
    return ConversationWindows(csw, _merge_fep(kept.fep, absorbed.fep))


def _merge_fep(a: FreeEntryPointWindow, b: FreeEntryPointWindow) -> FreeEntryPointWindow:
    started = _latest(a.started_at, b.started_at)
    referral = _latest(a.referral_at, b.referral_at)
    return FreeEntryPointWindow(referral_at=referral, started_at=started)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_consent(kept: ConsentState, absorbed: ConsentState) -> ConsentState:
    """The person's latest word on marketing, whichever identifier they gave it under."""
    if absorbed.changed_at is None:
        return kept
    if kept.changed_at is None or absorbed.changed_at > kept.changed_at:
        return absorbed
    return kept

