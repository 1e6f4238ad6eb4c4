"""Which intent model classifies a tenant's messages; tenant models retrain and reload live.

A tenant's own intents (``settings.router.intents``) are fingerprinted; when the fingerprint
changes (the tenant directory refreshes every few seconds) the registry loads the model for it
from the router's schema, or trains it in a worker thread and stores it there, then swaps it in.
Until then the tenant's messages use the previous (or the default) model: no restart, no pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from parley_common.tenancy.models import Tenant

from parley_router.corpora import Example
from parley_router.domain.classifier import IntentClassifier
from parley_router.domain.config import TenantRouting
from parley_router.models import examples_fingerprint, train_from_examples
from parley_router.store import RouterStore

log = logging.getLogger("parley.router.models")


class ModelRegistry:
    def __init__(self, default: IntentClassifier, examples: list[Example], store: RouterStore | None) -> None:
        self.default = default
        self._examples = examples
        self._store = store
        self._models: dict[str, tuple[str, IntentClassifier]] = {}
        self._training: dict[str, asyncio.Task[None]] = {}

    def for_tenant(self, tenant_id: str | None) -> IntentClassifier:
        found = self._models.get(tenant_id or "")
        return found[1] if found else self.default

    def fingerprint(self, tenant_id: str) -> str | None:
        found = self._models.get(tenant_id)
        return found[0] if found else None

    async def sync(self, tenants: Iterable[Tenant],
                   routing_of: Callable[[Tenant], TenantRouting | None]) -> list[asyncio.Task[None]]:
        """Start (re)training for tenants whose intents changed; returns the started tasks."""
        started: list[asyncio.Task[None]] = []
        for tenant in tenants:
            cfg = routing_of(tenant)
            intents = cfg.intents if cfg else {}
            if not intents:
                self._models.pop(tenant.tenant_id, None)
                continue
            fp = examples_fingerprint(self._examples, intents)
            if self.fingerprint(tenant.tenant_id) == fp:
                continue
            running = self._training.get(tenant.tenant_id)
            if running and not running.done():
                continue
            task = asyncio.create_task(self._load_or_train(tenant.tenant_id, fp, dict(intents)))
            self._training[tenant.tenant_id] = task
            started.append(task)
        return started

    async def _load_or_train(self, tenant_id: str, fp: str, intents: dict[str, list[str]]) -> None:
        try:
            blob = await self._store.load_tenant_model(tenant_id, fp) if self._store else None
            if blob is not None:
                model = IntentClassifier.loads(blob)
            else:
                model = await asyncio.to_thread(train_from_examples, self._examples, intents)
                if self._store:
                    await self._store.save_tenant_model(tenant_id, fp, intents, model.dumps())
            self._models[tenant_id] = (fp, model)
            log.info("tenant intent model loaded",
                     extra={"tenant_id": tenant_id, "fingerprint": fp, "intents": len(model.intents)})
        except Exception:
            log.exception("tenant intent model failed; keeping the previous one",
                          extra={"tenant_id": tenant_id})

    async def close(self) -> None:
        for task in self._training.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
