"""The only code that talks to the services credentials belong to (vendors' APIs, databases).

A verification check sends a live credential to a host, so this package is small and strict,
as `credbridge.flowise` is for Flowise: it applies the egress policy (`core.egress`) before
anything leaves, resolves a name once and connects to the pinned address, verifies TLS against
the original host name, follows no redirect, bounds every check in time and in bytes read, and
never stores, logs or returns what the service answered beyond a status. Values reach it only
inside `core.redaction` types.

Entry point: `probe(request, policy, limits=..., network=..., tls=...)` → `verification.ProbeResult`.
It blocks (sockets, database drivers): the operator calls it from a worker thread.

Database drivers, all pure Python from PyPI: pg8000 (PostgreSQL), PyMySQL (MySQL, MariaDB),
redis (Redis), pymongo (MongoDB).
"""

from credbridge.probing.network import SYSTEM_NETWORK, Network, system_tls_context
from credbridge.probing.prober import ProbeLimits, probe

__all__ = ["SYSTEM_NETWORK", "Network", "ProbeLimits", "probe", "system_tls_context"]
