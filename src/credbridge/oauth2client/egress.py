"""The egress policy in front of the operator's token requests: where a client secret and a refresh token may go.

A token request carries the client secret and the refresh token. When the token URL comes from a
field a tenant can edit (a custom type's `accessTokenUrl`), the refresh would mail both to any
host, or make the operator talk to the cloud metadata service. So the operator's requests follow
the same egress rules as verification checks (`core.egress`, which decides; this module applies):

- the host a CredentialType declares itself (its `accessTokenUrl` default, `oauth2.googleapis.com`)
  is allowed; a host chosen by a Credential's field must be on the admin's allow-list
  (`--oauth2-allow-host`);
- the name is resolved once, every address it resolved to is judged (loopback, private,
  link-local and metadata addresses are refused unless `--oauth2-allow-network` allows them), and
  the connection goes to the one address chosen, so a second lookup cannot swap in another;
- TLS is then verified against the URL's host name, as without the policy.

The CLI (`credbridge oauth2 authorize`) runs on a person's machine, on their network, and sends no
request on anyone else's behalf: it does not use this.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import socket
import urllib.parse

from credbridge.core import egress
from credbridge.oauth2client import transport

Resolver = collections.abc.Callable[[str, int], collections.abc.Sequence[egress.IPAddress]]
"""(host, port) → the addresses it resolves to."""
Connector = collections.abc.Callable[[egress.IPAddress, int, float], socket.socket]
"""(address, port, timeout) → a TCP connection to exactly that address."""


@dataclasses.dataclass(frozen=True)
class Egress:
    """The policy, and how names are resolved and connections opened (the system's, or a test network)."""

    policy: egress.EgressPolicy
    resolve: Resolver
    connect: Connector

    def host_refusal(self, url: str, *, host_declared: bool) -> str | None:
        """Why no request may go to `url` at all (before any lookup), or None."""
        parts = urllib.parse.urlsplit(url)
        host = egress.normalize_host(parts.hostname or "")
        if parts.scheme == "http" and not self.policy.allow_plain_http:
            return (
                "the token endpoint is plain http://: the client secret and tokens would cross the network "
                "unencrypted; use https:// (or allow plain HTTP with --oauth2-allow-plain-http=on, for development)"
            )
        if not host_declared and not any(egress.host_matches(host, pattern) for pattern in self.policy.allow_hosts):
            return (
                "this token endpoint comes from the Credential's accessTokenUrl field, and the operator sends "
                "client secrets and refresh tokens only to the host a CredentialType declares or to hosts on the "
                "admin's allow-list: an admin may add it with --oauth2-allow-host (chart value oauth2.allowHosts) if "
                "that host is trusted with this Credential"
            )
        return None

    def connector(self) -> transport.Connect:
        """A `transport.Connect` that resolves once, judges every address and connects to the one it pins."""

        def connect(host: str, port: int, timeout: float) -> socket.socket:
            try:
                addresses = list(self.resolve(host, port))
            except OSError as error:
                raise transport.TransportError(
                    f"the name could not be resolved ({error.strerror or type(error).__name__})"
                ) from None
            pinned = egress.pin_address(host, addresses, self.policy)
            if isinstance(pinned, egress.Refusal):
                refused = next(
                    (address for address in addresses if egress.address_refusal(address, self.policy, host=host)),
                    None,
                )
                shown = f" to {refused}" if refused is not None else " to no address"
                raise transport.TransportError(
                    f"the token endpoint resolves{shown}, which the operator's egress policy refuses "
                    "(loopback, private, link-local, reserved and cloud metadata addresses are refused): an admin "
                    "may allow that network with --oauth2-allow-network (chart value oauth2.allowNetworks)",
                    transient=False,
                )
            return self.connect(pinned.address, port, timeout)

        return connect
