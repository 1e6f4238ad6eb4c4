"""What the simulator knows about each customer: the 24-hour customer-service window, the
72-hour free entry point opened by a click-to-WhatsApp ad, and marketing consent."""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_WINDOW_S = 24 * 3600
ENTRY_POINT_REPLY_S = 24 * 3600  # the business must reply within 24 h of the ad message
ENTRY_POINT_WINDOW_S = 72 * 3600


@dataclass
class _Customer:
    last_inbound: float | None = None
    referral_at: float | None = None  # last inbound that came from an ad
    entry_point_until: float | None = None
    entry_point_referral: float | None = None  # the referral that opened the current FEP


class CustomerWindows:
    def __init__(self) -> None:
        self._customers: dict[tuple[str, str], _Customer] = {}

    def record_inbound(
        self, phone_number_id: str, customer: str, at: float, *, referral: bool = False
    ) -> None:
        c = self._customers.setdefault((phone_number_id, customer), _Customer())
        if c.last_inbound is None or at > c.last_inbound:
            c.last_inbound = at
        if referral and (c.referral_at is None or at > c.referral_at):
            c.referral_at = at

    def forget(self, phone_number_id: str, customer: str) -> None:
        self._customers.pop((phone_number_id, customer), None)

    def last_inbound(self, phone_number_id: str, customer: str) -> float | None:
        c = self._customers.get((phone_number_id, customer))
        return c.last_inbound if c else None

    def in_service_window(self, phone_number_id: str, customer: str, now: float) -> bool:
        last = self.last_inbound(phone_number_id, customer)
        return last is not None and last <= now < last + SERVICE_WINDOW_S

    def entry_point_open_for_send(self, phone_number_id: str, customer: str, now: float) -> bool:
        """Whether a business message sent now falls in a free entry point (opening one if due).

        The window opens with the business's first reply within 24 h of the ad message and
        lasts 72 h; a later ad message can open a new one after it closed.
        """
        c = self._customers.get((phone_number_id, customer))
        if c is None:
            return False
        if c.entry_point_until is not None and now < c.entry_point_until:
            return True
        if (
            c.referral_at is not None
            and c.referral_at != c.entry_point_referral
            and c.referral_at <= now < c.referral_at + ENTRY_POINT_REPLY_S
        ):
            c.entry_point_referral = c.referral_at
            c.entry_point_until = now + ENTRY_POINT_WINDOW_S
            return True
        return False

    def entry_point_until(self, phone_number_id: str, customer: str) -> float | None:
        c = self._customers.get((phone_number_id, customer))
        return c.entry_point_until if c else None

    def reset(self) -> None:
        self._customers.clear()


class MarketingConsent:
    """Customers who stopped marketing from a business (keyed by WABA)."""

    def __init__(self) -> None:
        self._stopped: set[tuple[str, str]] = set()

    def stop(self, waba_id: str, customer: str) -> None:
        self._stopped.add((waba_id, customer))

    def resume(self, waba_id: str, customer: str) -> None:
        self._stopped.discard((waba_id, customer))

    def stopped(self, waba_id: str, customer: str) -> bool:
        return (waba_id, customer) in self._stopped

    def reset(self) -> None:
        self._stopped.clear()
