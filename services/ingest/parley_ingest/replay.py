"""Re-normalise the raw archive (``wa.webhooks.raw``) of a period onto the event topics.

Every record of the archive holds the exact bytes of an accepted webhook, its verified app and
its receive time. Normalising them again gives the same event ids (wamid, ``wamid:status``, a
hash of the change), so consumers drop what they already have: a replay only fills gaps (and
applies a newer normaliser, or a newer tenant registry, to old traffic). The raw archive itself
is not written again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from parley_common.broker import kafka_client_options
from parley_common.contracts import ContactMerged
from parley_common.db import create_pool
from parley_common.meta import InvalidWebhookJson, normalise_raw_webhook
from parley_common.producer import RecordProducer
from parley_common.tenancy.directory import TenantDirectory
from parley_common.topics import WEBHOOKS_RAW

from parley_ingest.contacts import ContactBook, stamp, work_of_webhook
from parley_ingest.domain.records import (
    H_APP_ID,
    H_RECEIVED_AT,
    H_SIGNATURE_VALID,
    OutRecord,
    event_records,
    merge_records,
    problem_record,
)
from parley_ingest.publishing import RecordWriter
from parley_ingest.services import DirectoryTenants
from parley_ingest.settings import IngestSettings


@dataclass
class ReplayReport:
    webhooks: int = 0
    skipped: int = 0
    events: int = 0
    problems: int = 0


async def replay_raw(
    settings: IngestSettings,
    start: datetime,
    end: datetime,
    *,
    dry_run: bool = False,
    batch_records: int = 2000,
) -> ReplayReport:
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)  # with the json codecs
    try:
        directory = await TenantDirectory.load(pool)
    except BaseException:
        await pool.close()
        raise
    # the events go out with their customers' contacts, as when ingest first took them (ADR 0117)
    book = None if dry_run else ContactBook(lambda: pool)
    merges: list[ContactMerged] = []
    report = ReplayReport()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        client_id="parley-ingest-replay",
        **kafka_client_options(settings),
    )
    producer = RecordProducer(settings, service="ingest-replay")
    await consumer.start()
    if not dry_run:
        await producer.start()
    writer = RecordWriter(producer, timeout_s=max(30.0, settings.produce_timeout_s), breaker_s=0)
    try:
        topic = WEBHOOKS_RAW.name
        # aiokafka offers no public metadata lookup for a consumer without a subscription
        cluster = await consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: int(start.timestamp() * 1000) for tp in tps})
        ends = await consumer.end_offsets(tps)
        end_ms = int(end.timestamp() * 1000)
        remaining = set()
        for tp in tps:
            found = starts.get(tp)
            if found is not None and found.offset < ends[tp]:
                consumer.seek(tp, found.offset)
                remaining.add(tp)
        pending: list[OutRecord] = []
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=500)
            for tp, messages in batches.items():
                for msg in messages:
                    if tp not in remaining:
                        break
                    if msg.timestamp >= end_ms:
                        remaining.discard(tp)
                        break
                    pending += await _records_of(msg.value, dict(msg.headers), directory, report, book, merges)
                    if msg.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if len(pending) >= batch_records or not remaining:
                if not dry_run:
                    await writer.write_all(pending)
                if book is not None:
                    await book.announced(merges)
                pending, merges = [], []
    finally:
        await consumer.stop()
        await pool.close()
        if not dry_run:
            await producer.stop()
    return report


async def _records_of(
    raw: bytes | None, headers: dict[str, bytes], directory: TenantDirectory, report: ReplayReport,
    book: ContactBook | None = None, merges: list[ContactMerged] | None = None,
) -> list[OutRecord]:
    app_id = headers.get(H_APP_ID, b"").decode()
    if raw is None or headers.get(H_SIGNATURE_VALID) != b"true" or not app_id:
        report.skipped += 1
        return []
    received_at = datetime.fromisoformat(headers[H_RECEIVED_AT].decode())
    try:
        normalised = normalise_raw_webhook(
            raw, received_at=received_at, tenants=DirectoryTenants(directory, app_id)
        )
    except InvalidWebhookJson:
        report.skipped += 1
        return []
    report.webhooks += 1
    report.events += normalised.event_count
    report.problems += len(normalised.problems)
    found: list[ContactMerged] = []
    if book is not None:
        work, numbers = work_of_webhook(normalised)
        resolved = await book.resolve(work, phone_number_ids=numbers)
        normalised, found = stamp(normalised, resolved), resolved.merges
        if merges is not None:
            merges += found
    return event_records(normalised, app_id=app_id) + merge_records(found) + [
        problem_record(raw, p, app_id=app_id, received_at=received_at) for p in normalised.problems
    ]


def run_replay(settings: IngestSettings, start: datetime, end: datetime, dry_run: bool) -> ReplayReport:
    return asyncio.run(replay_raw(settings, start, end, dry_run=dry_run))
