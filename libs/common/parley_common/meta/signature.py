"""``X-Hub-Signature-256``: HMAC-SHA256 of the raw body bytes, keyed with the Meta app secret.

Always computed on the exact bytes received (Meta signs its escaped-unicode serialisation, so
re-serialised JSON would not match) and compared in constant time. Every candidate secret is
tried without an early exit, so the time taken does not reveal which secret (or app) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

SIGNATURE_PREFIX = "sha256="


def _presented_digest(header: str | None) -> bytes | None:
    if not header:
        return None
    header = header.strip()
    if not header[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX:
        return None
    hex_part = header[len(SIGNATURE_PREFIX) :].strip()
    if len(hex_part) != 64:
        return None
    try:
        return bytes.fromhex(hex_part)
    except ValueError:
        return None


def signature_matches(body: bytes, header: str | None, secrets: Iterable[bytes]) -> bool:
    """True when ``header`` is a valid signature of ``body`` under one of ``secrets``."""
    presented = _presented_digest(header)
    if presented is None:
        return False
    matched = False
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, presented)
    return matched


def find_signing_app(body: bytes, header: str | None, apps: Mapping[str, Iterable[bytes]]) -> str | None:
    """The app whose secret signed ``body`` (for the endpoint without an app id), else None.

    Every secret of every app is checked (constant time each, no early exit).
    """
    presented = _presented_digest(header)
    if presented is None:
        return None
    found: str | None = None
    for app_id, secrets in apps.items():
        for secret in secrets:
            if not secret:
                continue
            expected = hmac.new(secret, body, hashlib.sha256).digest()
            if hmac.compare_digest(expected, presented) and found is None:
                found = app_id
    return found


def sign(body: bytes, secret: bytes) -> str:
    """The header value Meta would send for ``body`` (used by tests, the simulator and benchmarks)."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()
