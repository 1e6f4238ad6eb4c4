"""Rules for Parley's calls to a tenant's own endpoints (pure: no network, no clock of its own).

Two services call tenants (ADR 0105): the router (routed messages) and billing (order events and
ad conversions, ADR 0113); both sign, check addresses and read endpoint settings by these rules.

- **Signature** (as Stripe and Svix sign theirs): ``X-Parley-Signature: t=<unix seconds>,v1=<hex>``
  where ``v1`` is HMAC-SHA256, keyed with the endpoint's secret, of ``"<t>." + body``. The tenant
  recomputes it over the exact body bytes, compares in constant time and refuses a ``t`` more than
  five minutes from its own clock, so a captured request cannot be replayed later. Every attempt
  is signed afresh. An empty secret is refused: it would sign with a key everyone knows.
- **Where a call may go**: ``https`` only, no credentials in the URL, and every address the host
  name resolves to must be a public unicast address: no loopback, private, link-local, shared
  (CGNAT), multicast, reserved or unspecified targets, including IPv4 addresses wrapped in IPv6.
  A tenant's settings may allow plain ``http`` or private addresses (an operator's decision, for
  endpoints inside the operator's own network); the check is on resolved addresses, never on
  the spelling of the URL.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

SIGNATURE_HEADER = "X-Parley-Signature"
EVENT_ID_HEADER = "X-Parley-Event-Id"
SIGNATURE_TOLERANCE_S = 300

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EmptySecretError(ValueError):
    """The endpoint's secret is empty: nothing is signed or sent with it."""


class SignatureError(ValueError):
    """A signature header that does not verify (wrong key or body, too old, malformed)."""


class EndpointRefused(ValueError):
    """An endpoint URL or address the router does not call."""


@dataclass(frozen=True)
class EndpointPolicy:
    allow_http: bool = False
    allow_private_addresses: bool = False


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Parley-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    if not secret.strip():
        raise EmptySecretError("the endpoint's secret is empty; refusing to sign with an empty key")
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(header: str, body: bytes, secrets: Iterable[str], now: int,
           tolerance_s: int = SIGNATURE_TOLERANCE_S) -> int:
    """What a tenant's endpoint does: check ``header`` against ``body``; returns the signed time.

    Any ``v1`` may match any of ``secrets`` (several while a secret is being rotated)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("the signature header needs t=<unix seconds> and v1=<hex>")
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"the signature's timestamp is more than {tolerance_s} s from now")
    keys = [s for s in secrets if s]
    if not keys:
        raise EmptySecretError("no non-empty secret to verify with")
    expected = [_mac(s, timestamp, body) for s in keys]
    if not any(hmac.compare_digest(e, given) for e in expected for given in signatures):
        raise SignatureError("no v1 signature matches the body")
    return timestamp


@dataclass(frozen=True)
class EndpointURL:
    scheme: str
    host: str  # a name (IDNA, lower case) or an IP literal without brackets
    port: int
    ip: IPAddress | None  # set when the host is an IP literal


def parse_endpoint_url(url: str, policy: EndpointPolicy) -> EndpointURL:
    """Parse and check the parts of ``url`` that need no resolution."""
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise EndpointRefused("the endpoint URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointRefused(f"the endpoint URL does not parse: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise EndpointRefused("tenant endpoints must be https:// URLs")
    if scheme == "http" and not policy.allow_http:
        raise EndpointRefused("tenant endpoints must be https:// (plain http needs the tenant setting "
                              "endpoint_policy.allow_http)")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("credentials in an endpoint URL are not accepted; the call is signed instead")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointRefused("the endpoint URL has no host")
    ip: IPAddress | None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise EndpointRefused("the endpoint's host name is not a valid domain name") from exc
    if ip is not None:
        check_address(ip, policy)
    return EndpointURL(scheme, host, port or (443 if scheme == "https" else 80), ip)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def address_kind(ip: IPAddress) -> str | None:
    """What makes ``ip`` a non-public target (``"loopback"``, ``"private"``, …), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            kind = address_kind(inner)
            return f"{kind} (IPv4 inside IPv6)" if kind else None
    checks: Sequence[tuple[str, bool]] = (
        ("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast), ("shared (carrier-grade NAT)", ip in _SHARED),
        ("private", ip.is_private), ("reserved", ip.is_reserved), ("non-global", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def check_address(ip: IPAddress, policy: EndpointPolicy) -> None:
    kind = address_kind(ip)
    if kind is not None and not policy.allow_private_addresses:
        raise EndpointRefused(f"the endpoint resolves to a {kind} address ({ip}); tenant endpoints must be "
                              "public unless the tenant setting endpoint_policy.allow_private_addresses is set")


def check_addresses(addresses: Iterable[IPAddress], policy: EndpointPolicy) -> list[IPAddress]:
    """Every resolved address must pass: one bad answer refuses the host (DNS may rotate)."""
    found = list(dict.fromkeys(addresses))
    if not found:
        raise EndpointRefused("the endpoint's host name does not resolve")
    for ip in found:
        check_address(ip, policy)
    return found


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def retry_delay_s(attempt: int, base_s: float, cap_s: float = 300.0) -> float:
    """Backoff before attempt ``attempt + 1`` (attempt counts from 1): base, 2·base, 4·base … capped."""
    return float(min(cap_s, base_s * (2 ** max(0, min(attempt - 1, 30)))))


# --- how a tenant's settings name an endpoint (router.endpoints, orders.endpoint, ...) ------


class Endpoint(BaseModel):
    """A tenant endpoint in the tenant's settings: its URL and a reference to its signing secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret_ref: str

    @field_validator("secret_ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        kind, _, where = v.partition(":")
        if kind not in ("env", "file"):
            raise ValueError("secrets are referenced as 'env:NAME' or 'file:/path', never inline")
        if not where.strip():
            raise ValueError(f"secret reference {v!r} names no variable or file")
        return v


class EndpointPolicySpec(BaseModel):
    """Where a tenant's endpoints may be: the operator's decision, never the tenant's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_http: bool = False
    allow_private_addresses: bool = False

    def policy(self) -> EndpointPolicy:
        return EndpointPolicy(self.allow_http, self.allow_private_addresses)
