"""HTTP routes of the sender, per-tenant authenticated (``Authorization: Bearer <api key>``).

Another tenant's message or template is answered 404, exactly as a missing one.
"""

from typing import Annotated, Any, Self

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from parley_common.runtime import TenantDep
from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from parley_sender.catalogue import create_template, sync_templates
from parley_sender.cloudapi import GraphApiError
from parley_sender.delivery import Sender
from parley_sender.domain.outcomes import MessageState
from parley_sender.domain.templates import TemplateProblem, validate_send


class _JsonEncodable(BaseModel):
    @model_validator(mode="after")
    def _encodable(self) -> Self:
        """Free-form components go to Meta as JSON: no integers beyond 64 bits, no lone surrogates."""
        try:
            orjson.dumps(self.model_dump(mode="json"))
        except TypeError as exc:
            raise PydanticCustomError("not_encodable", "contains a value JSON cannot carry: {reason}",
                                      {"reason": str(exc)}) from exc
        return self


class TemplateCreate(_JsonEncodable):
    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: str
    category: str
    components: list[dict[str, Any]]
    parameter_format: str | None = None
    waba_id: str | None = None


class TemplatePreview(_JsonEncodable):
    name: str
    language: str
    components: list[dict[str, Any]] = Field(default_factory=list)


def _sender(request: Request) -> Sender:
    """The sender the app built when it started (``parley_sender.bootstrap``)."""
    sender: Sender = request.app.state.sender
    return sender


SenderDep = Annotated[Sender, Depends(_sender)]


def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["sender"])


    @r.get("/messages/{message_id}", summary="A message's state, delivery status and errors")
    async def get_message(message_id: str, t: TenantDep, sender: SenderDep) -> dict[str, Any]:
        row = await sender.store.message_for_tenant(t.tenant_id, message_id)
        if row is None:
            raise HTTPException(404, "no such message")
        delivery = row.get("delivery_status")
        send_state = MessageState(row["state"])
        stored = row.get("request")
        request: dict[str, Any] = stored if isinstance(stored, dict) else {}
        if send_state is MessageState.ACCEPTED and delivery:
            state = delivery
        elif send_state in (MessageState.IN_DOUBT, MessageState.UNRESOLVED):
            state = "in_doubt"  # maybe sent; "unresolved": the deadline passed, the tenant may resend
        else:
            state = send_state.value
        return {
            "message_id": row["message_id"],
            "state": state,
            "send_state": send_state.value,
            "may_resend": send_state is MessageState.UNRESOLVED,
            "biz_opaque_callback_data": request.get("biz_opaque_callback_data"),
            "delivery_status": delivery,
            "wamid": row["wamid"],
            "attempt": row["attempt"],
            "phone_number_id": row["phone_number_id"],
            "is_template": row["is_template"],
            "template_name": row["template_name"],
            "category": row["category"],
            "free_window": row["free_window"],
            "reason": row["reason"],
            "error_code": row["error_code"],
            "delivery_errors": row.get("delivery_errors") or [],
            "sent_at": row.get("sent_at"),
            "delivered_at": row.get("delivered_at"),
            "read_at": row.get("read_at"),
            "failed_at": row.get("failed_at"),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }

    @r.get("/templates", summary="The tenant's template catalogue")
    async def list_templates(t: TenantDep, sender: SenderDep) -> dict[str, Any]:
        rows = await sender.store.templates(t.tenant_id)
        return {"data": [{k: v for k, v in row.items() if k != "tenant_id"} for row in rows]}

    @r.post("/templates", status_code=201, summary="Submit a template to Meta for review")
    async def post_template(body: TemplateCreate, t: TenantDep, sender: SenderDep) -> dict[str, Any]:
        waba = body.waba_id or (t.waba_ids[0] if t.waba_ids else None)
        if waba is None or waba not in t.waba_ids:
            raise HTTPException(404, "no such WABA")
        spec = body.model_dump(exclude_none=True, exclude={"waba_id"})
        try:
            created = await create_template(
                sender.store, sender.client, sender.directory(), t.tenant_id, waba, spec
            )
        except GraphApiError as exc:
            raise HTTPException(502 if exc.status >= 500 else 422, str(exc)) from exc
        sender.invalidate_catalogue(t.tenant_id)
        return {
            "id": created.template_id,
            "name": created.name,
            "language": created.language,
            "status": created.status,
            "category": created.category,
        }

    @r.post("/templates/sync", summary="Refresh the catalogue from the Graph API")
    async def post_sync(t: TenantDep, sender: SenderDep) -> dict[str, int]:
        try:
            counts = await sync_templates(sender.store, sender.client, sender.directory(), t.tenant_id)
        except GraphApiError as exc:
            raise HTTPException(502, str(exc)) from exc
        sender.invalidate_catalogue(t.tenant_id)
        return counts

    @r.post("/templates/preview", summary="Validate parameters and render the final text")
    async def preview(body: TemplatePreview, t: TenantDep, sender: SenderDep) -> dict[str, Any]:
        catalogue = await sender.catalogue(t.tenant_id)
        try:
            template, rendered = validate_send(
                catalogue,
                body.name,
                body.language,
                body.components,
                sender.settings.template_language_fallbacks,
            )
        except TemplateProblem as problem:
            raise HTTPException(
                404 if problem.reason == "template_missing" else 422,
                {"reason": problem.reason, "detail": problem.detail, "error_code": problem.code},
            ) from problem
        return {
            "name": template.name,
            "language": template.language,
            "category": template.category,
            "header": rendered.header,
            "header_media": rendered.header_media,
            "body": rendered.body,
            "footer": rendered.footer,
            "buttons": list(rendered.buttons),
            "text": rendered.text,
        }

    return r
