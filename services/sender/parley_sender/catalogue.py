"""Keeping the template catalogue current from the Graph API (the sync command and endpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parley_common.tenancy.directory import TenantDirectory

from parley_sender.cloudapi import CloudApiClient
from parley_sender.domain.templates import Template
from parley_sender.store import SenderStore


async def sync_templates(
    store: SenderStore, client: CloudApiClient, directory: TenantDirectory, tenant_id: str
) -> dict[str, int]:
    """Replace the tenant's catalogue with what Meta lists for each of its WABAs."""
    tenant = directory.tenants.get(tenant_id)
    if tenant is None:
        raise KeyError(tenant_id)
    app = directory.app_for_tenant(tenant_id)
    synced = removed = 0
    for waba_id in tenant.waba_ids:
        listed = [Template.from_graph(d, waba_id) for d in await client.list_templates(app, waba_id)]
        await store.upsert_templates(tenant_id, listed)
        removed += await store.remove_templates_not_in(
            tenant_id, waba_id, [(t.name, t.language) for t in listed]
        )
        synced += len(listed)
    return {"synced": synced, "removed": removed}


async def create_template(
    store: SenderStore,
    client: CloudApiClient,
    directory: TenantDirectory,
    tenant_id: str,
    waba_id: str,
    spec: Mapping[str, Any],
) -> Template:
    """Submit a template for review; it enters the catalogue with the status Meta answered."""
    answer = await client.create_template(directory.app_for_tenant(tenant_id), waba_id, spec)
    template = Template.from_graph(
        {
            **spec,
            "id": answer.get("id"),
            "status": answer.get("status", "PENDING"),
            "category": answer.get("category", spec.get("category", "UTILITY")),
        },
        waba_id,
    )
    await store.upsert_templates(tenant_id, [template])
    return template
