"""The tenant-binding rule as pure functions (docs/adr/0100-tenant-binding.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from parley_common.contracts import InboundMessage, believable_time
from parley_common.tenancy.directory import TenantDirectory, UnboundEvent
from parley_common.tenancy.models import MetaApp, PhoneNumber, Tenant


def directory() -> TenantDirectory:
    d = TenantDirectory()
    for app in ("app-a", "app-b"):
        d.apps[app] = MetaApp(app, (b"s",), "tok", None, None, "v24.0")
    d.tenants["shop-a"] = Tenant("shop-a", "A", "app-a", "ID", "Asia/Jakarta", None, {}, ("waba-a",), ("pn-a",))
    d.tenants["shop-b"] = Tenant("shop-b", "B", "app-b", "ID", "Asia/Jakarta", None, {}, ("waba-b",), ("pn-b",))
    d.numbers["pn-a"] = PhoneNumber("pn-a", "shop-a", "waba-a", "1", 80)
    d.numbers["pn-b"] = PhoneNumber("pn-b", "shop-b", "waba-b", "2", 80)
    d.waba_to_tenant.update({"waba-a": "shop-a", "waba-b": "shop-b"})
    return d


def test_a_webhook_speaks_only_for_tenants_of_the_app_that_signed_it() -> None:
    d = directory()
    assert d.tenant_verified_by_app("app-a", "pn-a", "waba-a") == "shop-a"
    assert d.tenant_verified_by_app("app-b", "pn-a", "waba-a") is None  # another app's number
    assert d.tenant_verified_by_app("app-b", "pn-a", "waba-b") is None  # its own WABA claimed: still no
    assert d.tenant_verified_by_app("app-b", None, "waba-a") is None  # another app's WABA
    assert d.tenant_verified_by_app("app-a", None, "waba-a") == "shop-a"  # a WABA-only change


def test_a_number_nobody_registered_is_no_tenants_even_under_a_registered_waba() -> None:
    assert directory().tenant_verified_by_app("app-a", "pn-new", "waba-a") is None


def test_resolve_returns_the_events_own_tenant_and_never_the_numbers_owner() -> None:
    d = directory()
    assert d.resolve("shop-a", "pn-a").tenant_id == "shop-a"
    assert d.resolve("shop-a", "waba-a").tenant_id == "shop-a"  # an account event keyed by its WABA
    for tenant_id, number in ((None, "pn-a"), ("", "pn-a"), ("shop-b", "pn-a"), ("shop-a", "pn-b"),
                              ("nobody", "pn-a"), ("shop-a", "pn-new"), ("shop-b", "waba-a")):
        with pytest.raises(UnboundEvent):
            d.resolve(tenant_id, number)
        assert d.bound_tenant(tenant_id, number) is None


def test_a_timestamp_is_never_believed_later_than_its_receipt() -> None:
    received = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert believable_time(datetime(2100, 1, 1, tzinfo=UTC), received) == received
    earlier = received - timedelta(seconds=3)
    assert believable_time(earlier, received) == earlier
    msg = InboundMessage(event_id="w", wamid="w", phone_number_id="pn-a", type="text",
                         occurred_at=datetime(2100, 1, 1, tzinfo=UTC), received_at=received)
    assert msg.event_time == received and msg.occurred_at.year == 2100  # kept as sent, not believed
