"""Where a verification check may send a credential: the egress policy, as a pure decision.

A check sends a live secret to a host. If that host comes from a field a tenant can edit
(a base URL, a database host), the check is a way to mail the key to anyone — or to make the
operator read the cloud metadata service (SSRF). So the policy is on by default:

- A host the type writes literally (the vendor's host, e.g. `api.openai.com`) is allowed.
  A host given by a field must match the admin's allow-list (`--verification-allow-host`, chart value
  `verification.allowHosts`): exact names, or `*.example.com` for any name below it.
- Plain `http://` is refused unless the admin allows it (the key would cross the network in clear).
- The name is resolved once, by the caller, and every address it resolved to is judged here;
  the connection then goes to the one address chosen (pinned), so a second lookup cannot swap in
  another (DNS rebinding). One forbidden address refuses the check.
- Loopback, link-local, private (RFC 1918, IPv6 unique-local), carrier-grade NAT, unspecified,
  multicast and reserved addresses are refused unless the admin allows a network that contains
  them (`--verification-allow-network`). IPv4 addresses carried in IPv6 (`::ffff:a.b.c.d`, NAT64
  `64:ff9b::/96`, 6to4 `2002::/16`) are judged as the IPv4 address they carry.
- Cloud metadata addresses (169.254.169.254, fd00:ec2::254, 100.100.100.200, ...) are refused even
  inside an allowed network: only an allowed network that is exactly that one address lets a
  check reach them.

A refusal says why, naming the host, the address and the setting that would allow it; the caller
then sends nothing.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle (IMDS)
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS / Time Sync neighbour
        "169.254.169.123",  # AWS Time Sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS DNS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
"""Cloud metadata endpoints: reachable only when allowed one by one, never through a wider network."""

_FORBIDDEN_RANGES: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), why)
    for network, why in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a carrier-grade NAT address (RFC 6598)"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("fe80::/10", "a link-local address"),
        ("fc00::/7", "a private (unique-local) address"),
        ("ff00::/8", "a multicast address"),
        ("100::/64", "a discard-only address"),
    )
)


@dataclasses.dataclass(frozen=True)
class EgressPolicy:
    """What the admin allows checks to reach, beyond the hosts types write literally."""

    allow_hosts: tuple[str, ...] = ()
    """Host names a field may point a check at: exact (`qdrant.internal`) or `*.example.com`."""
    allow_networks: tuple[IPNetwork, ...] = ()
    """Networks a check may connect into although they are private, loopback or link-local."""
    allow_plain_http: bool = False
    """Whether `http://` checks may run (the credential then crosses the network unencrypted)."""


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a check may not run; `message` names the host or address and the setting that would allow it."""

    message: str


@dataclasses.dataclass(frozen=True)
class Pinned:
    """The one address the check connects to, chosen among those the host name resolved to."""

    address: IPAddress


def parse_networks(texts: collections.abc.Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parses CIDR strings (`10.1.0.0/16`, `127.0.0.1/32`, `fd00::/8`); raises ValueError naming a bad one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=True))
        except ValueError:
            raise ValueError(
                f"verification network {text!r} is not a network in CIDR notation with its host bits zero, "
                "e.g. 10.1.0.0/16 or 127.0.0.1/32"
            ) from None
    return tuple(networks)


def normalize_host(host: str) -> str:
    """A host name as compared here: lowercase, without a trailing dot or IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def host_matches(host: str, pattern: str) -> bool:
    """Tells whether `host` matches an allow-list entry: the same name, or any name below `*.suffix`."""
    host, pattern = normalize_host(host), normalize_host(pattern)
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def check_destination(
    *,
    scheme: str,
    host: str,
    host_from_field: bool,
    type_name: str,
    policy: EgressPolicy,
) -> Refusal | None:
    """Decides, before any lookup, whether a check may go to `host` over `scheme`.

    `host_from_field` is True when a Credential's field chose the host (a base URL, a database
    host), False when the type writes it literally. Returns None when allowed.
    """
    name = normalize_host(host)
    if scheme == "http" and not policy.allow_plain_http:
        return Refusal(
            f"the check of type {type_name} would send the credential to {name} over plain http://, unencrypted: "
            "use https://, or allow plain HTTP with --verification-allow-plain-http=on "
            "(chart value verification.allowPlainHttp)"
        )
    if host_from_field and not any(host_matches(name, pattern) for pattern in policy.allow_hosts):
        return Refusal(
            f"the check of type {type_name} would send the credential to {name}, a host given by the Credential's "
            "fields that is not on the verification allow-list: an admin may add it with --verification-allow-host "
            "(chart value verification.allowHosts) if that host is trusted with this credential"
        )
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64 well-known prefix, 6to4), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def address_refusal(address: IPAddress, policy: EgressPolicy, *, host: str) -> Refusal | None:
    """Decides whether a check may connect to `address` (one that `host` resolved to); None when allowed."""
    judged: IPAddress = _embedded_ipv4(address) or address
    shown = str(address) if judged == address else f"{address} (which carries {judged})"
    if judged in METADATA_ADDRESSES or address in METADATA_ADDRESSES:
        exact = [network for network in policy.allow_networks if network.num_addresses == 1]
        if any(judged in network or address in network for network in exact):
            return None
        return Refusal(
            f"{host} resolves to {shown}, a cloud metadata address: checks never go there unless an admin allows "
            f"exactly that address with --verification-allow-network {judged}/{judged.max_prefixlen}"
        )
    if any(judged in network or address in network for network in policy.allow_networks):
        return None
    for network, why in _FORBIDDEN_RANGES:
        if judged.version == network.version and judged in network:
            return Refusal(
                f"{host} resolves to {shown}, {why}: checks do not go there unless an admin allows the network with "
                "--verification-allow-network (chart value verification.allowNetworks)"
            )
    return None


def pin_address(host: str, addresses: collections.abc.Sequence[IPAddress], policy: EgressPolicy) -> Pinned | Refusal:
    """Chooses the address to connect to among those `host` resolved to, or refuses.

    Every address is judged, and one forbidden address refuses the check: a name that can
    resolve to a private address is not trusted with a credential just because this lookup
    happened to return a public one first. The first address wins; the caller connects to it
    and to nothing else.
    """
    name = normalize_host(host)
    if not addresses:
        return Refusal(f"{name} resolved to no address")
    for address in addresses:
        refusal = address_refusal(address, policy, host=name)
        if refusal is not None:
            return refusal
    return Pinned(addresses[0])


@dataclasses.dataclass(frozen=True)
class StaticHosts:
    """Answers an admin gives instead of DNS (`--verification-resolve`), like curl's --resolve/--connect-to.

    For split-horizon names the operator's resolver does not know, an egress proxy or sidecar on
    a fixed address, and tests that stand in for a vendor. The addresses are judged by the egress
    policy exactly like DNS answers: a static answer is not an allowance.
    """

    names: collections.abc.Mapping[str, tuple[IPAddress, ...]] = dataclasses.field(default_factory=dict)
    """Host name -> the addresses a lookup answers, in order."""
    ports: collections.abc.Mapping[tuple[IPAddress, int], int] = dataclasses.field(default_factory=dict)
    """(address, port a check asks for) -> the port connected to instead."""


def _address_and_port(text: str, entry: str) -> tuple[IPAddress, int | None]:
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        address_text, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(
                    f"--verification-resolve {entry!r}: write an IPv6 address with a port as [ADDRESS]:PORT"
                )
            port = int(rest[1:])
    elif text.count(":") == 1:
        address_text, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"--verification-resolve {entry!r}: the port after ':' must be a number")
        port = int(port_text)
    else:
        address_text = text
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise ValueError(
            f"--verification-resolve {entry!r}: {address_text!r} is not an IP address (write NAME=ADDRESS or "
            "NAME:PORT=ADDRESS:PORT)"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"--verification-resolve {entry!r}: ports are between 1 and 65535")
    return address, port


def parse_static_hosts(entries: collections.abc.Iterable[str]) -> StaticHosts:
    """Parses `NAME=ADDRESS` and `NAME:PORT=ADDRESS:PORT` entries (repeat a name for several addresses);
    raises ValueError naming a malformed one."""
    names: dict[str, list[IPAddress]] = {}
    ports: dict[tuple[IPAddress, int], int] = {}
    for entry in entries:
        name_text, equals, address_text = entry.partition("=")
        if not equals or not name_text.strip() or not address_text.strip():
            raise ValueError(f"--verification-resolve {entry!r}: write NAME=ADDRESS or NAME:PORT=ADDRESS:PORT")
        name_text = name_text.strip()
        asked: int | None = None
        if ":" in name_text:
            name_text, _, asked_text = name_text.rpartition(":")
            if not asked_text.isdigit() or not 0 < int(asked_text) < 65536:
                raise ValueError(f"--verification-resolve {entry!r}: the port after the name must be 1 to 65535")
            asked = int(asked_text)
        address, port = _address_and_port(address_text, entry)
        if (asked is None) != (port is None):
            raise ValueError(
                f"--verification-resolve {entry!r}: give a port on both sides (NAME:PORT=ADDRESS:PORT) or on neither"
            )
        found = names.setdefault(normalize_host(name_text), [])
        if address not in found:
            found.append(address)
        if asked is not None and port is not None:
            if ports.get((address, asked), port) != port:
                raise ValueError(
                    f"--verification-resolve {entry!r}: {address} port {asked} is already sent to port "
                    f"{ports[(address, asked)]} by another entry"
                )
            ports[(address, asked)] = port
    return StaticHosts({name: tuple(found) for name, found in names.items()}, ports)
