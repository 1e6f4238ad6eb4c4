"""The in-memory tenant directory every service reads, loaded from ``tenancy`` and refreshed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from dataclasses import dataclass, field

import asyncpg

from parley_common.tenancy.models import MetaApp, PhoneNumber, SecretError, Tenant, resolve_secret

log = logging.getLogger("parley.tenancy")


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass
class TenantDirectory:
    tenants: dict[str, Tenant] = field(default_factory=dict)
    apps: dict[str, MetaApp] = field(default_factory=dict)
    numbers: dict[str, PhoneNumber] = field(default_factory=dict)
    waba_to_tenant: dict[str, str] = field(default_factory=dict)
    key_hashes: dict[bytes, str] = field(default_factory=dict)

    # --- lookups ---------------------------------------------------------------------------
    def tenant_for_number(self, phone_number_id: str | None) -> Tenant | None:
        number = self.numbers.get(phone_number_id or "")
        return self.tenants.get(number.tenant_id) if number else None

    def tenant_for_waba(self, waba_id: str | None) -> Tenant | None:
        tid = self.waba_to_tenant.get(waba_id or "")
        return self.tenants.get(tid) if tid else None

    def app_for_tenant(self, tenant_id: str) -> MetaApp | None:
        tenant = self.tenants.get(tenant_id)
        return self.apps.get(tenant.app_id) if tenant else None

    def tenant_for_api_key(self, key: str) -> Tenant | None:
        """Constant-time comparison of the presented key's hash against the stored hashes."""
        presented = hash_api_key(key)
        found: str | None = None
        for stored, tenant_id in self.key_hashes.items():
            if hmac.compare_digest(stored, presented):
                found = tenant_id
        return self.tenants.get(found) if found else None

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    async def load(cls, conn: asyncpg.Connection | asyncpg.Pool) -> TenantDirectory:
        d = cls()
        for r in await conn.fetch("SELECT * FROM tenancy.meta_apps"):
            try:
                secrets = tuple(s.encode() for ref in r["app_secret_refs"] if (s := resolve_secret(ref)))
                token = resolve_secret(r["access_token_ref"])
                verify = resolve_secret(r["verify_token_ref"])
            except SecretError as exc:
                log.error("meta app secret unavailable", extra={"app_id": r["app_id"], "error": str(exc)})
                secrets, token, verify = (), None, None
            d.apps[r["app_id"]] = MetaApp(r["app_id"], secrets, token, verify,
                                          r["graph_api_base"], r["graph_api_version"])
        wabas: dict[str, list[str]] = {}
        for r in await conn.fetch("SELECT waba_id, tenant_id FROM tenancy.wabas"):
            d.waba_to_tenant[r["waba_id"]] = r["tenant_id"]
            wabas.setdefault(r["tenant_id"], []).append(r["waba_id"])
        numbers: dict[str, list[str]] = {}
        for r in await conn.fetch("SELECT * FROM tenancy.phone_numbers"):
            d.numbers[r["phone_number_id"]] = PhoneNumber(
                r["phone_number_id"], r["tenant_id"], r["waba_id"], r["display_phone_number"],
                r["throughput_mps"])
            numbers.setdefault(r["tenant_id"], []).append(r["phone_number_id"])
        for r in await conn.fetch("SELECT * FROM tenancy.tenants"):
            tid = r["tenant_id"]
            d.tenants[tid] = Tenant(tid, r["name"], r["app_id"], r["business_country"], r["time_zone"],
                                    r["messaging_limit"], dict(r["settings"] or {}),
                                    tuple(wabas.get(tid, ())), tuple(numbers.get(tid, ())))
        for r in await conn.fetch("SELECT tenant_id, key_hash FROM tenancy.api_keys WHERE revoked_at IS NULL"):
            d.key_hashes[bytes(r["key_hash"])] = r["tenant_id"]
        return d


class LiveTenantDirectory:
    """Holds the current directory and reloads it every ``interval`` seconds."""

    def __init__(self, pool: asyncpg.Pool, interval: float = 10.0) -> None:
        self._pool = pool
        self._interval = interval
        self.current = TenantDirectory()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.current = await TenantDirectory.load(self._pool)
        self._task = asyncio.create_task(self._refresh_forever())

    async def refresh(self) -> None:
        self.current = await TenantDirectory.load(self._pool)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("tenant directory refresh failed; keeping the previous one")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
