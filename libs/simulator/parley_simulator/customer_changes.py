"""What a customer changes about themselves, as Meta reports it by webhook: their marketing
preference ("Stop promotions" / resume: ``user_preferences``) and their business-scoped user id
(``user_id_update``); the person, their windows and their place in the limits stay."""

from __future__ import annotations

from collections.abc import Callable

from .config import PhoneNumberConfig, WabaConfig
from .payloads import user_id_update_webhook, user_preferences_webhook
from .people import People
from .validation import normalise_recipient
from .webhooks import WebhookDispatcher
from .windows import MarketingConsent


class CustomerChanges:
    def __init__(self, *, numbers: dict[str, PhoneNumberConfig], wabas: dict[str, WabaConfig], people: People,
                 consent: MarketingConsent, dispatcher: WebhookDispatcher, now: Callable[[], float]) -> None:
        self.numbers = numbers
        self.wabas = wabas
        self.people = people
        self.consent = consent
        self.dispatcher = dispatcher
        self.now = now

    def set_marketing_preference(
        self, phone_number_id: str, customer: str, value: str, *, notify: bool
    ) -> None:
        number = self.numbers[phone_number_id]
        wa_id = normalise_recipient(customer)
        if value == "stop":
            self.consent.stop(number.waba_id, self.people.person(wa_id))
        else:
            self.consent.resume(number.waba_id, self.people.person(wa_id))
        if notify:
            waba = self.wabas[number.waba_id]
            self.dispatcher.post_payload(waba.app_id,
                                         user_preferences_webhook(number, waba, wa_id, value, self.now()),
                                         kind="user_preferences")

    def change_user_id(self, phone_number_id: str, customer: str, new: str, *, notify: bool = True) -> str:
        """A user's BSUID changes (``user_id_update``); the person, their windows, consent and place
        in the limits stay. Returns the old BSUID."""
        number = self.numbers[phone_number_id]
        old = self.people.bsuid_of(customer) or customer
        self.people.change_bsuid(old, new)
        if notify:
            waba = self.wabas[number.waba_id]
            self.dispatcher.post_payload(
                waba.app_id,
                user_id_update_webhook(number, waba, old, new, self.people.phone_of(new), self.now()),
                kind="user_id_update",
            )
        return old
