"""What a business may ask Parley to send: the request body of ``POST /v1/messages``.

The body mirrors Meta's send API (``type`` plus the type object of that name), addressed by the
tenant's own number (``from``, a phone_number_id) and the customer (``to``, a phone number in
E.164, or ``to_user_id``, a business-scoped user id; or neither, with ``reply_to`` naming an
inbound message: the reply goes to whoever sent it). Every rule that can be checked without I/O
is checked here, so a bad request gets a 422 naming the field and the reason.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
import phonenumbers
from parley_common.contracts import (
    REPLY_BUTTONS_MAX,
    SEND_TYPES,
    TEXT_BODY_MAX,
    OutboundMessage,
    SendPriority,
    SendType,
    TemplateRef,
)
from parley_common.storable import unstorable_fields
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from parley_ingest.domain.commerce_messages import interactive_problems, template_problems
from parley_ingest.domain.contacts import Contact

PhoneNumberId = Annotated[str, Field(pattern=r"^[0-9]{1,32}$", description="the tenant's phone_number_id")]
# A business-scoped user id (BSUID): a country code, a dot, up to 128 letters or digits; a parent
# BSUID (one user across the portfolios of a managed business) has ``ENT.`` after the dot.
BSUID_PATTERN = r"^[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}$"
_BSUID = re.compile(BSUID_PATTERN)


class _PassThrough(BaseModel):
    """A type object: the fields Parley checks; anything else goes to Meta unchanged."""

    model_config = ConfigDict(extra="allow", frozen=True)


class TextObject(_PassThrough):
    body: str = Field(min_length=1, max_length=TEXT_BODY_MAX)
    preview_url: bool | None = None


class MediaObject(_PassThrough):
    id: str | None = Field(default=None, min_length=1, max_length=256)
    link: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    caption: str | None = Field(default=None, max_length=1024)
    filename: str | None = Field(default=None, max_length=240)

    @model_validator(mode="after")
    def _one_source(self) -> MediaObject:
        if (self.id is None) == (self.link is None):
            raise PydanticCustomError("media_source", "give exactly one of 'id' or 'link'")
        return self


class LocationObject(_PassThrough):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = Field(default=None, max_length=1000)
    address: str | None = Field(default=None, max_length=1000)


class InteractiveObject(_PassThrough):
    type: str = Field(min_length=1, max_length=64, description="button, list, cta_url, flow, product, ...")
    action: dict[str, Any]
    body: dict[str, Any] | None = None


class LanguageObject(_PassThrough):
    code: str = Field(min_length=2, max_length=16)


class TemplateObject(_PassThrough):
    name: str = Field(min_length=1, max_length=512)
    language: LanguageObject | Annotated[str, Field(min_length=2, max_length=16)]
    components: list[dict[str, Any]] = Field(default_factory=list, max_length=20)

    @field_validator("components")
    @classmethod
    def _component_types(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for c in v:
            if not isinstance(c.get("type"), str) or not c["type"]:
                raise PydanticCustomError("component_type", "every component needs a 'type'")
            if "parameters" in c and not isinstance(c["parameters"], list):
                raise PydanticCustomError("component_parameters", "'parameters' must be a list")
        return v

    @property
    def language_code(self) -> str:
        return self.language if isinstance(self.language, str) else self.language.code

    def to_ref(self) -> TemplateRef:
        return TemplateRef.model_validate(
            {"name": self.name, "language": self.language_code, "components": self.components}
        )


class ReactionObject(_PassThrough):
    message_id: str = Field(min_length=1, max_length=256)
    emoji: str = Field(max_length=16, description="an emoji, or empty to remove the reaction")


class SendMessageRequest(BaseModel):
    """One message to send."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: PhoneNumberId = Field(alias="from")
    to: str | None = Field(default=None, max_length=32, description="customer phone number, E.164")
    to_user_id: str | None = Field(
        default=None,
        description="customer's business-scoped user id (BSUID) or parent BSUID, exactly as Meta sent it",
        json_schema_extra={"pattern": BSUID_PATTERN},
    )
    type: SendType
    text: TextObject | None = None
    image: MediaObject | None = None
    video: MediaObject | None = None
    audio: MediaObject | None = None
    document: MediaObject | None = None
    sticker: MediaObject | None = None
    location: LocationObject | None = None
    contacts: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100)
    interactive: InteractiveObject | None = None
    template: TemplateObject | None = None
    reaction: ReactionObject | None = None
    reply_to: str | None = Field(default=None, min_length=1, max_length=256, description="wamid replied to")
    priority: SendPriority | None = None
    biz_opaque_callback_data: str | None = Field(default=None, max_length=512)
    fallback_template: TemplateObject | None = Field(
        default=None, description="sent instead when the customer service window is closed"
    )

    @field_validator("to")
    @classmethod
    def _e164(cls, v: str | None) -> str | None:
        if v is None:
            return None
        candidate = v if v.startswith("+") else "+" + v
        try:
            number = phonenumbers.parse(candidate, None)
        except phonenumbers.NumberParseException as exc:
            raise PydanticCustomError("phone_number", "not a phone number in E.164 form") from exc
        if not phonenumbers.is_valid_number(number):
            raise PydanticCustomError("phone_number", "not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")

    @field_validator("to_user_id")
    @classmethod
    def _bsuid(cls, v: str | None) -> str | None:
        if v is not None and _BSUID.fullmatch(v) is None:
            raise PydanticCustomError(
                "bsuid",
                "not a business-scoped user id: a country code, a dot and up to 128 letters or digits "
                "(a parent id: CC.ENT.<id>)",
            )
        return v

    @model_validator(mode="after")
    def _encodable(self) -> SendMessageRequest:
        """Free-form parts (contacts, components) must survive the trip to Kafka and Meta as JSON:
        no integers beyond 64 bits. (Strings no consumer could store, NUL or a lone surrogate, are
        named field by field by ``problems``.)"""
        if next(unstorable_fields(self.model_dump(mode="python", by_alias=True)), None) is not None:
            return self
        try:
            orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))
        except TypeError as exc:
            raise PydanticCustomError("not_encodable", "contains a value JSON cannot carry: {reason}",
                                      {"reason": str(exc)}) from exc
        return self

    def problems(self) -> list[tuple[str, str]]:
        """Rules across fields, as (field, reason); empty when the request is sendable."""
        found: list[tuple[str, str]] = list(
            unstorable_fields(self.model_dump(mode="python", by_alias=True, exclude_none=True)))
        if self.to is not None and self.to_user_id is not None:
            found.append(("to", "give one of 'to' or 'to_user_id', not both"))
        elif self.to is None and self.to_user_id is None and self.reply_to is None:
            found.append(("to", "give 'to' or 'to_user_id', or 'reply_to' to answer the sender of that message"))
        if getattr(self, self.type) is None:
            found.append((self.type, f"a '{self.type}' message needs the '{self.type}' object"))
        for other in SEND_TYPES:
            if other != self.type and getattr(self, other) is not None:
                found.append((other, f"not allowed in a '{self.type}' message"))
        media = getattr(self, self.type)
        if self.type in ("audio", "sticker") and media is not None and media.caption is not None:
            found.append((f"{self.type}.caption", f"Meta does not caption {self.type} messages"))
        if self.fallback_template is not None and self.type == "template":
            found.append(("fallback_template", "a template message needs no fallback template"))
        # commerce messages (order_details, order_status, product, product_list, catalog_message)
        if self.type == "interactive" and self.interactive is not None:
            if self.interactive.type == "button":
                buttons = self.interactive.action.get("buttons")
                if not isinstance(buttons, list) or not 1 <= len(buttons) <= REPLY_BUTTONS_MAX:
                    found.append(("interactive.action.buttons", f"reply buttons: 1 to {REPLY_BUTTONS_MAX}"))
            found += interactive_problems(self.interactive.model_dump(mode="json"))
        for name in ("template", "fallback_template"):
            template = getattr(self, name)
            if template is not None:
                found += template_problems(template.components, f"{name}.components")
        return found

    def content(self) -> dict[str, Any]:
        obj = getattr(self, self.type)
        if self.type == "contacts":
            return {"contacts": obj}
        assert isinstance(obj, BaseModel)
        return obj.model_dump(mode="json", exclude_none=True)

    def fingerprint(self) -> str:
        """Hash of the request's meaning (field order and whitespace do not matter)."""
        canonical = orjson.dumps(
            self.model_dump(mode="json", by_alias=True, exclude_none=True), option=orjson.OPT_SORT_KEYS
        )
        return hashlib.sha256(canonical).hexdigest()

    def to_outbound(self, *, tenant_id: str, message_id: str, now: datetime, origin: str,
                    tenant_source: str | None = None, contact: Contact | None = None) -> OutboundMessage:
        """``contact``: the customer's contact (ADR 0117). Its phone number, when known, is where the
        message goes, even when the request named the BSUID; a reply naming no one goes to it."""
        priority = self.priority or ("utility" if self.type == "template" else "reply")
        to, to_user_id = self.to, self.to_user_id
        if contact is not None:
            to = contact.phone or to
            if to is None and to_user_id is None:
                to_user_id = contact.bsuid or contact.parent_bsuid
        return OutboundMessage(
            event_id=message_id,
            message_id=message_id,
            tenant_id=tenant_id,
            tenant_source=tenant_source,
            phone_number_id=self.from_,
            occurred_at=now,
            received_at=now,
            to=to,
            to_user_id=to_user_id,
            contact_id=contact.contact_id if contact is not None else None,
            type=self.type,
            content=self.content(),
            template=self.template.to_ref() if self.template else None,
            fallback_template=self.fallback_template.to_ref() if self.fallback_template else None,
            reply_to_wamid=self.reply_to,
            priority=priority,
            biz_opaque_callback_data=self.biz_opaque_callback_data,
            origin=origin,
        )


class SendBatchRequest(BaseModel):
    """Up to 1,000 messages (a campaign), accepted all together or not at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[SendMessageRequest] = Field(min_length=1, max_length=1000)

    def problems(self) -> list[tuple[str, str]]:
        return [
            (f"messages.{i}.{f}", reason) for i, m in enumerate(self.messages) for f, reason in m.problems()
        ]

    def fingerprint(self) -> str:
        return hashlib.sha256("|".join(m.fingerprint() for m in self.messages).encode()).hexdigest()


class Accepted(BaseModel):
    id: str = Field(description="Parley's message id (the OutboundMessage's message_id)")


class BatchAccepted(BaseModel):
    ids: list[str] = Field(description="Parley's message ids, in the order of the request")


class FieldProblem(BaseModel):
    field: str
    reason: str


class ValidationFailed(BaseModel):
    detail: str = "validation failed"
    errors: list[FieldProblem]


class Problem(BaseModel):
    detail: str


def new_message_id(tenant_id: str, idempotency_key: str | None, index: int) -> str:
    """Parley's message id: derived from the idempotency key when there is one, so a retried
    request that already reached Kafka gets the same id (and the sender sends once)."""
    if idempotency_key is None:
        return "pm_" + uuid.uuid4().hex
    digest = hashlib.sha256(f"{tenant_id}\x00{idempotency_key}\x00{index}".encode()).hexdigest()
    return "pm_" + digest[:32]


def request_fingerprint(endpoint: str, body_fingerprint: str) -> str:
    return hashlib.sha256(f"{endpoint}\x00{body_fingerprint}".encode()).hexdigest()
