"""The router's tenant HTTP API: a tenant's own intents (Bearer tenant API key).

    GET    /v1/intents                 built-in intents, the tenant's own, and its model's state
    GET    /v1/intents/{name}          one of the tenant's own intents with its examples
    PUT    /v1/intents/{name}          {"examples": [...]}: store, retrain and reload (no restart)
    DELETE /v1/intents/{name}          remove an intent added over HTTP, retrain

PUT stores the intent in ``router.tenant_intents`` and starts retraining the tenant's model at
once; with ``?wait=true`` it answers after the new model is in use (200), otherwise at once
(202, state ``training``). Other replicas pick the intent up on their next model poll and load the
stored model. Example texts are never logged. Quotas (``IntentLimits``: intents per tenant,
examples per intent and per tenant, characters per example) are 422s naming the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from parley_common.runtime import TenantDep
from parley_common.tenancy.models import Tenant
from pydantic import BaseModel, Field, field_validator

from parley_router.bootstrap import RouterParts
from parley_router.model_registry import ModelStatus

INTENT_NAME = r"^[a-z][a-z0-9_]{0,62}$"
IntentName = Annotated[str, Path(pattern=INTENT_NAME, description="lower-case letters, digits, _")]
MAX_EXAMPLE_CHARS = 500
WAIT_LIMIT_S = 120.0


class IntentExamples(BaseModel):
    examples: list[str] = Field(min_length=1, max_length=2000,
                                description="utterances in any supported language; blanks and repeats dropped")

    @field_validator("examples")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for text in v:
            t = text.strip()
            if len(t) > MAX_EXAMPLE_CHARS:
                raise ValueError(f"an example is longer than {MAX_EXAMPLE_CHARS} characters")
            if "\x00" in t or (not t.isascii() and _has_lone_surrogate(t)):
                raise ValueError("an example contains NUL or an unpaired surrogate, which cannot be stored")
            if t and t not in out:
                out.append(t)
        if not out:
            raise ValueError("at least one non-blank example is required")
        return out




def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _model(status: ModelStatus) -> dict[str, Any]:
    return {"state": status.state, "fingerprint": status.fingerprint, "wanted": status.wanted,
            "intents": status.intents}


@dataclass(frozen=True)
class IntentLimits:
    """Quotas on a tenant's intents added over HTTP (RouterSettings.max_*)."""

    max_intents: int = 50
    max_examples_per_intent: int = 300
    max_examples_per_tenant: int = 3000


def _parts(request: Request) -> RouterParts:
    """What the router built when it started (``parley_router.bootstrap``)."""
    parts: RouterParts = request.app.state.router_parts
    return parts


PartsDep = Annotated[RouterParts, Depends(_parts)]


def build_router(limits: IntentLimits | None = None) -> APIRouter:
    limits = limits or IntentLimits()
    router = APIRouter(prefix="/v1", tags=["intents"])

    @router.get("/intents", summary="Built-in intents, the tenant's own intents and its model's state")
    async def list_intents(tenant: TenantDep, parts: PartsDep) -> dict[str, Any]:
        registry, routing_of = parts.registry, parts.service.routing_of
        await registry.refresh_api_intents(tenant.tenant_id)
        cfg = routing_of(tenant)
        from_settings = dict(cfg.intents) if cfg else {}
        from_api = registry.api_intents(tenant.tenant_id)
        own = {name: {"examples": len(ex), "source": "api" if name in from_api else "settings"}
               for name, ex in sorted({**from_settings, **from_api}.items())}
        return {"builtin": registry.default.intents, "tenant": own,
                "model": _model(registry.status(tenant, routing_of))}

    @router.get("/intents/{name}", summary="One of the tenant's own intents with its examples")
    async def get_intent(tenant: TenantDep, name: IntentName, parts: PartsDep) -> dict[str, Any]:
        registry, routing_of = parts.registry, parts.service.routing_of
        await registry.refresh_api_intents(tenant.tenant_id)
        from_api = registry.api_intents(tenant.tenant_id)
        cfg = routing_of(tenant)
        if name in from_api:
            return {"name": name, "source": "api", "examples": from_api[name]}
        if cfg and name in cfg.intents:
            return {"name": name, "source": "settings", "examples": cfg.intents[name]}
        raise HTTPException(404, f"the tenant has no own intent {name!r}")

    async def _retrain(parts: RouterParts, tenant: Tenant, wait: bool, response: Response) -> dict[str, Any]:
        registry, routing_of = parts.registry, parts.service.routing_of
        task = await registry.sync_tenant(tenant, routing_of)
        if wait and task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), WAIT_LIMIT_S)
        status = registry.status(tenant, routing_of)
        response.status_code = 202 if status.state == "training" else 200
        if status.state == "failed":
            response.status_code = 500
        return _model(status)

    @router.put("/intents/{name}", summary="Add or replace a tenant intent; the router retrains and reloads",
                responses={202: {"description": "stored; the model is retraining"}})
    async def put_intent(tenant: TenantDep, name: IntentName, body: IntentExamples, response: Response,
                         parts: PartsDep,
                         wait: Annotated[bool, Query(description="answer when the new model is in use")] = False,
                         ) -> dict[str, Any]:
        if len(body.examples) > limits.max_examples_per_intent:
            raise HTTPException(422, f"{len(body.examples)} examples; at most {limits.max_examples_per_intent}"
                                     " are allowed per intent")
        refused = await parts.store.put_tenant_intent(tenant.tenant_id, name, body.examples,
                                                  max_intents=limits.max_intents,
                                                  max_examples=limits.max_examples_per_tenant)
        if refused is not None:
            raise HTTPException(422, refused)
        model = await _retrain(parts, tenant, wait, response)
        return {"name": name, "examples": len(body.examples), "model": model}

    @router.delete("/intents/{name}", summary="Remove a tenant intent added over HTTP; the router retrains")
    async def delete_intent(tenant: TenantDep, name: IntentName, response: Response, parts: PartsDep,
                            wait: Annotated[bool, Query()] = False) -> dict[str, Any]:
        if not await parts.store.delete_tenant_intent(tenant.tenant_id, name):
            raise HTTPException(404, f"no intent {name!r} was added over HTTP for this tenant")
        model = await _retrain(parts, tenant, wait, response)
        return {"name": name, "deleted": True, "model": model}

    return router
