"""Name resolution and connections for checks, as one replaceable value.

Resolving and connecting are the two moments a check touches the network, and the egress
policy sits between them: a name is resolved exactly once, the addresses are judged, and the
connection goes to the pinned address only. Keeping both behind `Network` lets tests play DNS
rebinding (a resolver that answers differently the second time) and route a vendor's public
address to a local stand-in, while the production path is the plain socket calls below.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import ipaddress
import socket
import ssl

from credbridge.core import egress

Resolver = collections.abc.Callable[[str, int], collections.abc.Sequence[egress.IPAddress]]
"""(host, port) -> addresses, in the order to try them."""
Connector = collections.abc.Callable[[egress.IPAddress, int, float], socket.socket]
"""(address, port, timeout in seconds) -> a connected TCP socket."""


def resolve_with_system(host: str, port: int) -> list[egress.IPAddress]:
    """Every address `host` resolves to through the system resolver, first seen first, once each."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    found: list[egress.IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def connect_with_system(address: egress.IPAddress, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly `address`:`port` (no lookup happens here)."""
    return socket.create_connection((str(address), port), timeout=timeout)


@dataclasses.dataclass(frozen=True)
class Network:
    """How checks resolve names and open connections."""

    resolve: Resolver = resolve_with_system
    connect: Connector = connect_with_system


SYSTEM_NETWORK = Network()
"""The machine's resolver and sockets."""


def with_static_hosts(hosts: egress.StaticHosts, base: Network = SYSTEM_NETWORK) -> Network:
    """`base`, answering the names of `hosts` from its table and connecting to the ports it maps.

    The prober still judges every answer with the egress policy and pins the one it connects to.
    """
    if not hosts.names and not hosts.ports:
        return base

    def resolve(host: str, port: int) -> collections.abc.Sequence[egress.IPAddress]:
        found = hosts.names.get(egress.normalize_host(host))
        return list(found) if found is not None else base.resolve(host, port)

    def connect(address: egress.IPAddress, port: int, timeout: float) -> socket.socket:
        return base.connect(address, hosts.ports.get((address, port), port), timeout)

    return Network(resolve=resolve, connect=connect)


def system_tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies certificates and host names (system trust store, or `ca_file`)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
