"""Tenants as every service sees them (read-only), with secrets resolved from env or files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SecretError(RuntimeError):
    pass


def resolve_secret(ref: str | None) -> str | None:
    """``env:NAME`` reads an environment variable, ``file:/path`` a mounted file."""
    if ref is None:
        return None
    kind, _, where = ref.partition(":")
    if kind == "env":
        value = os.environ.get(where)
        if value is None:
            raise SecretError(f"secret reference {ref!r}: environment variable {where} is not set")
        return value
    if kind == "file":
        try:
            return Path(where).read_text().strip()
        except OSError as exc:
            raise SecretError(f"secret reference {ref!r}: {exc.strerror}") from exc
    raise SecretError(f"secret reference {ref!r} must start with 'env:' or 'file:'")


@dataclass(frozen=True)
class MetaApp:
    app_id: str
    app_secrets: tuple[bytes, ...]  # one or two active, for rotation
    access_token: str | None
    verify_token: str | None
    graph_api_base: str | None
    graph_api_version: str


@dataclass(frozen=True)
class PhoneNumber:
    phone_number_id: str
    tenant_id: str
    waba_id: str
    display_phone_number: str
    throughput_mps: int


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    app_id: str
    business_country: str
    time_zone: str
    messaging_limit: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    waba_ids: tuple[str, ...] = ()
    phone_number_ids: tuple[str, ...] = ()
