"""What a benchmark does when it ends, as tests/conftest.py and tests/soak/stack.py do: drop the
database it created and delete the topics of its namespace, so that runs leave nothing behind on the
shared broker and database server."""

from __future__ import annotations

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient


async def drop_database(server_url: str, name: str) -> None:
    """``DROP DATABASE … WITH (FORCE)``: connections a crashed child left open do not keep it."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def delete_namespace_topics(bootstrap: str, namespace: str) -> list[str]:
    """Delete every topic whose name starts with ``namespace`` (never the un-namespaced ones)."""
    if not namespace:
        raise ValueError("refusing to delete topics without a namespace")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(namespace)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
