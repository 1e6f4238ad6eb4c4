"""``parley-topics create``: create every topic of the registry; idempotent.
``parley-topics delete-namespace NS``: delete the topics of one namespace (a test module's, a
benchmark's or a soak run's, ``PARLEY_TOPIC_NAMESPACE``), never Parley's own."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from parley_common.broker import kafka_client_options
from parley_common.settings import CommonSettings
from parley_common.topics import ALL_TOPICS

app = typer.Typer(help="Kafka topics of Parley.", no_args_is_help=True, pretty_exceptions_enable=False)


async def ensure_topics(bootstrap: str, replication_factor: int = 1, partitions: int | None = None,
                        client_options: dict[str, Any] | None = None) -> list[str]:
    """Create missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **(client_options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in ALL_TOPICS if t.name not in existing]
        if missing:
            await admin.create_topics([
                NewTopic(t.name, partitions or t.partitions, replication_factor,
                         topic_configs={"retention.ms": str(t.retention_ms), "cleanup.policy": t.cleanup_policy,
                                        "max.message.bytes": str(4 * 1024 * 1024),
                                        # with acks=all, a write is durable on at least two replicas
                                        "min.insync.replicas": "2" if replication_factor >= 3 else "1"})
                for t in missing
            ])
        return [t.name for t in missing]
    finally:
        await admin.close()


async def delete_namespace(bootstrap: str, namespace: str, client_options: dict[str, Any] | None = None) -> list[str]:
    """Delete every topic whose name starts with ``namespace``; returns their names. Refuses the
    empty namespace: the topics without one are the deployment's own."""
    if not namespace:
        raise ValueError("refusing to delete topics without a namespace")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **(client_options or {}))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(namespace)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


@app.command("create")
def create(replication_factor: int = typer.Option(1, min=1)) -> None:
    settings = CommonSettings()
    bootstrap = settings.kafka_bootstrap
    try:
        created = asyncio.run(ensure_topics(bootstrap, replication_factor,
                                            client_options=kafka_client_options(settings)))
    except KafkaConnectionError as exc:
        typer.echo(f"error: cannot reach Kafka at {bootstrap}: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"created {len(created)} topic(s); {len(ALL_TOPICS) - len(created)} already existed")


@app.command("delete-namespace")
def delete_namespace_command(namespace: str) -> None:
    if not namespace:
        typer.echo("error: give a namespace; the topics without one are the deployment's own", err=True)
        raise typer.Exit(2)
    settings = CommonSettings()
    deleted = asyncio.run(delete_namespace(settings.kafka_bootstrap, namespace,
                                           client_options=kafka_client_options(settings)))
    typer.echo(f"deleted {len(deleted)} topic(s) of namespace {namespace!r}")


@app.command("list")
def list_topics() -> None:
    for t in ALL_TOPICS:
        typer.echo(f"{t.name:<24} partitions={t.partitions:<3} key={t.key:<28} {t.description}")


def main() -> None:
    app(prog_name="parley-topics")
