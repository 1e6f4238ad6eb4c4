"""Two contacts found to be one person (``ContactMerged``, ADR 0117): the sender's state under the
absorbed key moves to the kept contact, on real PostgreSQL; a repeat changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from parley_common.db import create_pool, migrate
from parley_sender.contact_merges import fold_contacts
from parley_sender.domain.windows import ConversationWindows
from parley_sender.store import MIGRATIONS, SenderStore

from .harness import new_id

pytestmark = pytest.mark.infra
H = timedelta(hours=1)


async def test_a_merge_moves_windows_consent_and_the_messaging_limit_place_to_the_kept_contact(
    database_url: str,
) -> None:
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "sender", MIGRATIONS)
        store, tid, pn = SenderStore(pool), new_id("merge"), new_id("pn")
        phone, bsuid = new_id("44"), "GB." + new_id("1").replace("-", "")
        now = datetime.now(UTC)
        # By phone: a window two hours old. By username (BSUID): a newer window from an ad, a STOP,
        # and a place in the messaging limit each.
        by_phone = ConversationWindows().observe_inbound(now - 2 * H, from_referral=False)
        by_user = ConversationWindows().observe_inbound(now - H, from_referral=True)
        held = {(pn, phone): (by_phone, "wamid.P"), (pn, bsuid): (by_user, "wamid.U")}
        await store.change_windows(held, lambda key, _: held[key])
        await store.apply_consent(tid, bsuid, "stop", now - H, "router_keyword")
        await store.record_reached([(tid, phone, now - 3 * H), (tid, bsuid, now - H)])

        for _ in range(2):  # a repeated announcement changes nothing
            await fold_contacts(pool, tid, [pn], phone, [bsuid])

        windows = await store.windows([(pn, phone), (pn, bsuid)])
        assert set(windows) == {(pn, phone)}
        merged = windows[(pn, phone)]
        assert merged.csw.last_inbound_at == now - H and merged.fep.referral_at == now - H
        consent = await store.consent(tid, [phone, bsuid])
        assert set(consent) == {phone} and consent[phone].marketing_stopped
        reached = await pool.fetch("SELECT customer_id, reached_at FROM sender.reached WHERE tenant_id = $1", tid)
        assert [(r["customer_id"], r["reached_at"]) for r in reached] == [(phone, now - H)]
    finally:
        await pool.close()


async def test_a_send_under_the_absorbed_key_after_the_merge_takes_the_kept_contacts_place(
    database_url: str,
) -> None:
    """The send request was stamped with the absorbed contact before ingest merged (it waited on
    Kafka behind the merge): its place in the messaging limit is still the kept contact's one, so
    one person never holds two places (seen in `make run`: 19 places for 10 people)."""
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "sender", MIGRATIONS)
        store, tid, pn = SenderStore(pool), new_id("merge-late"), new_id("pn")
        bsuid, phone = "BD." + new_id("1").replace("-", ""), new_id("880")
        now = datetime.now(UTC)
        await store.record_reached([(tid, bsuid, now - H)])
        await fold_contacts(pool, tid, [pn], bsuid, [phone])  # the phone's contact joins the BSUID's

        granted = await store.reserve_reach(tid, 1, [("m-late", phone)], now)
        assert granted == {"m-late"}  # the person holds a place already: no new one needed
        await store.record_reached([(tid, phone, now)])
        await store.release_reach([(tid, phone, "m-late")])
        reached = await pool.fetch("SELECT customer_id FROM sender.reached WHERE tenant_id = $1", tid)
        assert [r["customer_id"] for r in reached] == [bsuid]
        assert await store.kept_contacts(tid, [phone, bsuid, "someone-else"]) == {phone: bsuid}

        # a chain of merges: the kept contact is itself absorbed later
        other = "BD." + new_id("2").replace("-", "")
        await fold_contacts(pool, tid, [pn], other, [bsuid])
        assert await store.kept_contacts(tid, [phone, bsuid]) == {phone: other, bsuid: other}
    finally:
        await pool.close()
