"""Keep phone numbers and message text out of logs, span attributes and metric labels."""

from __future__ import annotations

import hashlib
import hmac
import re

_PHONE = re.compile(r"\+?\d[\d \-()]{7,}\d")
_SENSITIVE_KEYS = frozenset({
    "text", "body", "caption", "message", "to", "from", "wa_id", "recipient", "recipient_id",
    "customer_wa_id", "phone", "phone_number", "profile_name", "name", "customer_id",
    "display_phone_number", "customer_username",
})


class Redactor:
    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def pseudonym(self, value: str) -> str:
        """A keyed, stable pseudonym: the same customer correlates across logs, nobody reverses it."""
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return f"h:{digest[:16]}"

    def scrub_text(self, text: str) -> str:
        return _PHONE.sub(lambda m: self.pseudonym(re.sub(r"\D", "", m.group())), text)

    def scrub_value(self, key: str, value: object) -> object:
        if key.lower() in _SENSITIVE_KEYS and isinstance(value, str | int):
            return self.pseudonym(str(value))
        if isinstance(value, str):
            return self.scrub_text(value)
        return value
