"""Posting signed webhooks to the receiver, the way Meta does.

- Every POST body is signed: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>``.
  Bodies are serialised with non-ASCII characters escaped as ``\\u`` plus four hex digits, as Meta sends them; the
  signature covers exactly the bytes sent.
- Statuses become due at their own time and are gathered into batches: several ``statuses[]``
  per change, one change per phone number, one ``entry[]`` per WABA (and sometimes one entry per
  number, as Meta may).
- A non-2xx answer or a connection error is retried with exponential backoff, the same bytes
  each time, up to a bounded number of attempts.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .config import Behaviour


def sign(body: bytes, app_secret: str) -> str:
    """The value of ``X-Hub-Signature-256`` for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass
class PendingStatus:
    app_id: str
    waba_id: str
    metadata: dict[str, str]
    status: dict[str, Any]
    on_posted: Callable[[], None] | None = None


@dataclass
class PendingPayload:
    app_id: str
    body: bytes
    attempt: int = 0
    kind: str = "messages"
    on_posted: list[Callable[[], None]] = field(default_factory=list)


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    item: PendingStatus | PendingPayload = field(compare=False)


@dataclass
class PostedWebhook:
    app_id: str
    kind: str
    body: bytes
    signature: str
    http_status: int | None
    attempt: int


class WebhookDispatcher:
    def __init__(
        self,
        *,
        url_template: str | None,
        app_secrets: dict[str, str],
        behaviour: Behaviour,
        rng: random.Random,
        keep_log: int = 2000,
    ) -> None:
        self.url_template = url_template
        self.app_secrets = app_secrets
        self.behaviour = behaviour
        self._rng = rng
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._posts: set[asyncio.Task[None]] = set()
        self.stats: Counter[str] = Counter()
        self.log: list[PostedWebhook] = []
        self._keep_log = keep_log

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._client = httpx.AsyncClient(timeout=self.behaviour.webhook_timeout_s)
            self._sem = asyncio.Semaphore(self.behaviour.webhook_concurrency)
            self._task = asyncio.create_task(self._run(), name="sim-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for t in list(self._posts):
            t.cancel()
        await asyncio.gather(*self._posts, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is scheduled or in flight (statuses due later are waited for)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._heap and self._in_flight == 0:
                return True
            await asyncio.sleep(0.01)
        return False

    @property
    def pending(self) -> int:
        return len(self._heap) + self._in_flight

    # --- scheduling -----------------------------------------------------------------------

    def schedule_status(self, delay_s: float, status: PendingStatus) -> None:
        self._push(time.monotonic() + delay_s, status)

    def post_payload(
        self, app_id: str, payload: dict[str, Any], *, kind: str = "messages", delay_s: float = 0.0
    ) -> None:
        self._push(time.monotonic() + delay_s, PendingPayload(app_id, encode(payload), kind=kind))

    def _push(self, at: float, item: PendingStatus | PendingPayload) -> None:
        heapq.heappush(self._heap, _Due(at, next(self._seq), item))
        self._wake.set()

    def reset(self) -> None:
        self._heap.clear()
        self.stats.clear()
        self.log.clear()

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._heap[0].at - time.monotonic()
            if wait > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            # Something is due: give its neighbours a moment to become due too, then batch.
            if self.behaviour.webhook_batch_window_ms > 0:
                await asyncio.sleep(self.behaviour.webhook_batch_window_ms / 1000)
            now = time.monotonic()
            statuses: list[PendingStatus] = []
            payloads: list[PendingPayload] = []
            while self._heap and self._heap[0].at <= now:
                item = heapq.heappop(self._heap).item
                if isinstance(item, PendingStatus):
                    statuses.append(item)
                else:
                    payloads.append(item)
            payloads.extend(self._batch(statuses))
            for p in payloads:
                self._in_flight += 1
                task = asyncio.create_task(self._post(p))
                self._posts.add(task)
                task.add_done_callback(self._posts.discard)

    def _batch(self, statuses: list[PendingStatus]) -> list[PendingPayload]:
        by_app: dict[str, list[PendingStatus]] = {}
        for s in statuses:
            by_app.setdefault(s.app_id, []).append(s)
        out: list[PendingPayload] = []
        size = max(1, self.behaviour.webhook_batch_max)
        for app_id, items in by_app.items():
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                split = self._rng.random() < self.behaviour.split_entries_ratio
                payload = status_payload(chunk, split_entries=split)
                callbacks = [s.on_posted for s in chunk if s.on_posted is not None]
                out.append(PendingPayload(app_id, encode(payload), kind="statuses", on_posted=callbacks))
        return out

    async def _post(self, p: PendingPayload) -> None:
        try:
            await self._deliver(p)
        finally:
            self._in_flight -= 1

    async def _deliver(self, p: PendingPayload) -> None:
        secret = self.app_secrets.get(p.app_id)
        p.attempt += 1
        if self.url_template is None or secret is None or self._client is None:
            self.stats["webhooks_not_configured"] += 1
            for cb in p.on_posted:
                cb()
            return
        url = self.url_template.format(app_id=p.app_id)
        signature = sign(p.body, secret)
        status: int | None = None
        async with self._sem:
            try:
                resp = await self._client.post(
                    url,
                    content=p.body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": signature,
                        "User-Agent": "facebookexternalua",
                    },
                )
                status = resp.status_code
            except httpx.HTTPError:
                status = None
        self._remember(PostedWebhook(p.app_id, p.kind, p.body, signature, status, p.attempt))
        if status is not None and 200 <= status < 300:
            self.stats["webhooks_posted"] += 1
            self.stats[f"webhooks_posted_{p.kind}"] += 1
            for cb in p.on_posted:
                cb()
            return
        self.stats["webhook_attempts_failed"] += 1
        if p.attempt >= self.behaviour.webhook_max_attempts:
            self.stats["webhooks_failed"] += 1
            return
        backoff = min(
            self.behaviour.webhook_retry_max_s, self.behaviour.webhook_retry_base_s * 2 ** (p.attempt - 1)
        )
        self.stats["webhooks_retried"] += 1
        self._push(time.monotonic() + backoff, p)

    def _remember(self, posted: PostedWebhook) -> None:
        self.log.append(posted)
        if len(self.log) > self._keep_log:
            del self.log[: len(self.log) - self._keep_log]


def status_payload(statuses: list[PendingStatus], *, split_entries: bool = False) -> dict[str, Any]:
    """One webhook body for several statuses (of one app): entry per WABA, change per number."""
    entries: dict[str, dict[str, list[PendingStatus]]] = {}
    for s in statuses:
        entries.setdefault(s.waba_id, {}).setdefault(s.metadata["phone_number_id"], []).append(s)
    entry_list: list[dict[str, Any]] = []
    for waba_id, numbers in entries.items():
        changes = [
            {
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": items[0].metadata,
                    "statuses": [i.status for i in items],
                },
                "field": "messages",
            }
            for items in numbers.values()
        ]
        if split_entries:
            entry_list.extend({"id": waba_id, "changes": [c]} for c in changes)
        else:
            entry_list.append({"id": waba_id, "changes": changes})
    return {"object": "whatsapp_business_account", "entry": entry_list}
