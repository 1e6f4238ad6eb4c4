"""Group commit of message rows (parley_sender/journal.py) with a stand-in for the database write."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from parley_sender.journal import NotClaimed, RowJournal
from parley_sender.store import MessageRow


def row(mid: str) -> MessageRow:
    return MessageRow(message_id=mid, tenant_id="t", phone_number_id="1", recipient="c", state="sending", attempt=0)


class Database:
    def __init__(
        self, refuse: frozenset[str] = frozenset(), down: bool = False, taken: frozenset[str] = frozenset()
    ) -> None:
        self.statements: list[list[str]] = []
        self.stored: list[str] = []
        self.refuse, self.down, self.taken = refuse, down, taken

    async def write(self, rows: Sequence[MessageRow], conn: object = None) -> set[str]:
        self.statements.append([r.message_id for r in rows])
        await asyncio.sleep(0.01)  # one round trip
        if self.down:
            raise OSError("connection refused")
        if any(r.message_id in self.refuse for r in rows):
            raise ValueError("invalid byte sequence")
        self.stored.extend(r.message_id for r in rows if r.message_id not in self.taken)
        return {r.message_id for r in rows} & self.taken  # claims another process holds


async def test_rows_arriving_during_a_write_go_together_in_the_next_one() -> None:
    db = Database()
    journal = RowJournal(db.write)
    await asyncio.gather(*(journal.write(row(f"m{i}")) for i in range(50)))
    assert sorted(db.stored) == sorted(f"m{i}" for i in range(50))
    assert len(db.statements) == 1  # all arrived before the first write began


async def test_a_row_the_database_refuses_fails_alone() -> None:
    db = Database(refuse=frozenset({"bad"}))
    journal = RowJournal(db.write)
    results = await asyncio.gather(*(journal.write(row(m)) for m in ("a", "bad", "c")), return_exceptions=True)
    assert isinstance(results[1], ValueError) and results[0] is None and results[2] is None
    assert sorted(db.stored) == ["a", "c"]


async def test_an_unreachable_database_fails_the_whole_group_for_a_retry() -> None:
    db = Database(down=True)
    journal = RowJournal(db.write)
    with pytest.raises(OSError):
        await asyncio.gather(journal.write(row("a")), journal.write(row("b")))
    assert db.statements == [["a", "b"]]


async def test_a_row_arriving_while_the_connection_is_returned_is_still_written() -> None:
    db = Database()
    returned = asyncio.Event()

    class Lend:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            returned.set()
            await asyncio.sleep(0.01)  # returning the connection takes a moment

    journal = RowJournal(db.write, connect=Lend)
    first = asyncio.create_task(journal.write(row("a")))
    await returned.wait()
    await asyncio.wait_for(journal.write(row("b")), 2)
    await first
    assert db.stored == ["a", "b"]


async def test_a_row_whose_claim_another_process_holds_fails_alone_as_not_claimed() -> None:
    db = Database(taken=frozenset({"b"}))
    journal = RowJournal(db.write)
    results = await asyncio.gather(*(journal.write(row(m)) for m in "abc"), return_exceptions=True)
    assert db.statements == [["a", "b", "c"]]
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], NotClaimed)
    assert db.stored == ["a", "c"]
