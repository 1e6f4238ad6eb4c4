"""Attacks with API keys: a key that was revoked, a replica that lost its registry, and a tenant
that floods the send API through several ingest replicas. Real Kafka and PostgreSQL; the
services of ``conftest.parley`` plus extra ingest replicas started here.

Rules under test (docs/adr/0101-api-keys.md): every authenticated route of every service checks
the key against a registry that each replica re-checks twice a second, so a revocation takes
effect everywhere within about a second; a replica that cannot re-check fails closed (503) after
a bounded time; a tenant's rate limit is counted in PostgreSQL, so it holds across replicas.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from common.tcp_proxy import TcpProxy  # tests/ is on sys.path (rootdir package layout)
from fastapi import FastAPI
from support.tenancy import import_tenants
from support.waiting import eventually

from .conftest import VICTIM, Parley

pytestmark = [pytest.mark.infra, pytest.mark.e2e]


async def new_key(parley: Parley, tenant: str = VICTIM) -> tuple[str, str]:
    from parley_common.tenancy.cli import add_api_key

    conn = await parley.db()
    try:
        return await add_api_key(conn, tenant, "security test")
    finally:
        await conn.close()


async def revoke(database_url: str, key_id: str) -> None:
    """What ``parley-tenants key revoke`` does."""
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.execute("UPDATE tenancy.api_keys SET revoked_at = now() WHERE key_id = $1"
                                  " AND revoked_at IS NULL", key_id) == "UPDATE 1"
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def ingest_replica(parley: Parley, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Another ingest replica (its own process state: directory, pool, producer) on the same
    Kafka and PostgreSQL."""
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    app = create_app(IngestSettings(**{"kafka_bootstrap": parley.kafka_bootstrap,
                                       "database_url": parley.database_url, **settings}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
            yield client


def authenticated_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every operation the service documents as needing the tenant API key
    (the Bearer scheme of ``parley_common.runtime.current_tenant``). Every ``/v1`` route is one:
    no tenant data is reachable without a key."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, op in operations.items():
            if any("HTTPBearer" in scheme for scheme in op.get("security", ())):
                found.append((method.upper(), path))
            else:
                assert not path.startswith("/v1"), f"{method.upper()} {path} has no API-key check"
    return found


def _apps(parley: Parley) -> dict[str, FastAPI]:
    return {name: served.server.config.app for name, served in
            (("ingest", parley.ingest), ("router", parley.router), ("sender", parley.sender),
             ("billing", parley.billing))}


async def _call(base: str, method: str, path: str, key: str | None) -> int:
    # the current month: still open, so even finalising it (POST) changes nothing (409)
    params = {"{month}": date.today().strftime("%Y-%m"), "{reference_id}": "ref-1", "{name}": "baggage",
              "{message_id}": "m-1"}
    filled = path
    for name, value in params.items():
        filled = filled.replace(name, value)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.request(method, filled, headers=headers,
                                 params={"from": date(2026, 11, 1).isoformat(), "to": date(2026, 11, 2).isoformat()},
                                 json={} if method in ("POST", "PUT") else None)
    return r.status_code


async def test_a_revoked_key_is_refused_on_every_authenticated_route_of_every_service(parley: Parley) -> None:
    key_id, key = await new_key(parley)
    bases = {"ingest": parley.ingest.url, "router": parley.router.url, "sender": parley.sender.url,
             "billing": parley.billing.url}
    routes = {name: authenticated_routes(app) for name, app in _apps(parley).items()}
    assert all(routes.values()), routes  # every service has authenticated routes, and all are checked
    assert ("POST", "/v1/messages") in routes["ingest"] and ("POST", "/v1/messages/batch") in routes["ingest"]

    async def accepted_everywhere() -> bool:
        codes = [await _call(bases[s], m, p, key) for s, rs in routes.items() for m, p in rs]
        return all(c not in (401, 503) for c in codes)

    await eventually(accepted_everywhere, timeout_s=30, what="the new key on every replica")
    await revoke(parley.database_url, key_id)

    async def refused_everywhere() -> dict[str, int]:
        codes = {f"{s} {m} {p}": await _call(bases[s], m, p, key) for s, rs in routes.items() for m, p in rs}
        return codes if set(codes.values()) == {401} else {}

    refused = await eventually(refused_everywhere, timeout_s=30, what="the revocation on every route")
    assert len(refused) == sum(len(r) for r in routes.values())
    for s, rs in routes.items():  # and no key at all is refused the same way
        assert {await _call(bases[s], m, p, None) for m, p in rs} == {401}


async def test_a_revoked_key_stops_working_on_every_ingest_replica_without_an_idempotency_key(
        parley: Parley) -> None:
    key_id, key = await new_key(parley)
    async with ingest_replica(parley) as second:
        first = httpx.AsyncClient(base_url=parley.ingest.url, timeout=30)

        async def status(client: httpx.AsyncClient) -> int:
            # no Idempotency-Key: nothing in the request makes ingest read the database itself
            r = await client.post("/v1/messages", headers={"Authorization": f"Bearer {key}"}, json={})
            return r.status_code

        async def both(code: int) -> bool:
            return {await status(first), await status(second)} == {code}

        await eventually(lambda: both(422), timeout_s=30, what="the key working on both replicas")
        await revoke(parley.database_url, key_id)
        await eventually(lambda: both(401), timeout_s=30, what="the revocation on both replicas")
        await first.aclose()


async def test_a_replica_that_cannot_reload_keys_fails_closed_then_recovers(parley: Parley) -> None:
    key_id, key = await new_key(parley)
    url = urlsplit(parley.database_url)
    link = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    port = await link.start()
    relayed = urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{port}"))
    async with ingest_replica(parley, database_url=relayed, tenants_max_staleness_s=2.0) as replica:

        async def status() -> int:
            r = await replica.post("/v1/messages", headers={"Authorization": f"Bearer {key}"}, json={})
            return r.status_code

        await eventually(lambda: _is(status, 422), timeout_s=30, what="the key working on the replica")
        await link.cut()  # the replica can no longer reach PostgreSQL ...
        await revoke(parley.database_url, key_id)  # ... so it cannot learn that the key was revoked
        await eventually(lambda: _is(status, 503), timeout_s=30, what="the replica failing closed")
        await link.restore()  # the link comes back: the replica reloads and sees the revocation
        await eventually(lambda: _is(status, 401), timeout_s=30, what="the revocation after recovery")


async def _is(probe: Any, code: int) -> bool:
    return await probe() == code


async def test_a_tenants_rate_limit_holds_across_ingest_replicas(parley: Parley) -> None:
    keys = await import_tenants(parley.database_url, {"tenants": [{
        "tenant_id": "flood-shop", "name": "Flood", "app_id": "attacker-app", "business_country": "ID",
        "time_zone": "Asia/Jakarta", "wabas": ["399000000000077"],
        "phone_numbers": [{"phone_number_id": "299000000000077", "display_phone_number": "6281200000077",
                           "waba_id": "399000000000077"}],
        "settings": {"ingest_rate_limit": "4/hour"}}]}, keys_for=["flood-shop"], key_label="flood")
    key = keys["flood-shop"]
    async with ingest_replica(parley) as second:
        first = httpx.AsyncClient(base_url=parley.ingest.url, timeout=30)

        async def status(client: httpx.AsyncClient) -> int:
            r = await client.post("/v1/messages", headers={"Authorization": f"Bearer {key}"}, json={})
            return r.status_code

        outcomes: list[int] = []

        async def both_know_the_key() -> bool:  # a request refused as unknown (401) is not counted
            outcomes.extend([await status(first), await status(second)])
            return 401 not in outcomes[-2:]

        await eventually(both_know_the_key, timeout_s=30, what="the new tenant on both replicas")
        for _ in range(3):
            outcomes.extend([await status(first), await status(second)])
        counted = [c for c in outcomes if c != 401]
        assert counted.count(422) == 4 and set(counted[4:]) == {429}  # four in all, whichever replica
        r = await second.post("/v1/messages", headers={"Authorization": f"Bearer {key}"}, json={})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        await first.aclose()
