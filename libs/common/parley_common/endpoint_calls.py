"""Calls to a tenant's own endpoints, off the consume path (ADR 0105), for any service.

A service queues a call by inserting a row into its own outbox table (same columns in every
schema: ``router.webhook_outbox``, ``billing.webhook_outbox``) in the transaction that records
what the call tells, before its Kafka offsets are committed. ``WebhookDispatcher`` makes the
calls: it claims due rows through ``EndpointOutbox`` with a lease, at most ``per_tenant`` calls
in flight per tenant and ``max_in_flight`` in all, so a tenant whose endpoint is slow or down
fills only its own slots; every other tenant goes on.

Each attempt is one POST of the row's body (JSON), signed with a timestamp
(``parley_common.outbound``), to an address that was resolved and checked just before, and
connected to by that address (the host name goes in ``Host`` and TLS SNI, so the certificate is
still checked against it): a name cannot resolve to a public address for the check and to a
private one for the call. Accepted (2xx, no redirects followed) → the row is deleted. Transport
errors, 408, 429 and 5xx → tried again later with exponential backoff, up to ``attempts``.
Anything else (another 4xx, a refused URL or address, an empty or missing secret, an endpoint no
longer in the tenant's settings) or the last failed attempt → ``wa.deadletter``, then the row is
deleted. A replica that dies mid-call leaves a lease that runs out, and another replica calls
again: at least once, with the same ``X-Parley-Event-Id`` on every attempt so the tenant can drop
repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import httpx
from prometheus_client import CollectorRegistry, Counter

from parley_common.outbound import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    EmptySecretError,
    EndpointPolicy,
    EndpointRefused,
    IPAddress,
    check_addresses,
    is_retryable_status,
    parse_endpoint_url,
    retry_delay_s,
    sign,
)
from parley_common.tenancy.models import SecretError, resolve_secret

log = logging.getLogger("parley.endpoint_calls")

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class EndpointRejected(RuntimeError):
    """The endpoint answered with a status that retrying will not fix (4xx other than 408/429, 3xx)."""


class EndpointUnavailable(RuntimeError):
    """The endpoint answered 5xx, 408 or 429: worth another attempt later."""


@dataclass(frozen=True)
class EndpointTarget:
    url: str
    secret_ref: str
    policy: EndpointPolicy


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def is_retryable(exc: BaseException) -> bool:
    # socket.gaierror (a name that does not resolve right now) is an OSError.
    return isinstance(exc, EndpointUnavailable | httpx.TransportError | OSError | TimeoutError)


@dataclass(frozen=True)
class PendingDelivery:
    """One claimed outbox row; ``attempt`` counts this one (from 1)."""

    delivery_id: str
    tenant_id: str
    endpoint: str
    phone_number_id: str
    event_id: str
    body: bytes
    attempt: int


def delivery_id(event_id: str, endpoint: str) -> str:
    return f"{event_id}:{endpoint}"


class EndpointOutbox:
    """A service's outbox table of tenant endpoint calls (``<schema>.webhook_outbox``).

    Its columns: delivery_id (primary key), tenant_id, endpoint (the name of the endpoint in the
    tenant's settings), phone_number_id, event_id, body, attempts, next_attempt_at, lease_until,
    last_error, created_at. URL and secret are read from the tenant's settings at each attempt:
    nothing secret is stored."""

    def __init__(self, pool: asyncpg.Pool, table: str) -> None:
        schema, _, name = table.partition(".")
        if not (schema.isidentifier() and name.isidentifier()):
            raise ValueError(f"outbox table {table!r} must be <schema>.<table>")
        self._pool = pool
        self.table = table

    async def claim(self, free_slots: Mapping[str, int], per_tenant: int, limit: int,
                    lease_s: float) -> list[PendingDelivery]:
        """Due rows, at most ``free_slots[tenant]`` (else ``per_tenant``) per tenant, leased for
        ``lease_s``. A row leased by another replica in between is skipped (the UPDATE re-checks
        the lease)."""
        if limit <= 0:
            return []
        rows = await self._pool.fetch(
            f"""WITH due AS (
                   SELECT delivery_id, tenant_id,
                          row_number() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at, delivery_id) AS rn
                   FROM {self.table}
                   WHERE next_attempt_at <= now() AND lease_until <= now()
               ), picked AS (
                   SELECT due.delivery_id FROM due
                   LEFT JOIN unnest($1::text[], $2::int[]) AS slots(tenant_id, free) USING (tenant_id)
                   WHERE due.rn <= coalesce(slots.free, $3)
                   ORDER BY due.rn, due.delivery_id LIMIT $4
               )
               UPDATE {self.table} o
               SET lease_until = now() + make_interval(secs => $5), attempts = o.attempts + 1
               FROM picked
               WHERE o.delivery_id = picked.delivery_id AND o.lease_until <= now()
               RETURNING o.delivery_id, o.tenant_id, o.endpoint, o.phone_number_id, o.event_id, o.body,
                         o.attempts""",
            list(free_slots), list(free_slots.values()), per_tenant, limit, lease_s)
        return [PendingDelivery(r["delivery_id"], r["tenant_id"], r["endpoint"], r["phone_number_id"],
                                r["event_id"], bytes(r["body"]), r["attempts"]) for r in rows]

    async def done(self, delivery_id: str) -> None:
        await self._pool.execute(f"DELETE FROM {self.table} WHERE delivery_id = $1", delivery_id)

    async def retry_later(self, delivery_id: str, delay_s: float, error: str) -> None:
        await self._pool.execute(
            f"""UPDATE {self.table} SET next_attempt_at = now() + make_interval(secs => $2),
                      lease_until = '-infinity', last_error = $3 WHERE delivery_id = $1""",
            delivery_id, delay_s, error[:500])

    async def release(self, delivery_ids: Sequence[str]) -> None:
        """Give leased rows back at once (a replica stopping cleanly), without counting the attempt."""
        if delivery_ids:
            await self._pool.execute(
                f"""UPDATE {self.table} SET lease_until = '-infinity', attempts = greatest(attempts - 1, 0)
                   WHERE delivery_id = ANY($1::text[])""", list(delivery_ids))

    async def pending(self, tenant_id: str | None = None) -> int:
        return int(await self._pool.fetchval(
            f"SELECT count(*) FROM {self.table} WHERE $1::text IS NULL OR tenant_id = $1", tenant_id))


class TenantEndpointClient:
    """One signed POST per call; an HTTP client per tenant (its own connection pool)."""

    def __init__(self, *, timeout_s: float = 5.0, resolver: Resolver = resolve_host,
                 connections_per_tenant: int = 8, clock: Callable[[], float] = time.time) -> None:
        self._timeout = timeout_s
        self._resolve = resolver
        self._limits = httpx.Limits(max_connections=connections_per_tenant,
                                    max_keepalive_connections=connections_per_tenant)
        self._clock = clock
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, tenant_id: str) -> httpx.AsyncClient:
        client = self._clients.get(tenant_id)
        if client is None:
            # trust_env=False: no proxy from the environment between the checked address and the call.
            client = self._clients[tenant_id] = httpx.AsyncClient(
                timeout=self._timeout, limits=self._limits, follow_redirects=False, trust_env=False)
        return client

    async def deliver(self, tenant_id: str, target: EndpointTarget, body: bytes, event_id: str) -> int:
        url = parse_endpoint_url(target.url, target.policy)
        secret = resolve_secret(target.secret_ref) or ""
        if not secret.strip():
            raise EmptySecretError(f"the endpoint's secret ({target.secret_ref}) is empty; nothing was sent")
        addresses = [url.ip] if url.ip is not None else await self._resolve(url.host, url.port)
        address = check_addresses(addresses, target.policy)[0]
        original = httpx.URL(target.url)
        headers = {"Content-Type": "application/json", "Host": original.netloc.decode("ascii"),
                   SIGNATURE_HEADER: sign(body, secret, int(self._clock())), EVENT_ID_HEADER: event_id}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" and url.ip is None else {}
        response = await self._client(tenant_id).post(
            original.copy_with(host=str(address)), content=body, headers=headers, extensions=extensions)
        status = response.status_code
        if 200 <= status < 300:
            return status
        if is_retryable_status(status):
            raise EndpointUnavailable(f"the endpoint answered {status}")
        raise EndpointRejected(f"the endpoint answered {status}")

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()


TargetOf = Callable[[str, str], EndpointTarget | None]
DeadLetterCall = Callable[[PendingDelivery, BaseException], Awaitable[None]]


class WebhookDispatcher:
    def __init__(self, outbox: EndpointOutbox, client: TenantEndpointClient, target_of: TargetOf,
                 dead_letter: DeadLetterCall, registry: CollectorRegistry, *, attempts: int = 4,
                 backoff_s: float = 0.2, backoff_cap_s: float = 300.0, per_tenant: int = 4,
                 max_in_flight: int = 64, poll_interval_s: float = 1.0, lease_s: float = 60.0,
                 metric: str) -> None:
        self._outbox = outbox
        self._client = client
        self._target_of = target_of
        self._dead_letter = dead_letter
        self.attempts = attempts
        self._backoff_s, self._backoff_cap_s = backoff_s, backoff_cap_s
        self._per_tenant, self._max_in_flight = per_tenant, max_in_flight
        self._poll_s, self._lease_s = poll_interval_s, lease_s
        self._in_flight: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.outcomes = Counter(metric,
                                "Tenant endpoint call attempts by outcome", ["outcome"], registry=registry)

    def wake(self) -> None:
        """New rows were queued (or a slot freed): claim now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        pending = list(self._tasks)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        # Calls cut short give their rows back at once, for this or another replica to make again.
        with contextlib.suppress(Exception):
            await self._outbox.release(pending)

    async def _run(self) -> None:
        while True:
            try:
                await self._claim_and_start()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming tenant endpoint calls failed; trying again at the next poll")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            self._wake.clear()

    async def _claim_and_start(self) -> None:
        room = self._max_in_flight - len(self._tasks)
        if room <= 0:
            return
        free = {t: max(0, self._per_tenant - n) for t, n in self._in_flight.items() if n > 0}
        for p in await self._outbox.claim(free, self._per_tenant, room, self._lease_s):
            self._in_flight[p.tenant_id] = self._in_flight.get(p.tenant_id, 0) + 1
            task = asyncio.create_task(self._attempt(p))
            self._tasks[p.delivery_id] = task
            task.add_done_callback(functools.partial(self._finished, p))

    def _finished(self, p: PendingDelivery, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(p.delivery_id, None)
        left = self._in_flight.get(p.tenant_id, 1) - 1
        if left > 0:
            self._in_flight[p.tenant_id] = left
        else:
            self._in_flight.pop(p.tenant_id, None)
        self._wake.set()

    async def _attempt(self, p: PendingDelivery) -> None:
        try:
            target = self._target_of(p.tenant_id, p.endpoint)
            if target is None:
                raise EndpointRefused(f"the tenant has no endpoint named {p.endpoint!r} in its settings")
            await self._client.deliver(p.tenant_id, target, p.body, p.event_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(p, exc)
            return
        self.outcomes.labels("delivered").inc()
        await self._settle(self._outbox.done(p.delivery_id))

    async def _failed(self, p: PendingDelivery, exc: Exception) -> None:
        reason = _reason(exc)
        if is_retryable(exc) and p.attempt < self.attempts:
            self.outcomes.labels("retry").inc()
            delay = retry_delay_s(p.attempt, self._backoff_s, self._backoff_cap_s)
            await self._settle(self._outbox.retry_later(p.delivery_id, delay, reason))
            return
        self.outcomes.labels("dead_letter").inc()
        log.warning("tenant endpoint call dead-lettered",
                    extra={"tenant_id": p.tenant_id, "endpoint": p.endpoint, "attempts": p.attempt,
                           "error_type": type(exc).__name__})
        try:
            await self._dead_letter(p, exc)
        except Exception:
            log.exception("dead-lettering a tenant endpoint call failed; its lease will run out and it "
                          "is tried again")
            return
        await self._settle(self._outbox.done(p.delivery_id))

    @staticmethod
    async def _settle(write: Awaitable[None]) -> None:
        try:
            await write
        except Exception:
            # The row keeps its lease; when it runs out the call is made again (at least once).
            log.exception("recording a tenant endpoint call's outcome failed")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EmptySecretError | EndpointRefused | EndpointRejected | EndpointUnavailable | SecretError):
        return str(exc)
    return f"{type(exc).__name__} calling the endpoint"
