"""One customer of a portfolio, whatever Meta calls them: phone number, BSUID, parent BSUID.

Meta identifies a customer by a business-scoped user id (BSUID, ``GB.1349…``) in every webhook,
by their phone number only when it shares it, and by a parent BSUID (``GB.ENT.…``) across the
portfolios of a managed business; a customer with a username may never show a phone number. One
person who writes once by phone number and once by username is one contact (ADR 0117):

- a webhook naming two identifiers of one person merges the contacts holding them (the older
  contact is kept; ingest announces the merge and each service folds the state it keeps under
  the absorbed key into the kept one);
- ``user_id_update`` moves the contact to its new BSUID (:func:`change_bsuid`); its key stays;
- a contact's key (``contact_id``) is the first identifier the portfolio saw for the person, so
  state keyed by a phone number or a BSUID before contacts existed stays keyed the same.

Ingest decides the contact once, where the event enters, and it travels with the event
(``contact_id``), like the tenant. Pure: the caller (``parley_ingest.contacts``) reads the contacts
holding a sighting's identifiers and writes the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime


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


def is_parent_bsuid(user_id: str) -> bool:
    """A parent BSUID (``US.ENT.…``) spans the portfolios of a managed business."""
    return user_id[3:7] == "ENT." if len(user_id) > 7 else False


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


@dataclass(frozen=True)
class BsuidChange:
    """``user_id_update``: the customer known by ``old`` is now known by ``new``."""

    old: str
    new: str
    phone: str | None = None


@dataclass
class ContactBatch:
    """One tenant's contacts touched by one webhook or request, resolved in order.

    ``known`` holds the contacts the store found for the batch's identifiers (each under every
    identifier it holds); after :meth:`see` and :meth:`change`, ``changed`` are the contacts to
    write, ``absorbed`` the keys merged away (kept contact → absorbed keys), and :meth:`key_of`
    answers the contact key of any identifier seen.
    """

    known: dict[str, Contact]
    changed: dict[str, Contact] = field(default_factory=dict)
    absorbed: dict[str, list[str]] = field(default_factory=dict)

    def see(self, seen: Sighting, at: datetime) -> Contact:
        found = [self.known[i] for i in seen.identifiers() if i in self.known]
        result = resolve(found, seen, at)
        self._keep(result.contact, result.absorbed)
        return result.contact

    def change(self, update: BsuidChange, at: datetime) -> Contact:
        holder = self.known.get(update.old)
        if holder is None:  # a change for someone this tenant never saw: known from now on
            return self.see(Sighting(phone=update.phone, bsuid=update.new), at)
        moved = change_bsuid(holder, update.old, update.new)
        found = [moved] + [c for i in (update.new, update.phone) if i and (c := self.known.get(i))]
        result = resolve(found, Sighting(phone=update.phone, bsuid=update.new), at)
        self._keep(result.contact, result.absorbed)
        return result.contact

    def key_of(self, identifier: str) -> str | None:
        contact = self.known.get(identifier)
        return contact.contact_id if contact is not None else None

    def _keep(self, contact: Contact, absorbed: tuple[str, ...]) -> None:
        gone = set(absorbed)
        for ident, held in list(self.known.items()):
            if held.contact_id in gone or held.contact_id == contact.contact_id:
                self.known[ident] = contact
        for ident in contact.identifiers():
            self.known[ident] = contact
        self.changed[contact.contact_id] = contact
        for key in absorbed:
            self.changed.pop(key, None)
            self.absorbed.setdefault(contact.contact_id, []).extend(
                [key, *self.absorbed.pop(key, [])]
            )
