"""What every service's composition root needs: broker, pool, tenants, telemetry, ops HTTP.

Each service is one process: a FastAPI app served by uvicorn, whose lifespan opens the database
pool, starts the service's one producer (``Runtime.producer``, every record it writes), then the
Kafka broker (its subscribers, which only consume), and stops them in the reverse order.
Operations routes:

- ``/healthz``: liveness; answers from the process alone, never depends on Kafka.
- ``/readyz``: the broker and the database answer.
- ``/metrics``: Prometheus.

With ``ops_port`` set (``PARLEY_<SERVICE>_OPS_PORT``), ``/metrics``, ``/docs`` and
``/openapi.json`` are served only on that port (with ``/healthz`` and ``/readyz``), so that a
deployment keeps them off the public face; the public port keeps the probes and the service's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from parley_common.broker import kafka_client_options, kafka_security, make_broker
from parley_common.db import create_pool, migrate
from parley_common.producer import RecordProducer
from parley_common.redaction import Redactor
from parley_common.settings import CommonSettings, redaction_key_of
from parley_common.telemetry import HttpMetrics, OpsMonitor, configure_logging, make_registry, make_tracer_provider
from parley_common.tenancy.directory import LiveTenantDirectory, TenantDirectory
from parley_common.tenancy.models import Tenant
from parley_common.topics import DEAD_LETTERS

log = logging.getLogger("parley.runtime")

TENANCY_MIGRATIONS = Path(__file__).parent / "tenancy" / "migrations"


@dataclass
class Runtime:
    service: str
    settings: CommonSettings
    broker: KafkaBroker
    registry: CollectorRegistry
    tracer_provider: TracerProvider
    redactor: Redactor
    #: the service's one producer: every record it writes, dead letters included (ADR 0005); started
    #: before the start hooks and the broker's consumers, stopped after them
    producer: RecordProducer
    migrations: Sequence[tuple[str, Path]] = ()
    pool: asyncpg.Pool | None = None
    live_tenants: LiveTenantDirectory | None = None
    ops: OpsMonitor | None = None
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: consumers backing off from a transient failure (parley_common.deadletter.ConsumerGuard)
    not_ready: set[str] = field(default_factory=set)

    @property
    def tenants(self) -> TenantDirectory:
        return self.live_tenants.current if self.live_tenants else TenantDirectory()

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("database pool is not started")
        return self.pool


def build_runtime(
    service: str,
    settings: CommonSettings,
    *,
    migrations: Sequence[tuple[str, Path]] = (),
    tracer_provider: TracerProvider | None = None,
    configure_logs: bool = True,
    linger_ms: int = 5,
    **broker_overrides: Any,
) -> Runtime:
    redactor = Redactor(redaction_key_of(settings))  # no key outside the demo: refuse to start
    if configure_logs:
        configure_logging(service, settings.log_level, redactor)
    tp = tracer_provider or make_tracer_provider(service)
    registry = make_registry()
    broker = make_broker(settings.kafka_bootstrap, service=service, tracer_provider=tp, registry=registry,
                         security=kafka_security(settings), linger_ms=linger_ms, **broker_overrides)
    producer = RecordProducer(settings, service=service, linger_ms=linger_ms)
    rt = Runtime(service, settings, broker, registry, tp, redactor, producer, migrations)
    rt.ops = OpsMonitor(registry, settings.kafka_bootstrap, readiness=lambda: readiness(rt),
                        **kafka_client_options(settings))
    rt.ops.watch_end(DEAD_LETTERS.name)
    return rt


def _watch_subscribers(rt: Runtime) -> None:
    """Every FastStream subscriber's group and topics, for the consumer-lag gauge (consumers of a
    service's own, like the sender's, are added with ``rt.ops.watch``)."""
    if rt.ops is None:
        return
    for sub in rt.broker.subscribers:
        group = getattr(sub, "group_id", None)
        topics = [t if isinstance(t, str) else str(getattr(t, "name", t)) for t in getattr(sub, "topics", None) or ()]
        if group and topics:
            rt.ops.watch(group, topics)


async def readiness(rt: Runtime) -> dict[str, bool]:
    """The checks of /readyz: the broker and the database answer, no consumer is backing off."""
    checks: dict[str, bool] = {"consumers": not rt.not_ready}
    try:
        checks["kafka"] = bool(await asyncio.wait_for(rt.broker.ping(timeout=2.0), 3.0))
    except Exception:
        checks["kafka"] = False
    try:
        async with rt.require_pool().acquire(timeout=2.0) as conn:
            checks["database"] = await conn.fetchval("SELECT 1", timeout=2.0) == 1
    except Exception:
        checks["database"] = False
    return checks


async def start_runtime(rt: Runtime, *, start_broker: bool = True) -> None:
    rt.pool = await create_pool(rt.settings.database_url, min_size=rt.settings.db_pool_min,
                                max_size=rt.settings.db_pool_max)
    async with rt.pool.acquire() as conn:
        await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
        for schema, directory in rt.migrations:
            await migrate(conn, schema, directory)
    rt.live_tenants = LiveTenantDirectory(rt.pool, check_interval=rt.settings.tenants_check_interval_s,
                                          max_staleness=rt.settings.tenants_max_staleness_s)
    await rt.live_tenants.start()
    if start_broker:
        await rt.producer.start()
    for hook in rt.on_start:
        await hook()
    if start_broker:
        await rt.broker.start()
    if rt.ops is not None:
        _watch_subscribers(rt)
        await rt.ops.start()


async def stop_runtime(rt: Runtime) -> None:
    if rt.ops is not None:
        await rt.ops.stop()
    with contextlib.suppress(Exception):
        await rt.broker.stop()
    for hook in rt.on_stop:
        with contextlib.suppress(Exception):
            await hook()
    with contextlib.suppress(Exception):
        await rt.producer.stop()
    if rt.live_tenants:
        await rt.live_tenants.stop()
    if rt.pool:
        await rt.pool.close()
    with contextlib.suppress(Exception):
        rt.tracer_provider.force_flush(2000)


_bearer = HTTPBearer(auto_error=False, description="A tenant API key (parley-tenants key add)")


async def current_tenant(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Tenant:
    """The tenant whose API key is the request's Bearer token (compared in constant time), else 401;
    503 while the registry cannot be re-read (fail closed, ``LiveTenantDirectory.ensure_fresh``).
    Every per-tenant route of every service depends on this, so one tenant's key never acts on
    another tenant's data, and a revoked key stops working on every replica within a second."""
    rt: Runtime = request.app.state.runtime
    if rt.live_tenants is not None and not await rt.live_tenants.ensure_fresh():
        # The registry could not be re-read for a while: a key revoked meanwhile must not work.
        raise HTTPException(503, "tenant registry unavailable, retry", headers={"Retry-After": "1"})
    directory = rt.tenants
    holder = directory.api_key_holder(credentials.credentials) if credentials else None
    tenant = directory.tenants.get(holder.tenant_id) if holder else None
    if holder is None or tenant is None:
        raise HTTPException(401, "a valid tenant API key is required (Authorization: Bearer <key>)",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.api_key_id = holder.key_id  # what verified the tenant (Event.tenant_source)
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]


def ops_router(rt: Runtime, *, with_metrics: bool = True) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness (never depends on Kafka or the database)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": rt.service}

    @router.get("/readyz", summary="Readiness: the broker and the database answer")
    async def readyz(response: Response) -> dict[str, object]:
        checks = await readiness(rt)
        ok = all(checks.values())
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not ready", "checks": checks}

    if with_metrics:
        @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def ops_app(rt: Runtime, public: FastAPI) -> FastAPI:
    """The operations face on its own port: probes, metrics, and the public app's API docs."""
    app = FastAPI(title=f"{public.title} (operations)", version=public.version, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.include_router(ops_router(rt))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return public.openapi()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title=public.title)

    return app


def make_app(rt: Runtime, *, title: str, routers: Sequence[APIRouter] = (), version: str = "0.1.0",
             app_class: type[FastAPI] = FastAPI) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await start_runtime(rt)
        try:
            yield
        finally:
            await stop_runtime(rt)

    separate_ops = rt.settings.ops_port is not None
    docs: dict[str, Any] = {"docs_url": None, "redoc_url": None, "openapi_url": None} if separate_ops else {}
    app = app_class(title=title, version=version, lifespan=lifespan, **docs)
    app.include_router(ops_router(rt, with_metrics=not separate_ops))
    for r in routers:
        app.include_router(r)
    app.add_middleware(HttpMetrics, registry=rt.registry)
    app.state.runtime = rt
    return app


def serve(app: FastAPI, settings: CommonSettings) -> None:
    """The service's HTTP face, and its operations face when ``ops_port`` is set, in one loop."""
    if settings.ops_port is None:
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None,
                    access_log=False, loop="uvloop", http="httptools", lifespan="on")
        return
    public = uvicorn.Server(uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_config=None,
                                           access_log=False, loop="uvloop", http="httptools", lifespan="on"))
    ops = uvicorn.Server(uvicorn.Config(ops_app(app.state.runtime, app), host=settings.ops_host,
                                        port=settings.ops_port, log_config=None, access_log=False,
                                        lifespan="off"))

    async def both() -> None:
        ops_task = asyncio.create_task(ops.serve())
        try:
            await public.serve()
        finally:
            ops.should_exit = True
            await ops_task

    import uvloop

    uvloop.run(both())
