"""Who is who, as Meta knows it: every WhatsApp user has a business-scoped user id (BSUID) per
portfolio, and a phone number Meta shares only when the user lets it (usernames, 2026).

Meta applies its rules to the person, whatever the business addressed them by: a window opened by
a username-only user holds for a reply to their phone number once they shared it, a marketing
stop holds for both, the portfolio's messaging limit counts them once. The simulator learns each
person from the traffic it generates (a message naming both identifiers ties them) and from
``user_id_update`` (a new BSUID for the same person).
"""

from __future__ import annotations

import re

_BSUID = re.compile(r"[A-Z]{2}\..+")


def is_bsuid(identifier: str) -> bool:
    return _BSUID.fullmatch(identifier) is not None


class People:
    def __init__(self) -> None:
        self._person: dict[str, str] = {}  # any identifier -> the person's key (their first BSUID)
        self._phone: dict[str, str] = {}  # person -> phone number, once shared
        self._bsuid: dict[str, str] = {}  # person -> current BSUID

    def reset(self) -> None:
        self._person.clear()
        self._phone.clear()
        self._bsuid.clear()

    def learn(self, phone: str | None, bsuid: str | None) -> str:
        """The person named by these identifiers (one message may name both: they are one)."""
        key = (bsuid and self._person.get(bsuid)) or (phone and self._person.get(phone)) or bsuid or phone
        if not key:
            raise ValueError("a user needs a phone number or a BSUID")
        for ident in (phone, bsuid):
            if ident:
                self._person[ident] = key
        if phone:
            self._phone[key] = phone
        if bsuid:
            self._bsuid.setdefault(key, bsuid)
        return key

    def person(self, identifier: str) -> str:
        """The key Meta's per-user rules use for whoever ``identifier`` names."""
        return self._person.get(identifier, identifier)

    def phone_of(self, identifier: str) -> str | None:
        return self._phone.get(self.person(identifier))

    def bsuid_of(self, identifier: str) -> str | None:
        return self._bsuid.get(self.person(identifier))

    def change_bsuid(self, old: str, new: str) -> str:
        """``user_id_update``: the person known by ``old`` is now known by ``new`` (the old id keeps
        naming them for messages already in flight)."""
        key = self.person(old)
        self._person.setdefault(old, key)
        self._person[new] = key
        self._bsuid[key] = new
        return key
