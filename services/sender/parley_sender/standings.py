"""Each business number's standing as Meta last reported it, in PostgreSQL (``sender.number_standing``).

Account events are consumed by one replica of ``parley-sender-accounts``, but every replica sends
from the numbers of its partitions: the consuming replica writes here and re-reads at once, the
others on their next periodic read (``throughput_reload_s``), with the reported throughput
(docs/adr/0118-throughput-from-meta.md, docs/adr/0121-quality-acts-on-sending.md).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parley_sender.domain.standing import NumberStanding


class NumberStandings:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record_quality(self, phone_number_id: str, quality: str, at: datetime) -> None:
        """Meta reported the number's quality; an older report never replaces a newer one."""
        await self.pool.execute(
            """INSERT INTO sender.number_standing AS s (phone_number_id, quality, quality_at) VALUES ($1, $2, $3)
               ON CONFLICT (phone_number_id) DO UPDATE SET quality = EXCLUDED.quality, quality_at = EXCLUDED.quality_at
               WHERE s.quality_at IS NULL OR s.quality_at <= EXCLUDED.quality_at""",
            phone_number_id,
            quality,
            at,
        )

    async def record_coexistence(self, phone_number_id: str, at: datetime) -> None:
        """Meta sent a webhook only numbers shared with the WhatsApp Business app get."""
        await self.pool.execute(
            """INSERT INTO sender.number_standing AS s (phone_number_id, coexistence, coexistence_at)
               VALUES ($1, true, $2)
               ON CONFLICT (phone_number_id) DO UPDATE SET coexistence = true,
                 coexistence_at = least(s.coexistence_at, EXCLUDED.coexistence_at)""",
            phone_number_id,
            at,
        )

    async def all(self) -> dict[str, NumberStanding]:
        rows = await self.pool.fetch("SELECT phone_number_id, quality, coexistence FROM sender.number_standing")
        return {r["phone_number_id"]: NumberStanding(r["quality"], r["coexistence"]) for r in rows}
