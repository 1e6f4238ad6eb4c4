"""Consumer groups live in the topic namespace (``PARLEY_TOPIC_NAMESPACE``) like the topics do, so
two test sessions (or two stacks on one broker) never join, and so never rebalance, each other's
groups. Real broker: the services are started and the groups they joined are read back."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from parley_common.topics import ALL_TOPICS, consumer_group, namespace

pytestmark = pytest.mark.infra


def test_a_group_id_carries_the_namespace_of_the_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_TOPIC_NAMESPACE", "session-a.")
    assert consumer_group("parley-router") == "session-a.parley-router"
    monkeypatch.delenv("PARLEY_TOPIC_NAMESPACE")
    assert consumer_group("parley-router") == "parley-router"  # production: the names in deploy/


async def _groups(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()


async def _joined(bootstrap: str, wanted: set[str]) -> set[str]:
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        found = wanted & await _groups(bootstrap)
        if found == wanted:
            return found
        await asyncio.sleep(0.5)
    return wanted & await _groups(bootstrap)


async def test_billing_and_the_sender_join_groups_of_their_own_namespace(
    kafka_bootstrap: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parley_billing.app import create_app as billing_app
    from parley_billing.settings import BillingSettings
    from parley_sender.app import create_app as sender_app
    from parley_sender.settings import SenderSettings

    monkeypatch.setenv("PARLEY_DEMO", "true")
    ns = namespace()
    assert ns, "the test fixtures give every module a namespace"
    suffix = uuid.uuid4().hex[:6]  # nothing of an earlier run of this test answers for this one
    monkeypatch.setenv("PARLEY_TOPIC_NAMESPACE", f"{ns}{suffix}.")
    from parley_common.topics_cli import ensure_topics

    await ensure_topics(kafka_bootstrap, partitions=1)
    billing = billing_app(BillingSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url))
    sender = sender_app(SenderSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                       graph_api_base="http://127.0.0.1:9"))
    wanted = {f"{ns}{suffix}.{g}" for g in ("parley-billing", "parley-sender", "parley-sender-windows",
                                            "parley-sender-statuses", "parley-sender-accounts")}
    try:
        async with billing.router.lifespan_context(billing), sender.router.lifespan_context(sender):
            assert await _joined(kafka_bootstrap, wanted) == wanted
    finally:  # this test's own topics, not the module's (the fixture removes those)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([t.name for t in ALL_TOPICS])
        finally:
            await admin.close()
