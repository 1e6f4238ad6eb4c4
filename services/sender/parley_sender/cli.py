"""``parley-sender``: run the service, sync templates, list and replay dead letters.

parley-sender run
parley-sender templates sync [--tenant T]
parley-sender deadletters list [--limit N]
parley-sender deadletters replay (--id ID | --all)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from parley_common.broker import kafka_client_options
from parley_common.contracts import DeadLetter
from parley_common.db import create_pool, migrate
from parley_common.producer import Record, RecordProducer
from parley_common.runtime import TENANCY_MIGRATIONS, serve
from parley_common.tenancy.directory import TenantDirectory
from parley_common.topics import DEAD_LETTERS, MESSAGES_OUT, MESSAGES_OUT_RETRY

from parley_sender.catalogue import sync_templates
from parley_sender.cloudapi import CloudApiClient
from parley_sender.effects import SERVICE
from parley_sender.settings import SenderSettings
from parley_sender.store import MIGRATIONS, SenderStore

app = typer.Typer(help="Parley's sender service.", no_args_is_help=True)
templates = typer.Typer(help="The template catalogue.", no_args_is_help=True)
deadletters = typer.Typer(help="Requests the sender could not handle.", no_args_is_help=True)
app.add_typer(templates, name="templates")
app.add_typer(deadletters, name="deadletters")


@app.command()
def run() -> None:
    """Start the sender (HTTP on PARLEY_SENDER_HTTP_PORT, default 8083)."""
    from parley_sender.app import create_app

    settings = SenderSettings()
    serve(create_app(settings), settings)


async def _sync(tenant: str | None) -> dict[str, dict[str, int]]:
    s = SenderSettings()
    pool = await create_pool(s.database_url)
    client = CloudApiClient(
        base_override=s.graph_api_base, version_override=s.graph_api_version, timeout_s=s.http_timeout_s
    )
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
            await migrate(conn, "sender", MIGRATIONS)
        directory = await TenantDirectory.load(pool)
        store = SenderStore(pool)
        ids = [tenant] if tenant else sorted(directory.tenants)
        return {tid: await sync_templates(store, client, directory, tid) for tid in ids}
    finally:
        await client.aclose()
        await pool.close()


@templates.command("sync")
def templates_sync(tenant: str | None = typer.Option(None, "--tenant", help="only this tenant")) -> None:
    """Refresh the catalogue from the Graph API (every tenant, or one)."""
    try:
        result = asyncio.run(_sync(tenant))
    except KeyError as exc:
        typer.echo(f"error: unknown tenant {exc}", err=True)
        raise typer.Exit(2) from exc
    for tid, counts in result.items():
        typer.echo(f"{tid}: {counts['synced']} template(s) synced, {counts['removed']} removed")


async def read_dead_letters(
    bootstrap: str, *, service: str = SERVICE, timeout_s: float = 5.0, client_options: dict[str, Any] | None = None
) -> list[DeadLetter]:
    """Every dead letter of ``service`` currently on the topic (reads from the beginning, no group)."""
    consumer = AIOKafkaConsumer(
        DEAD_LETTERS.name,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        **(client_options or {}),
    )
    await consumer.start()
    out: list[DeadLetter] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        end: dict[TopicPartition, int] | None = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for rec in records:
                    try:
                        letter = DeadLetter.model_validate_json(rec.value or b"")
                    except ValueError:
                        continue
                    if letter.service == service:
                        out.append(letter)
            tps = consumer.assignment()
            if tps and end is None:
                end = await consumer.end_offsets(list(tps))
            if end is not None and all([await consumer.position(tp) >= off for tp, off in end.items()]):
                break
        return out
    finally:
        await consumer.stop()


def replay_value(letter: DeadLetter) -> bytes:
    """The payload to republish; a send request is replayed as a fresh attempt."""
    import base64

    raw = letter.payload.encode() if letter.payload_encoding == "utf-8" else base64.b64decode(letter.payload)
    if letter.source_topic in (MESSAGES_OUT.name, MESSAGES_OUT_RETRY.name):
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        if isinstance(data, dict):
            data.update({"attempt": 0, "not_before": None, "origin": "replay"})
            return orjson.dumps(data)
    return raw


async def replay(settings: SenderSettings, letters: list[DeadLetter]) -> int:
    """Every letter back onto its source topic (in order per key), acknowledged by Kafka."""
    producer = RecordProducer(settings, service="sender-replay")
    await producer.start()
    try:
        topic_map = {MESSAGES_OUT_RETRY.name: MESSAGES_OUT.name}
        await producer.send_all([
            Record(topic_map.get(letter.source_topic, letter.source_topic),
                   (letter.key or letter.event_id).encode(), replay_value(letter))
            for letter in letters])
        return len(letters)
    finally:
        await producer.stop()


@deadletters.command("list")
def deadletters_list(limit: int = typer.Option(100, "--limit")) -> None:
    """The sender's dead letters, one JSON object a line (id, topic, reason; never the payload)."""
    settings = SenderSettings()
    letters = asyncio.run(read_dead_letters(settings.kafka_bootstrap,
                                            client_options=kafka_client_options(settings)))
    for letter in letters[-limit:]:
        typer.echo(
            json.dumps(
                {
                    "id": letter.event_id,
                    "source_topic": letter.source_topic,
                    "key": letter.key,
                    "error_type": letter.error_type,
                    "reason": letter.reason[:200],
                    "attempts": letter.attempts,
                    "failed_at": letter.failed_at.isoformat(),
                }
            )
        )
    typer.echo(f"{len(letters)} dead letter(s)", err=True)


@deadletters.command("replay")
def deadletters_replay(
    id_: str | None = typer.Option(None, "--id", help="the dead letter's id"),
    all_: bool = typer.Option(False, "--all", help="replay every dead letter"),
) -> None:
    """Republish dead letters onto their source topic."""
    if bool(id_) == all_:
        typer.echo("error: give exactly one of --id ID or --all", err=True)
        raise typer.Exit(2)
    settings = SenderSettings()
    bootstrap, options = settings.kafka_bootstrap, kafka_client_options(settings)

    async def go() -> int:
        letters = await read_dead_letters(bootstrap, client_options=options)
        chosen = letters if all_ else [le for le in letters if le.event_id == id_]
        if not chosen:
            return -1
        # The same request may have been dead-lettered more than once: replay it once.
        unique = list({le.event_id: le for le in chosen}.values())
        return await replay(settings, unique)

    n = asyncio.run(go())
    if n < 0:
        typer.echo(f"error: no dead letter {id_!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{n} dead letter(s) replayed")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
