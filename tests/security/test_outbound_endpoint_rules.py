"""The rules of outbound calls to tenants, as an attacker would probe them (pure, no network)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest
from parley_common.endpoint_calls import EndpointTarget, TenantEndpointClient
from parley_common.outbound import (
    EmptySecretError,
    EndpointPolicy,
    EndpointRefused,
    SignatureError,
    check_addresses,
    parse_endpoint_url,
    retry_delay_s,
    sign,
    verify,
)
from parley_router.domain.config import TenantRouting
from pydantic import ValidationError

BODY = b'{"wamid":"wamid.X","intent":"refund"}'
SECRET = "whsec-0123456789abcdef"
STRICT = EndpointPolicy()


def test_signature_binds_the_timestamp_to_the_body() -> None:
    header = sign(BODY, SECRET, 1_800_000_000)
    assert header == ("t=1800000000,v1="
                      + hmac.new(SECRET.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest())
    assert verify(header, BODY, [SECRET], now=1_800_000_100) == 1_800_000_000


def test_a_captured_request_replayed_after_the_window_is_refused() -> None:
    header = sign(BODY, SECRET, 1_800_000_000)
    with pytest.raises(SignatureError, match="timestamp"):
        verify(header, BODY, [SECRET], now=1_800_000_000 + 301)


def test_a_replay_with_a_fresh_timestamp_but_the_old_mac_is_refused() -> None:
    old = sign(BODY, SECRET, 1_800_000_000)
    forged = old.replace("t=1800000000", "t=1800009999")
    with pytest.raises(SignatureError, match="no v1"):
        verify(forged, BODY, [SECRET], now=1_800_009_999)


def test_a_tampered_body_is_refused() -> None:
    header = sign(BODY, SECRET, 1_800_000_000)
    with pytest.raises(SignatureError):
        verify(header, BODY.replace(b"refund", b"buy_ticket"), [SECRET], now=1_800_000_000)


def test_a_signature_under_a_rotated_secret_verifies_with_either_secret() -> None:
    header = sign(BODY, "new-secret-0123456789", 1_800_000_000)
    assert verify(header, BODY, [SECRET, "new-secret-0123456789"], now=1_800_000_000)


@pytest.mark.parametrize("secret", ["", "   "])
def test_an_empty_secret_never_signs(secret: str) -> None:
    with pytest.raises(EmptySecretError):
        sign(BODY, secret, 1_800_000_000)


@pytest.mark.parametrize("url, words", [
    ("http://localhost.evil.example/hook", "https"),      # plain http, whatever the name
    ("https://127.0.0.1/hook", "loopback"),
    ("https://127.1.2.3:8443/hook", "loopback"),
    ("https://[::1]/hook", "loopback"),
    ("https://10.0.0.7/hook", "private"),
    ("https://192.168.1.1/hook", "private"),
    ("https://172.16.0.1/hook", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),  # cloud metadata service
    ("https://100.64.0.1/hook", "shared"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://[::ffff:10.0.0.1]/hook", "IPv4 inside IPv6"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://[fc00::1]/hook", "private"),
    ("https://user:pass@crm.example.com/hook", "credentials"),
    ("ftp://crm.example.com/hook", "https"),
    ("https:///hook", "no host"),
    ("https://crm.example.com:99999/hook", "does not parse"),
])
def test_non_public_or_malformed_endpoints_are_refused_at_config_time(url: str, words: str) -> None:
    with pytest.raises(EndpointRefused, match=words):
        parse_endpoint_url(url, STRICT)
    with pytest.raises(ValidationError, match=words):
        TenantRouting.model_validate({"endpoints": {"crm": {"url": url, "secret_ref": "env:CRM"}}})


def test_a_public_https_endpoint_is_accepted() -> None:
    parsed = parse_endpoint_url("https://CRM.Example.com/hook?x=1", STRICT)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.ip) == ("https", "crm.example.com", 443, None)
    assert parse_endpoint_url("https://8.8.8.8:8443/", STRICT).ip == ipaddress.ip_address("8.8.8.8")


def test_the_tenant_setting_allows_internal_endpoints_only_when_the_operator_sets_it() -> None:
    cfg = TenantRouting.model_validate({
        "endpoint_policy": {"allow_http": True, "allow_private_addresses": True},
        "endpoints": {"crm": {"url": "http://10.0.0.7:8080/hook", "secret_ref": "env:CRM"}}})
    assert cfg.endpoint_policy.policy() == EndpointPolicy(True, True)
    with pytest.raises(ValidationError, match="private"):
        TenantRouting.model_validate({
            "endpoint_policy": {"allow_http": True},
            "endpoints": {"crm": {"url": "http://10.0.0.7:8080/hook", "secret_ref": "env:CRM"}}})


@pytest.mark.parametrize("ref", ["env:", "file:", "env:  "])
def test_a_secret_reference_naming_nothing_is_refused_at_config_time(ref: str) -> None:
    with pytest.raises(ValidationError, match="names no variable"):
        TenantRouting.model_validate({"endpoints": {"crm": {"url": "https://crm.example.com/", "secret_ref": ref}}})


def test_one_private_answer_among_public_ones_refuses_the_host() -> None:
    """DNS may hand out several addresses and rotate them: all of them must be public."""
    ips = [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(EndpointRefused, match="loopback"):
        check_addresses(ips, STRICT)
    with pytest.raises(EndpointRefused, match="does not resolve"):
        check_addresses([], STRICT)


async def test_a_name_resolving_to_loopback_is_refused_before_any_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost.evil.example`` passes any check on the spelling; its DNS answer is 127.0.0.1."""
    asked: list[tuple[str, int]] = []

    async def evil_dns(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        asked.append((host, port))
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setenv("SEC_RULES_SECRET", SECRET)
    client = TenantEndpointClient(resolver=evil_dns)
    target = EndpointTarget("https://localhost.evil.example/hook", "env:SEC_RULES_SECRET", STRICT)
    with pytest.raises(EndpointRefused, match="loopback"):
        await client.deliver("t1", target, BODY, "wamid.X")
    assert asked == [("localhost.evil.example", 443)]
    await client.aclose()


async def test_an_empty_secret_is_refused_at_send_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEC_RULES_EMPTY", "")
    client = TenantEndpointClient()
    target = EndpointTarget("https://8.8.8.8/hook", "env:SEC_RULES_EMPTY", STRICT)
    with pytest.raises(EmptySecretError, match="empty"):
        await client.deliver("t1", target, BODY, "wamid.X")
    await client.aclose()


def test_retries_back_off_exponentially_and_are_capped() -> None:
    assert [retry_delay_s(a, 0.5, 10) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
