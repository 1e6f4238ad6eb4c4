"""The in-memory tenant directory every service reads, loaded from ``tenancy`` and refreshed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field

import asyncpg

from parley_common.db import AnyConnection
from parley_common.tenancy.models import MetaApp, PhoneNumber, SecretError, Tenant, resolve_secret

log = logging.getLogger("parley.tenancy")


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class UnboundEvent(ValueError):
    """An event that no verified tenant may act on: it carries no tenant, names a tenant the
    registry does not know, or concerns a number (or WABA) that is not that tenant's. Kept and
    reported (dead-lettered with this reason), never acted on."""


@dataclass(frozen=True)
class ApiKeyHolder:
    tenant_id: str
    key_id: str


@dataclass
class TenantDirectory:
    tenants: dict[str, Tenant] = field(default_factory=dict)
    apps: dict[str, MetaApp] = field(default_factory=dict)
    numbers: dict[str, PhoneNumber] = field(default_factory=dict)
    waba_to_tenant: dict[str, str] = field(default_factory=dict)
    key_hashes: dict[bytes, ApiKeyHolder] = field(default_factory=dict)

    # --- the tenant of an event -------------------------------------------------------------
    def resolve(self, tenant_id: str | None, phone_number_id: str | None) -> Tenant:
        """The tenant an event was bound to where it entered Parley, checked against the
        registry; ``UnboundEvent`` otherwise. The one place every consumer asks "whose event is
        this": the answer comes from the event's ``tenant_id``, never from its number or WABA.
        ``phone_number_id`` (an event's key: the business number, or the WABA id of an account
        event that names no number) must be one of that tenant's."""
        if not tenant_id:
            raise UnboundEvent("the event carries no verified tenant")
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise UnboundEvent("the event's tenant is not in the registry")
        if phone_number_id is not None:
            number = self.numbers.get(phone_number_id)
            owner = number.tenant_id if number else self.waba_to_tenant.get(phone_number_id)
            if owner != tenant_id:
                raise UnboundEvent("the event's phone number is not one of its tenant's")
        return tenant

    def bound_tenant(self, tenant_id: str | None, phone_number_id: str | None) -> Tenant | None:
        """``resolve``, or None for an unbound event."""
        try:
            return self.resolve(tenant_id, phone_number_id)
        except UnboundEvent:
            return None

    def tenant_verified_by_app(self, app_id: str, phone_number_id: str | None, waba_id: str | None) -> str | None:
        """The tenant a webhook verified with ``app_id``'s secret speaks for, or None.

        A message or status (or any change naming a number) belongs to the tenant that owns the
        number, and only if that tenant is one of ``app_id``'s; a change that names only a WABA
        to the WABA's tenant on the same condition. A number that is not registered is no
        tenant's, whatever WABA the change claims: nobody's access token is used for it.
        """
        if phone_number_id:
            number = self.numbers.get(phone_number_id)
            tenant = self.tenants.get(number.tenant_id) if number else None
        else:
            tenant = self.tenant_for_waba(waba_id)
        if tenant is None or tenant.app_id != app_id:
            return None
        return tenant.tenant_id

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
        holder = self.api_key_holder(key)
        return self.tenants.get(holder.tenant_id) if holder else None

    def api_key_holder(self, key: str) -> ApiKeyHolder | None:
        """Constant-time comparison of the presented key's hash against the stored hashes."""
        presented = hash_api_key(key)
        found: ApiKeyHolder | None = None
        for stored, holder in self.key_hashes.items():
            if hmac.compare_digest(stored, presented):
                found = holder
        return found

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    async def load(cls, conn: AnyConnection | asyncpg.Pool) -> TenantDirectory:
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
        for r in await conn.fetch(
                "SELECT key_id, tenant_id, key_hash FROM tenancy.api_keys WHERE revoked_at IS NULL"):
            d.key_hashes[bytes(r["key_hash"])] = ApiKeyHolder(r["tenant_id"], r["key_id"])
        return d


class LiveTenantDirectory:
    """Holds the current directory and keeps it fresh.

    Every ``check_interval`` seconds it reads ``tenancy.registry_version`` (bumped by a trigger
    on every registry write) and reloads when it moved, and in any case every ``interval``
    seconds (secrets read from files may change without a registry write). ``fresh`` is False
    once no check has succeeded for ``max_staleness`` seconds; ``ensure_fresh`` then checks at
    once (a busy event loop may simply not have run the poll), and API-key authentication fails
    closed (503) if that check fails too, rather than trusting keys that may have been revoked.
    """

    def __init__(self, pool: asyncpg.Pool, interval: float = 10.0, *, check_interval: float = 0.5,
                 max_staleness: float = 5.0) -> None:
        self._pool = pool
        self._interval = interval
        self._check_interval = check_interval
        self.max_staleness = max_staleness
        self.current = TenantDirectory()
        self._version: int | None = None
        self._loaded_at = 0.0
        self._confirmed_at = 0.0
        self._failing = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def fresh(self) -> bool:
        return time.monotonic() - self._confirmed_at <= self.max_staleness

    async def ensure_fresh(self) -> bool:
        """True when the directory is fresh or a check made now succeeds (one check at a time:
        concurrent callers share it)."""
        if self.fresh:
            return True
        async with self._lock:
            if self.fresh:
                return True
            try:
                await self.check()
            except Exception:
                return False
            return True

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever())

    async def refresh(self) -> None:
        """Reload unconditionally."""
        async with self._pool.acquire(timeout=self._check_interval * 4) as conn:
            version = await conn.fetchval("SELECT version FROM tenancy.registry_version")
            self.current = await TenantDirectory.load(conn)
        self._version = version
        self._loaded_at = self._confirmed_at = time.monotonic()

    async def check(self) -> None:
        """Reload if the registry changed (or the full interval passed); confirms freshness."""
        async with self._pool.acquire(timeout=self._check_interval * 4) as conn:
            version = await conn.fetchval("SELECT version FROM tenancy.registry_version",
                                          timeout=self._check_interval * 4)
        if version != self._version or time.monotonic() - self._loaded_at >= self._interval:
            await self.refresh()
        else:
            self._confirmed_at = time.monotonic()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                await self.check()
                if self._failing:
                    log.info("tenant directory reloads again")
                    self._failing = False
            except Exception as exc:
                if not self._failing:  # once per outage, not twice a second
                    log.error("tenant directory cannot be reloaded; API keys fail closed after %.0f s",
                              self.max_staleness, extra={"error_type": type(exc).__name__})
                    self._failing = True

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
