"""What ingest's HTTP routes share: runtime, settings, metrics, the record writer, the store."""

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
    store: IdempotencyStore | None = field(default=None)
    bodies: BodyBudget = field(default_factory=lambda: BodyBudget(64 * 1024 * 1024))
    rate_windows: RateWindows | None = field(default=None)
    contacts: ContactBook | None = field(default=None)

    @property
    def tenants(self) -> TenantDirectory:
        return self.rt.tenants

    def require_rate_windows(self) -> RateWindows:
        if self.rate_windows is None:
            raise RuntimeError("rate windows are not started")
        return self.rate_windows

    def require_contacts(self) -> ContactBook:
        if self.contacts is None:
            raise RuntimeError("contact book is not started")
        return self.contacts

    def require_store(self) -> IdempotencyStore:
        if self.store is None:
            raise RuntimeError("idempotency store is not started")
        return self.store


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
