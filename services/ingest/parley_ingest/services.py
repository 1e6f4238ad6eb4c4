"""What ingest's HTTP routes share, built whole by ``app.create_app``: runtime, settings, metrics,
the record writer and the stores (which use the runtime's pool, opened when the service starts)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.trace import Tracer
from parley_common.runtime import Runtime
from parley_common.tenancy.directory import TenantDirectory

from parley_ingest.contacts import ContactBook
from parley_ingest.metrics import IngestMetrics
from parley_ingest.publishing import RecordWriter
from parley_ingest.settings import IngestSettings
from parley_ingest.store import IdempotencyStore, RateWindows


class BodyBudget:
    """Bytes of request bodies held in memory at once, across all requests of the process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes if the budget allows (then the caller must ``give`` them back)."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


@dataclass
class IngestServices:
    rt: Runtime
    settings: IngestSettings
    metrics: IngestMetrics
    writer: RecordWriter
    tracer: Tracer
    store: IdempotencyStore
    rate_windows: RateWindows
    contacts: ContactBook
    bodies: BodyBudget = field(default_factory=lambda: BodyBudget(64 * 1024 * 1024))

    @property
    def tenants(self) -> TenantDirectory:
        return self.rt.tenants


@dataclass(frozen=True)
class DirectoryTenants:
    """Tenant resolution for a webhook verified with ``app_id``'s secret
    (``TenantDirectory.tenant_verified_by_app``): a webhook signed by one app never speaks for
    another app's tenants, nor for a number nobody registered. Its events get no tenant and are
    dead-lettered instead of published (``domain.records``; ADR 0100)."""

    directory: TenantDirectory
    app_id: str

    def tenant_for(self, phone_number_id: str | None, waba_id: str | None) -> str | None:
        return self.directory.tenant_verified_by_app(self.app_id, phone_number_id, waba_id)
