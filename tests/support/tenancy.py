"""Seeding the tenant registry in a test, as ``parley-tenants import`` and ``parley-tenants add-key`` do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parley_common.db import connect, migrate
from parley_common.runtime import TENANCY_MIGRATIONS
from parley_common.tenancy.cli import RegistryFile, add_api_key, import_registry


async def import_tenants(
    database_url: str, registry: dict[str, Any], *, keys_for: Sequence[str] = (), key_label: str | None = None
) -> dict[str, str]:
    """Imports ``registry`` (a registry file's content: apps and tenants) after migrating the
    tenancy schema, then issues an API key (labelled ``key_label``) to each tenant of ``keys_for``;
    returns tenant id -> key."""
    conn = await connect(database_url)
    try:
        await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
        await import_registry(conn, RegistryFile.model_validate(registry))
        return {tenant: (await add_api_key(conn, tenant, key_label))[1] for tenant in keys_for}
    finally:
        await conn.close()
