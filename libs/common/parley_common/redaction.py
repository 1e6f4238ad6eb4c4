"""Keep phone numbers, user ids, usernames, contact keys and message text out of logs, spans and metrics.

Values under a sensitive key (``text``, ``to``, ``user_id``…) become a keyed pseudonym, at any depth
of a structured value; elsewhere, text that looks like a phone number or a business-scoped user id
(BSUID, ``US.13491208655302741918``) is replaced by its pseudonym, and the ``input_value=…`` that
pydantic puts into validation errors (the offending input, message text included) is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

_PHONE = re.compile(r"\+?\d[\d \-()]{7,}\d")
# ISO country code, a dot, alphanumerics (``US.ENT.…`` for a parent BSUID); Meta's format.
_BSUID = re.compile(r"\b[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{6,128}\b")
# A WhatsApp username as Meta shows it (``@jo.buys``); an e-mail address's local part goes too.
_USERNAME = re.compile(r"(?<![\w.])@[A-Za-z0-9][A-Za-z0-9._]{1,62}[A-Za-z0-9]")
# pydantic: "... [type=string_type, input_value='hello there', input_type=str]"
_PYDANTIC_INPUT = re.compile(r"input_value=.*?(?=, input_type=)", re.S)
_SENSITIVE_KEYS = frozenset({
    "text", "body", "caption", "message", "to", "from", "wa_id", "recipient", "recipient_id",
    "customer_wa_id", "phone", "phone_number", "profile_name", "name", "customer_id",
    "display_phone_number", "customer_username", "username", "user_id", "parent_user_id",
    "customer_user_id", "customer_parent_user_id", "recipient_user_id", "recipient_parent_user_id",
    "to_user_id", "input", "payload", "value", "request", "request_json",
    # contacts (ADR 0117): a contact key is a phone number or a BSUID
    "contact_id", "contacts", "absorbed", "customer", "bsuid", "parent_bsuid",
})
_PERSONAL = re.compile(f"(?P<bsuid>{_BSUID.pattern})|(?P<username>{_USERNAME.pattern})|(?P<phone>{_PHONE.pattern})")
_MAX_DEPTH = 8


class Redactor:
    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def pseudonym(self, value: str) -> str:
        """A keyed, stable pseudonym: the same customer correlates across logs, nobody reverses it."""
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return f"h:{digest[:16]}"

    def scrub_text(self, text: str) -> str:
        text = _PYDANTIC_INPUT.sub("input_value=<redacted>", text)
        # one pass, so that a pseudonym's own digits are never taken for a phone number
        return _PERSONAL.sub(self._pseudonym_of_match, text)

    def _pseudonym_of_match(self, m: re.Match[str]) -> str:
        if m.lastgroup == "phone":
            return self.pseudonym(re.sub(r"\D", "", m.group()))
        return self.pseudonym(m.group())

    def scrub_value(self, key: str, value: object, _depth: int = 0) -> object:
        """``value`` as it may be logged under ``key``: containers are scrubbed item by item."""
        if key.lower() in _SENSITIVE_KEYS and isinstance(value, str | int | bytes):
            return self.pseudonym(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
        if isinstance(value, str):
            return self.scrub_text(value)
        if _depth >= _MAX_DEPTH:
            return value if isinstance(value, int | float | bool | None) else "<redacted: nested too deep>"
        if isinstance(value, Mapping):
            # under a sensitive key the keys may be personal too (identifier → contact)
            sensitive = key.lower() in _SENSITIVE_KEYS
            return {(self.scrub_text(str(k)) if sensitive else k): self.scrub_value(str(k), v, _depth + 1)
                    for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub_value(key, v, _depth + 1) for v in value]
        if isinstance(value, bytes):
            return self.scrub_text(value.decode("utf-8", "replace"))
        if isinstance(value, int | float | bool | None):
            return value
        return self.scrub_text(str(value))
