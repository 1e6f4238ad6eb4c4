"""What a benchmark does when it ends, as tests/conftest.py and tests/soak/stack.py do: drop the
database it created and delete the topics of its namespace
(``parley_common.topics_cli.delete_namespace``, which this re-exports for the benchmarks), so that
runs leave nothing behind on the shared broker and database server."""

from __future__ import annotations

import asyncpg
from parley_common.topics_cli import delete_namespace as delete_namespace_topics

__all__ = ["delete_namespace_topics", "drop_database"]


async def drop_database(server_url: str, name: str) -> None:
    """``DROP DATABASE … WITH (FORCE)``: connections a crashed child left open do not keep it."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
