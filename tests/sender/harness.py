"""Real infrastructure for the sender's integration tests: Kafka, PostgreSQL, the simulator over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from parley_common.db import migrate
from parley_common.topics import consumer_group
from parley_sender.app import create_app
from parley_sender.settings import SenderSettings
from parley_simulator.app import create_app as create_simulator
from parley_simulator.config import SimulatorConfig
from support.tenancy import import_tenants
from support.waiting import eventually

TOKEN = "sim-token-sender-tests"
APP_ID = "app-sender"
WABA = "waba-s1"
TEMPLATES: list[dict[str, Any]] = [
    {
        "name": "order_update",
        "language": "en_US",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Hi {{1}}, order {{2}} ships today."}],
    },
    {
        "name": "promo",
        "language": "en_US",
        "category": "MARKETING",
        "components": [{"type": "BODY", "text": "Sale for {{1}}!"}],
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_http(app: FastAPI, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def simulator_config(numbers: dict[str, int], waba: str = WABA) -> SimulatorConfig:
    return SimulatorConfig.model_validate(
        {
            "apps": [{"app_id": APP_ID, "app_secret": "s3cret"}],
            "wabas": [{"id": waba, "app_id": APP_ID, "token": TOKEN, "templates": TEMPLATES}],
            "phone_numbers": [
                {"id": pn, "display_phone_number": f"1555{pn}", "waba_id": waba, "throughput": mps}
                for pn, mps in numbers.items()
            ],
            "behaviour": {"sent_delay_ms": 5, "delivered_delay_ms": 10, "read_delay_ms": 20},
        }
    )


# phone number id -> its tenant, as seeded: ``outbound`` stamps a request's tenant as ingest would
TENANT_OF_NUMBER: dict[str, str] = {}


async def seed_tenants(
    database_url: str,
    numbers: dict[str, int],
    *,
    tenant: str = "acme",
    other_tenant: str = "other",
    messaging_limit: int | None = None,
    waba: str = WABA,
    settings: dict[str, Any] | None = None,
) -> dict[str, str]:
    os.environ["PARLEY_TEST_SIM_TOKEN"] = TOKEN
    registry: dict[str, Any] = {
        "apps": [
            {
                "app_id": APP_ID,
                "app_secret_refs": ["env:PARLEY_TEST_SIM_TOKEN"],
                "access_token_ref": "env:PARLEY_TEST_SIM_TOKEN",
            }
        ],
        "tenants": [
            {
                "tenant_id": tenant,
                "name": "Acme",
                "app_id": APP_ID,
                "business_country": "GB",
                "time_zone": "Europe/London",
                "messaging_limit": messaging_limit,
                "settings": settings or {},
                "wabas": [waba],
                "phone_numbers": [
                    {
                        "phone_number_id": pn,
                        "display_phone_number": f"1555{pn}",
                        "waba_id": waba,
                        "throughput_mps": mps,
                    }
                    for pn, mps in numbers.items()
                ],
            },
            {
                "tenant_id": other_tenant,
                "name": "Other",
                "app_id": APP_ID,
                "business_country": "GB",
                "time_zone": "Europe/London",
                "wabas": [f"{waba}-other"],
            },
        ],
    }
    keys = await import_tenants(database_url, registry, keys_for=[tenant, other_tenant])
    TENANT_OF_NUMBER.update(dict.fromkeys(numbers, tenant))
    return keys


@dataclass(frozen=True)
class Simulated:
    url: str  # the simulator's base URL: the sender's graph_api_base
    keys: dict[str, str]  # tenant id -> API key, as ``seed_tenants`` returns them


@contextlib.asynccontextmanager
async def simulated_tenant(
    database_url: str,
    numbers: dict[str, int],
    *,
    tenant: str,
    waba: str,
    other_tenant: str | None = None,
    messaging_limit: int | None = None,
    settings: dict[str, Any] | None = None,
    extra_templates: Sequence[dict[str, Any]] = (),
    behaviour: dict[str, Any] | None = None,
    sync_templates: bool = True,
) -> AsyncIterator[Simulated]:
    """The set-up of a sender test: ``tenant`` (and ``other_tenant``, default ``<tenant>-other``, a
    tenant to keep apart from) seeded with ``numbers``, the simulator serving those numbers over
    HTTP (``extra_templates`` beside ``TEMPLATES``, ``behaviour`` over the default one), and the
    tenant's template catalogue synced from it (every template of the WABA)."""
    keys = await seed_tenants(
        database_url, numbers, tenant=tenant, other_tenant=other_tenant or f"{tenant}-other",
        messaging_limit=messaging_limit, waba=waba, settings=settings,
    )
    config = simulator_config(numbers, waba=waba).model_dump()
    config["wabas"][0]["templates"].extend(extra_templates)
    config["behaviour"] |= behaviour or {}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with serve_http(create_simulator(SimulatorConfig.model_validate(config)), port):
        if sync_templates:
            synced = await sync_catalogue(database_url, url, tenant)
            assert synced["synced"] == len(config["wabas"][0]["templates"]), synced
        yield Simulated(url, keys)


def sender_settings(kafka: str, database_url: str, sim_url: str, **kw: Any) -> SenderSettings:
    options: dict[str, Any] = {
        "batch_timeout_ms": 20,
        "retry_initial_s": 0.2,
        "retry_max_s": 1.0,
        "log_level": "WARNING",
    } | kw
    return SenderSettings(kafka_bootstrap=kafka, database_url=database_url, graph_api_base=sim_url, **options)


@dataclass
class RunningSender:
    app: FastAPI
    task: asyncio.Task[None]
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def shutdown(self) -> None:
        self.stop.set()
        await self.task

    async def kill(self) -> None:
        """Cancel the app's task mid-stream (as a SIGTERM would)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_sender(settings: SenderSettings) -> RunningSender:
    app = create_app(settings)
    started = asyncio.Event()
    stop = asyncio.Event()

    async def run() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    await asyncio.wait_for(started.wait(), 60)
    return RunningSender(app, task, stop)


def sender_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``parley-sender run`` as its own process (to be killed with SIGKILL), configured by ``env``."""
    return subprocess.Popen([sys.executable, "-m", "parley_sender.cli", "run"], env=env)


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Waits until the sender process answers ``/healthz`` on ``port``; fails at once if it exited."""
    async with httpx.AsyncClient() as c:
        async def healthy() -> bool:
            assert proc.poll() is None, f"sender exited with {proc.returncode}"
            try:
                return (await c.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, what=f"the sender process on port {port} ready", timeout_s=60, every_s=0.1)


class Producer:
    def __init__(self, bootstrap: str) -> None:
        self._p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")

    async def __aenter__(self) -> Producer:
        await self._p.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._p.stop()

    async def send(self, topic: str, value: Any, key: str) -> tuple[int, int]:
        """Sends and waits for the broker; returns the record's (partition, offset)."""
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        meta = await self._p.send_and_wait(topic, raw, key=key.encode())
        return meta.partition, meta.offset


async def consumed(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    """Waits until consumer group ``group`` (its base name: the namespace is added, as the services
    do) committed past ``offset`` of ``topic[partition]``: the record's effects are durable
    (consumers commit only after them)."""
    group = consumer_group(group)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    tp = TopicPartition(topic, partition)
    try:
        async def past() -> bool:
            offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
            meta = offsets.get(tp)
            return meta is not None and meta.offset > offset

        await eventually(past, what=f"{group} consumed {topic}[{partition}]@{offset}", timeout_s=180)
    finally:
        await admin.close()


async def collect(
    bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Read ``topic`` from the beginning until ``done(records)`` holds or the timeout passes."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done(out) and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
        return out
    finally:
        await consumer.stop()


def outbound(
    message_id: str,
    pn: str,
    to: str,
    *,
    kind: str = "template",
    name: str = "order_update",
    params: tuple[str, ...] = ("Ann", "A-1"),
    **kw: Any,
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": message_id,
        "message_id": message_id,
        "tenant_id": TENANT_OF_NUMBER.get(pn),
        "phone_number_id": pn,
        "occurred_at": datetime.now(UTC).isoformat(),
        "to": to,
        "type": kind,
    }
    if kind == "template":
        base["template"] = {
            "name": name,
            "language": "en_US",
            "components": [{"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}],
        }
    else:
        base["content"] = {"body": "hello"}
    return base | kw


def new_id(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def sim_count(sim_url: str, callback: str) -> int:
    async with httpx.AsyncClient(base_url=sim_url) as c:
        r = await c.get("/_sim/messages", params={"biz_opaque_callback_data": callback})
        return int(r.json()["count"])


async def sync_catalogue(database_url: str, sim_url: str, tenant: str) -> dict[str, int]:
    """What ``parley-sender templates sync --tenant T`` does, against the simulator."""
    from parley_common.db import create_pool
    from parley_common.tenancy.directory import TenantDirectory
    from parley_sender.catalogue import sync_templates
    from parley_sender.cloudapi import CloudApiClient
    from parley_sender.store import MIGRATIONS, SenderStore

    pool = await create_pool(database_url)
    client = CloudApiClient(base_override=sim_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "sender", MIGRATIONS)
        return await sync_templates(SenderStore(pool), client, await TenantDirectory.load(pool), tenant)
    finally:
        await client.aclose()
        await pool.close()
