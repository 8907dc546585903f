"""The egress policy: where a verification check may send a credential."""

from __future__ import annotations

import ipaddress

import hypothesis
import pytest
from hypothesis import strategies

from credbridge.core import egress

DEFAULT = egress.EgressPolicy()
PUBLIC = ipaddress.ip_address("93.184.216.34")


def ip(text: str) -> egress.IPAddress:
    return ipaddress.ip_address(text)


def test_a_type_s_own_host_is_allowed_without_any_allow_list() -> None:
    assert (
        egress.check_destination(
            scheme="https", host="api.openai.com", host_from_field=False, type_name="openAIApi", policy=DEFAULT
        )
        is None
    )


def test_a_host_from_a_field_needs_the_admin_allow_list() -> None:
    refusal = egress.check_destination(
        scheme="https", host="attacker.example", host_from_field=True, type_name="acme", policy=DEFAULT
    )
    assert isinstance(refusal, egress.Refusal)
    assert "attacker.example" in refusal.message
    assert "--verification-allow-host" in refusal.message
    allowed = egress.EgressPolicy(allow_hosts=("*.openai.azure.com", "qdrant.internal"))
    for host in ("team.openai.azure.com", "a.b.openai.azure.com", "QDRANT.internal."):
        assert (
            egress.check_destination(scheme="https", host=host, host_from_field=True, type_name="t", policy=allowed)
            is None
        )
    for host in ("openai.azure.com", "evilopenai.azure.com", "qdrant.internal.evil.com"):
        assert (
            egress.check_destination(scheme="https", host=host, host_from_field=True, type_name="t", policy=allowed)
            is not None
        )


def test_plain_http_is_refused_unless_the_admin_allows_it() -> None:
    refusal = egress.check_destination(
        scheme="http", host="a.test", host_from_field=False, type_name="t", policy=DEFAULT
    )
    assert refusal is not None and "unencrypted" in refusal.message
    allowing = egress.EgressPolicy(allow_plain_http=True)
    assert (
        egress.check_destination(scheme="http", host="a.test", host_from_field=False, type_name="t", policy=allowing)
        is None
    )


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::a00:1", "private"),
        ("2002:c0a8:101::1", "private"),
    ],
)
def test_internal_addresses_are_refused_by_default(address: str, why: str) -> None:
    result = egress.pin_address("host.example", [ip(address)], DEFAULT)
    assert isinstance(result, egress.Refusal)
    assert why in result.message
    assert "host.example" in result.message


def test_a_public_address_is_pinned() -> None:
    assert egress.pin_address("a.example", [PUBLIC], DEFAULT) == egress.Pinned(PUBLIC)


def test_one_internal_address_among_the_answers_refuses_the_whole_name() -> None:
    result = egress.pin_address("rebind.example", [PUBLIC, ip("10.0.0.5")], DEFAULT)
    assert isinstance(result, egress.Refusal)
    assert "10.0.0.5" in result.message


def test_an_allowed_network_opens_private_addresses_but_never_metadata_inside_it() -> None:
    policy = egress.EgressPolicy(allow_networks=egress.parse_networks(["10.0.0.0/8", "169.254.0.0/16", "127.0.0.1/32"]))
    assert egress.pin_address("db", [ip("10.2.3.4")], policy) == egress.Pinned(ip("10.2.3.4"))
    assert egress.pin_address("db", [ip("127.0.0.1")], policy) == egress.Pinned(ip("127.0.0.1"))
    assert isinstance(egress.pin_address("db", [ip("127.0.0.2")], policy), egress.Refusal)
    metadata = egress.pin_address("db", [ip("169.254.169.254")], policy)
    assert isinstance(metadata, egress.Refusal) and "exactly that address" in metadata.message
    exact = egress.EgressPolicy(allow_networks=egress.parse_networks(["169.254.169.254/32"]))
    assert egress.pin_address("md", [ip("169.254.169.254")], exact) == egress.Pinned(ip("169.254.169.254"))


def test_no_address_is_a_refusal() -> None:
    assert isinstance(egress.pin_address("a", [], DEFAULT), egress.Refusal)


def test_malformed_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8'"):
        egress.parse_networks(["10.0.0.1/8"])


@hypothesis.given(strategies.ip_addresses(v=4))
def test_an_ipv4_address_and_its_mapped_ipv6_form_get_the_same_decision(address: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    direct = egress.pin_address("h", [address], DEFAULT)
    via_v6 = egress.pin_address("h", [mapped], DEFAULT)
    assert isinstance(direct, egress.Refusal) == isinstance(via_v6, egress.Refusal)
