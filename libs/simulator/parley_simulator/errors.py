"""Meta's Graph API errors as the simulator answers them (Meta's Cloud API error codes:
https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes).

Two shapes: the synchronous answer to a send (``{"error": {...}}`` with an HTTP status) and the
``errors[]`` item of a failed status webhook.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetaErrorSpec:
    code: int
    http_status: int
    message: str  # the Graph API "message" (after the "(#code) " prefix)
    title: str  # the title used in status webhooks
    type: str = "OAuthException"


CATALOGUE: dict[int, MetaErrorSpec] = {
    e.code: e
    for e in (
        MetaErrorSpec(1, 500, "An unknown error occurred", "Unknown error"),
        MetaErrorSpec(2, 503, "Service temporarily unavailable", "Service temporarily unavailable"),
        MetaErrorSpec(4, 429, "Application request limit reached", "Too many calls"),
        MetaErrorSpec(100, 400, "Invalid parameter", "Invalid parameter"),
        MetaErrorSpec(
            190, 401, "Invalid OAuth access token - Cannot parse access token", "Access token has expired"
        ),
        MetaErrorSpec(130429, 429, "Rate limit hit", "Rate limit hit"),
        MetaErrorSpec(131026, 400, "Message undeliverable", "Message undeliverable"),
        MetaErrorSpec(131047, 400, "Re-engagement message", "Re-engagement message"),
        MetaErrorSpec(131048, 400, "Spam rate limit hit", "Spam rate limit hit"),
        MetaErrorSpec(
            131049,
            400,
            "This message was not delivered to maintain healthy ecosystem engagement.",
            "This message was not delivered to maintain healthy ecosystem engagement.",
        ),
        MetaErrorSpec(
            131050,
            400,
            "Unable to deliver the message. This recipient has chosen to stop receiving "
            "marketing messages on WhatsApp from your business.",
            "User has stopped marketing messages",
        ),
        MetaErrorSpec(
            131062,
            400,
            "Business-scoped user ID recipients not supported",
            "Business-scoped user ID recipients not supported",
        ),
        MetaErrorSpec(
            131056,
            429,
            "(Business Account, Consumer Account) pair rate limit hit",
            "(Business Account, Consumer Account) pair rate limit hit",
        ),
        MetaErrorSpec(
            132000,
            400,
            "Number of parameters does not match the expected number of params",
            "Number of parameters does not match the expected number of params",
        ),
        MetaErrorSpec(
            132001,
            400,
            "Template name does not exist in the translation",
            "Template name does not exist in the translation",
        ),
        MetaErrorSpec(
            132012,
            400,
            "Parameter format does not match format in the created template",
            "Parameter format does not match format in the created template",
        ),
        MetaErrorSpec(132015, 400, "Template is Paused", "Template is Paused"),
        MetaErrorSpec(132016, 400, "Template is Disabled", "Template is Disabled"),
    )
}

ERROR_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


class GraphError(Exception):
    """A send (or management call) refused with one of Meta's error codes."""

    def __init__(
        self,
        code: int,
        details: str,
        *,
        http_status: int | None = None,
        message: str | None = None,
        error_type: str | None = None,
    ) -> None:
        spec = CATALOGUE[code]
        super().__init__(f"({code}) {details}")
        self.code = code
        self.details = details
        self.http_status = http_status or spec.http_status
        self.message = message or spec.message
        self.error_type = error_type or spec.type

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": f"(#{self.code}) {self.message}",
            "type": self.error_type,
            "code": self.code,
            "error_data": {"messaging_product": "whatsapp", "details": self.details},
            "fbtrace_id": new_fbtrace_id(),
        }
        if self.code == 190:
            # Meta's auth errors carry no error_data.
            error["message"] = self.message
            del error["error_data"]
        return {"error": error}


def status_error(code: int, details: str) -> dict[str, Any]:
    """The ``errors[]`` item of a ``failed`` status webhook."""
    spec = CATALOGUE[code]
    return {
        "code": code,
        "title": spec.title,
        "message": spec.title,
        "error_data": {"details": details},
        "href": ERROR_HREF,
    }


def new_fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(16)[:22]
