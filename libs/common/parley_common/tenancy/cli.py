"""``parley-tenants``: the only writer of the tenant registry.

    parley-tenants migrate
    parley-tenants import tenants.yaml      # upsert apps, tenants, WABAs and numbers
    parley-tenants list
    parley-tenants key add TENANT [--label L]   # prints the new key once; only its hash is kept
    parley-tenants key revoke KEY_ID
    parley-tenants key list TENANT
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import typer
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from parley_common.db import connect, migrate
from parley_common.settings import CommonSettings
from parley_common.tenancy.directory import hash_api_key

MIGRATIONS = Path(__file__).parent / "migrations"

app = typer.Typer(help="Manage Parley's tenant registry.", no_args_is_help=True, pretty_exceptions_enable=False)
keys = typer.Typer(help="API keys of a tenant.", no_args_is_help=True)
app.add_typer(keys, name="key")


class AppSpec(BaseModel):
    app_id: str
    app_secret_refs: list[str] = Field(min_length=1, max_length=2)
    access_token_ref: str | None = None
    verify_token_ref: str | None = None
    graph_api_base: str | None = None
    graph_api_version: str = "v24.0"

    @field_validator("app_secret_refs", "access_token_ref", "verify_token_ref", mode="after")
    @classmethod
    def _refs_only(cls, v: Any) -> Any:
        for ref in v if isinstance(v, list) else [v]:
            if ref is not None and not ref.startswith(("env:", "file:")):
                raise ValueError("secrets are referenced as 'env:NAME' or 'file:/path', never inline")
        return v


class NumberSpec(BaseModel):
    phone_number_id: str
    display_phone_number: str
    waba_id: str
    throughput_mps: int = Field(default=80, ge=1, le=1000)


class TenantSpec(BaseModel):
    tenant_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str
    app_id: str
    business_country: str = Field(pattern=r"^[A-Z]{2}$")
    time_zone: str
    messaging_limit: int | None = 250
    wabas: list[str] = Field(min_length=1)
    phone_numbers: list[NumberSpec] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class RegistryFile(BaseModel):
    apps: list[AppSpec] = Field(default_factory=list)
    tenants: list[TenantSpec] = Field(default_factory=list)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _dsn() -> str:
    return CommonSettings().database_url


async def _connect() -> asyncpg.Connection:
    try:
        return await connect(_dsn())
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"cannot reach PostgreSQL: {exc}")
        raise


async def import_registry(conn: asyncpg.Connection, reg: RegistryFile) -> tuple[int, int]:
    known_apps = {a.app_id for a in reg.apps} | {r["app_id"] for r in await conn.fetch(
        "SELECT app_id FROM tenancy.meta_apps")}
    for t in reg.tenants:
        if t.app_id not in known_apps:
            raise ValueError(f"tenant {t.tenant_id}: unknown app_id {t.app_id!r}")
        for n in t.phone_numbers:
            if n.waba_id not in t.wabas:
                raise ValueError(f"tenant {t.tenant_id}: number {n.phone_number_id} names WABA {n.waba_id} "
                                 "that the tenant does not list")
    async with conn.transaction():
        for a in reg.apps:
            await conn.execute(
                """INSERT INTO tenancy.meta_apps VALUES ($1,$2,$3,$4,$5,$6)
                   ON CONFLICT (app_id) DO UPDATE SET app_secret_refs=$2, access_token_ref=$3,
                   verify_token_ref=$4, graph_api_base=$5, graph_api_version=$6""",
                a.app_id, a.app_secret_refs, a.access_token_ref, a.verify_token_ref,
                a.graph_api_base, a.graph_api_version)
        for t in reg.tenants:
            await conn.execute(
                """INSERT INTO tenancy.tenants (tenant_id, name, app_id, business_country, time_zone,
                   messaging_limit, settings) VALUES ($1,$2,$3,$4,$5,$6,$7)
                   ON CONFLICT (tenant_id) DO UPDATE SET name=$2, app_id=$3, business_country=$4,
                   time_zone=$5, messaging_limit=$6, settings=$7""",
                t.tenant_id, t.name, t.app_id, t.business_country, t.time_zone, t.messaging_limit,
                t.settings)
            for w in t.wabas:
                owner = await conn.fetchval("SELECT tenant_id FROM tenancy.wabas WHERE waba_id=$1", w)
                if owner and owner != t.tenant_id:
                    raise ValueError(f"WABA {w} already belongs to tenant {owner}")
                await conn.execute("INSERT INTO tenancy.wabas VALUES ($1,$2) ON CONFLICT DO NOTHING",
                                   w, t.tenant_id)
            for n in t.phone_numbers:
                owner = await conn.fetchval(
                    "SELECT tenant_id FROM tenancy.phone_numbers WHERE phone_number_id=$1", n.phone_number_id)
                if owner and owner != t.tenant_id:
                    raise ValueError(f"phone number {n.phone_number_id} already belongs to tenant {owner}")
                await conn.execute(
                    """INSERT INTO tenancy.phone_numbers VALUES ($1,$2,$3,$4,$5)
                       ON CONFLICT (phone_number_id) DO UPDATE SET waba_id=$3,
                       display_phone_number=$4, throughput_mps=$5""",
                    n.phone_number_id, t.tenant_id, n.waba_id, n.display_phone_number, n.throughput_mps)
    return len(reg.apps), len(reg.tenants)


async def add_api_key(conn: asyncpg.Connection, tenant_id: str, label: str | None = None) -> tuple[str, str]:
    if not await conn.fetchval("SELECT 1 FROM tenancy.tenants WHERE tenant_id=$1", tenant_id):
        raise ValueError(f"unknown tenant {tenant_id!r}")
    key_id = "k_" + secrets.token_hex(6)
    key = f"pk_{tenant_id}_{secrets.token_urlsafe(32)}"
    await conn.execute("INSERT INTO tenancy.api_keys (key_id, tenant_id, key_hash, label) VALUES ($1,$2,$3,$4)",
                       key_id, tenant_id, hash_api_key(key), label)
    return key_id, key


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the tenancy schema."""
    applied = asyncio.run(migrate(_dsn(), "tenancy", MIGRATIONS))
    typer.echo(f"tenancy: {len(applied)} migration(s) applied")


@app.command("import")
def import_cmd(path: Path) -> None:
    """Upsert apps, tenants, WABAs and phone numbers from a YAML file."""
    try:
        data = yaml.safe_load(path.read_text())
        reg = RegistryFile.model_validate(data or {})
    except OSError as exc:
        _fail(f"{path}: {exc.strerror}")
        return
    except yaml.YAMLError as exc:
        _fail(f"{path}: not valid YAML: {exc}")
        return
    except ValidationError as exc:
        _fail(f"{path}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        return

    async def run() -> tuple[int, int]:
        conn = await _connect()
        try:
            return await import_registry(conn, reg)
        finally:
            await conn.close()

    try:
        n_apps, n_tenants = asyncio.run(run())
    except ValueError as exc:
        _fail(str(exc))
        return
    typer.echo(f"imported {n_apps} app(s) and {n_tenants} tenant(s)")


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List tenants with their numbers (secrets are never printed)."""

    async def run() -> list[dict[str, Any]]:
        conn = await _connect()
        try:
            rows = await conn.fetch(
                """SELECT t.tenant_id, t.name, t.app_id, t.business_country, t.time_zone,
                   array_remove(array_agg(DISTINCT p.phone_number_id), NULL) AS numbers,
                   (SELECT count(*) FROM tenancy.api_keys k WHERE k.tenant_id=t.tenant_id
                    AND k.revoked_at IS NULL) AS active_keys
                   FROM tenancy.tenants t LEFT JOIN tenancy.phone_numbers p USING (tenant_id)
                   GROUP BY t.tenant_id ORDER BY t.tenant_id""")
            return [dict(r) for r in rows]
        finally:
            await conn.close()

    rows = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(rows, default=list))
        return
    for r in rows:
        typer.echo(f"{r['tenant_id']:<16} {r['name']:<28} {r['business_country']} {r['time_zone']:<20} "
                   f"numbers={len(r['numbers'])} keys={r['active_keys']}")


@keys.command("add")
def key_add(tenant: str, label: str = typer.Option(None, help="what the key is for")) -> None:
    """Create an API key (a second one for rotation). Printed once; only its hash is stored."""

    async def run() -> tuple[str, str]:
        conn = await _connect()
        try:
            return await add_api_key(conn, tenant, label)
        finally:
            await conn.close()

    try:
        key_id, key = asyncio.run(run())
    except ValueError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{key_id} {key}")


@keys.command("revoke")
def key_revoke(key_id: str) -> None:
    """Revoke a key (after rotating to a new one)."""

    async def run() -> str:
        conn = await _connect()
        try:
            return str(await conn.execute(
                "UPDATE tenancy.api_keys SET revoked_at=now() WHERE key_id=$1 AND revoked_at IS NULL", key_id))
        finally:
            await conn.close()

    if asyncio.run(run()).endswith(" 0"):
        _fail(f"no active key {key_id!r}")
    typer.echo(f"revoked {key_id}")


@keys.command("list")
def key_list(tenant: str) -> None:
    async def run() -> list[asyncpg.Record]:
        conn = await _connect()
        try:
            return await conn.fetch("SELECT key_id, label, created_at, revoked_at FROM tenancy.api_keys "
                                    "WHERE tenant_id=$1 ORDER BY created_at", tenant)
        finally:
            await conn.close()

    for r in asyncio.run(run()):
        state = "revoked" if r["revoked_at"] else "active"
        typer.echo(f"{r['key_id']} {state:<8} {r['created_at']:%Y-%m-%d} {r['label'] or ''}")


def main() -> None:
    app(prog_name="parley-tenants")


if __name__ == "__main__":
    main()
