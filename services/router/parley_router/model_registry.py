"""Which intent model classifies a tenant's messages; tenant models retrain and reload live.

A tenant's own intents come from two places: ``settings.router.intents`` in the tenancy
registry, and intents added over HTTP (``PUT /v1/intents/{name}``, table
``router.tenant_intents``; these win on a name clash). They are fingerprinted; when the
fingerprint changes (the tenant directory refreshes every few seconds, the HTTP intents are
re-read on every poll, and a PUT syncs its tenant at once) the registry loads the model for it
from the router's schema, or trains it in a child process and stores it there, then swaps it in.
Until then the tenant's messages use the previous (or the default) model: no restart, no pause.
Training that a newer change supersedes is stopped (its process killed); one training runs at a
time per replica; a stored model replaced by a newer one, or of a tenant with no own intents any
more, is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from parley_common.tenancy.models import Tenant

from parley_router.corpora import Example
from parley_router.domain.classifier import IntentClassifier
from parley_router.domain.config import TenantRouting
from parley_router.models import examples_fingerprint
from parley_router.store import RouterStore
from parley_router.training import train_in_child

log = logging.getLogger("parley.router.models")

RoutingOf = Callable[[Tenant], TenantRouting | None]


@dataclass(frozen=True)
class ModelStatus:
    state: str  # "default" (no own intents), "ready", "training" or "failed"
    fingerprint: str | None  # of the model in use for the tenant (None: the default model)
    wanted: str | None  # of the tenant's current intents
    intents: list[str]  # the intents the model in use knows


class ModelRegistry:
    def __init__(self, default: IntentClassifier, examples: list[Example], store: RouterStore | None) -> None:
        self.default = default
        self._examples = examples
        self._store = store
        self._models: dict[str, tuple[str, IntentClassifier]] = {}
        self._training: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._failed: dict[str, str] = {}
        self._api_intents: dict[str, dict[str, list[str]]] = {}
        self._train_slots = asyncio.Semaphore(1)  # training is CPU-heavy: one at a time per replica
        self._background: set[asyncio.Task[None]] = set()
        self.training_pids: dict[str, int] = {}  # tenant -> its current training process

    def for_tenant(self, tenant_id: str | None) -> IntentClassifier:
        found = self._models.get(tenant_id or "")
        return found[1] if found else self.default

    def fingerprint(self, tenant_id: str) -> str | None:
        found = self._models.get(tenant_id)
        return found[0] if found else None

    async def refresh_api_intents(self, tenant_id: str | None = None) -> None:
        """Re-read the intents added over HTTP (all tenants, or one)."""
        if self._store is None:
            return
        fresh = await self._store.tenant_intents(tenant_id)
        if tenant_id is None:
            self._api_intents = fresh
        else:
            self._api_intents[tenant_id] = fresh.get(tenant_id, {})

    def api_intents(self, tenant_id: str) -> dict[str, list[str]]:
        return dict(self._api_intents.get(tenant_id, {}))

    def intents_of(self, tenant: Tenant, routing_of: RoutingOf) -> dict[str, list[str]]:
        """The tenant's own intents: settings first, then the HTTP ones (which win on a clash)."""
        cfg = routing_of(tenant)
        merged = dict(cfg.intents) if cfg else {}
        merged.update(self._api_intents.get(tenant.tenant_id, {}))
        return {name: examples for name, examples in merged.items() if examples}

    def wanted_fingerprint(self, tenant: Tenant, routing_of: RoutingOf) -> str | None:
        intents = self.intents_of(tenant, routing_of)
        return examples_fingerprint(self._examples, intents) if intents else None

    def status(self, tenant: Tenant, routing_of: RoutingOf) -> ModelStatus:
        wanted = self.wanted_fingerprint(tenant, routing_of)
        current = self.fingerprint(tenant.tenant_id)
        intents = self.for_tenant(tenant.tenant_id).intents
        if wanted is None:
            state = "default" if current is None else "training"
        elif current == wanted:
            state = "ready"
        elif self._failed.get(tenant.tenant_id) == wanted:
            state = "failed"
        else:
            state = "training"
        return ModelStatus(state, current, wanted, intents)

    async def sync(self, tenants: Iterable[Tenant], routing_of: RoutingOf) -> list[asyncio.Task[None]]:
        """Start (re)training for tenants whose intents changed; returns the started tasks."""
        started: list[asyncio.Task[None]] = []
        for tenant in tenants:
            task = self._sync_one(tenant, routing_of)
            if task is not None:
                started.append(task)
        return started

    def training_task(self, tenant_id: str) -> asyncio.Task[None] | None:
        running = self._training.get(tenant_id)
        return running[1] if running and not running[1].done() else None

    def _sync_one(self, tenant: Tenant, routing_of: RoutingOf) -> asyncio.Task[None] | None:
        intents = self.intents_of(tenant, routing_of)
        running = self._training.get(tenant.tenant_id)
        if not intents:
            if running and not running[1].done():
                running[1].cancel()
            if self._models.pop(tenant.tenant_id, None) is not None and self._store is not None:
                self._in_background(self._store.delete_tenant_models(tenant.tenant_id, keep=None))
            return None
        fp = examples_fingerprint(self._examples, intents)
        if self.fingerprint(tenant.tenant_id) == fp or self._failed.get(tenant.tenant_id) == fp:
            if running and not running[1].done() and running[0] != fp:
                running[1].cancel()  # back to the model in use: the newer training is moot
            return None
        if running and not running[1].done():
            if running[0] == fp:
                return None
            running[1].cancel()  # superseded: its training process is killed
        task = asyncio.create_task(self._load_or_train(tenant.tenant_id, fp, intents))
        self._training[tenant.tenant_id] = (fp, task)
        return task

    async def sync_tenant(self, tenant: Tenant, routing_of: RoutingOf) -> asyncio.Task[None] | None:
        """Re-read one tenant's HTTP intents and start retraining it now if they changed."""
        await self.refresh_api_intents(tenant.tenant_id)
        self._sync_one(tenant, routing_of)
        return self.training_task(tenant.tenant_id)

    async def _load_or_train(self, tenant_id: str, fp: str, intents: dict[str, list[str]]) -> None:
        try:
            blob = await self._store.load_tenant_model(tenant_id, fp) if self._store else None
            if blob is not None:
                model = IntentClassifier.loads(blob)
            else:
                async with self._train_slots:
                    blob = await train_in_child(
                        intents, on_start=lambda pid: self.training_pids.__setitem__(tenant_id, pid))
                model = IntentClassifier.loads(blob)
                if model.meta.get("fingerprint") != fp:
                    raise ValueError("the trained model is not of the intents asked for")
                if self._store:
                    await self._store.save_tenant_model(tenant_id, fp, intents, blob)
            if self._store:
                await self._store.delete_tenant_models(tenant_id, keep=fp)
            self._models[tenant_id] = (fp, model)
            self._failed.pop(tenant_id, None)
            log.info("tenant intent model loaded",
                     extra={"tenant_id": tenant_id, "fingerprint": fp, "intents": len(model.intents)})
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed[tenant_id] = fp
            log.exception("tenant intent model failed; keeping the previous one",
                          extra={"tenant_id": tenant_id})

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("removing stored tenant models failed; the next change retries")

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for _fp, task in self._training.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
