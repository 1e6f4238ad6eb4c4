"""Infrastructure for tests, chosen in this order (docs/ARCHITECTURE.md, "Running and testing"):

1. ``PARLEY_KAFKA_BOOTSTRAP`` / ``PARLEY_DATABASE_URL`` when set;
2. testcontainers (Kafka KRaft, PostgreSQL) when a Docker engine answers;
3. the local processes of ``deploy/local/infra.sh`` (Kafka from Maven Central, PostgreSQL from
   the OS packages), started if they are not running.

Tests that need Kafka or PostgreSQL fail loudly when none of these works; they never skip and
never fall back to an in-memory fake. Each session gets its own database, and each test module its own topic namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

REPO = Path(__file__).resolve().parents[1]
# Services refuse to start without a redaction key (outside the demo); tests use a throwaway one.
os.environ.setdefault("PARLEY_REDACTION_KEY", "tests-" + uuid.uuid4().hex)


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    server_database_url: str  # the server's own database, for creating per-session databases
    source: str


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _local_infra() -> Infra:
    proc = subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "up"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"deploy/local/infra.sh up failed:\n{proc.stdout}\n{proc.stderr}")
    env = subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "env"], capture_output=True, text=True,
                         check=True).stdout
    values = {}
    for line in env.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            values[k] = shlex.split(v)[0] if v else ""
    return Infra(values["PARLEY_KAFKA_BOOTSTRAP"], values["PARLEY_DATABASE_URL"], "local processes")


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    kafka = os.environ.get("PARLEY_KAFKA_BOOTSTRAP")
    db = os.environ.get("PARLEY_DATABASE_URL")
    if kafka and db:
        yield Infra(kafka, db, "environment")
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as k, \
                PostgresContainer("postgres:16", driver=None) as pg:
            yield Infra(k.get_bootstrap_server(), pg.get_connection_url(), "testcontainers")
        return
    local = _local_infra()
    yield Infra(kafka or local.kafka_bootstrap, db or local.server_database_url, local.source)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def session_ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
async def database_url(infra: Infra, session_ns: str) -> AsyncIterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    admin = await asyncpg.connect(infra.server_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{session_ns}"')
    finally:
        await admin.close()
    url = _with_database(infra.server_database_url, session_ns)
    os.environ["PARLEY_DATABASE_URL"] = url
    yield url
    admin = await asyncpg.connect(infra.server_database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{session_ns}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def kafka_bootstrap(infra: Infra, session_ns: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The broker, with every topic of the registry created under a namespace of this session and
    this test module, so that one module's services never consume another module's records."""
    from parley_common.topics_cli import ensure_topics

    module = request.node.name.removesuffix(".py").replace("_", "-")[-40:]
    ns = f"{session_ns}-{module}."
    os.environ["PARLEY_TOPIC_NAMESPACE"] = ns
    os.environ["PARLEY_KAFKA_BOOTSTRAP"] = infra.kafka_bootstrap
    await asyncio.wait_for(ensure_topics(infra.kafka_bootstrap, partitions=3), 60)
    yield infra.kafka_bootstrap
    # Leave the broker as lean as we found it: a developer's broker outlives many test runs.
    from parley_common.topics_cli import delete_namespace

    with contextlib.suppress(Exception):
        await delete_namespace(infra.kafka_bootstrap, ns)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"parley: infrastructure order env → testcontainers (docker: {_docker_answers()}) → local processes"]
