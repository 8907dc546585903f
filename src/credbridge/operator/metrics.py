"""Prometheus metrics: reconciles by result, reconcile duration, credentials and shares by state.

Gauges are computed at scrape time from the controller's own view, so they can never drift from
what the operator believes.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Protocol

import prometheus_client
from prometheus_client import core as prometheus_core
from prometheus_client import registry as prometheus_registry

REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)

RECONCILES = prometheus_client.Counter(
    "credbridge_reconciles_total",
    "Reconciles by controller (credential, mirror, share, binding, flowise, ...) and result (written, "
    "unchanged, failed:<reason>, waiting, error, ...).",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = prometheus_client.Histogram(
    "credbridge_reconcile_duration_seconds",
    "Time to reconcile one object.",
    ["kind"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = prometheus_client.Counter(
    "credbridge_api_writes_total",
    "Writes the operator made to the API server, by resource and verb.",
    ["resource", "verb"],
    registry=REGISTRY,
)
WORKLOAD_READS = prometheus_client.Counter(
    "credbridge_workload_reads_total",
    "Reads through the workload endpoint, by namespace (empty before authentication), kind and result.",
    ["namespace", "kind", "result"],
    registry=REGISTRY,
)
WORKLOAD_READ_SECONDS = prometheus_client.Histogram(
    "credbridge_workload_read_duration_seconds",
    "Time to answer one workload read (token review, access review, decryption).",
    ["result"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TOKEN_REVIEWS = prometheus_client.Counter(
    "credbridge_token_reviews_total",
    "Tokens presented to the workload endpoint, by how they were checked: cached, reviewed, shared "
    "(waited for a review of the same token in flight) or error.",
    ["source"],
    registry=REGISTRY,
)
RESYNCS = prometheus_client.Counter(
    "credbridge_verification_passes_total",
    "Periodic passes that read every managed Secret back from the API server and check it (--resync-interval); "
    "not the checks against services (credbridge_verification_checks_total).",
    registry=REGISTRY,
)
VERIFICATION_CHECKS = prometheus_client.Counter(
    "credbridge_verification_checks_total",
    "Checks sent to a service (a connection was attempted), by outcome. Checks that sent nothing "
    "(NotReleased, NotVerifiable, VerificationBlocked before a lookup) are not counted.",
    ["outcome"],
    registry=REGISTRY,
)
VERIFICATION_WAITING = prometheus_client.Gauge(
    "credbridge_verification_waiting",
    "Checks that are due and wait for their turn under the global rate (--verification-rate).",
    registry=REGISTRY,
)
FLOWISE_SYNCS = prometheus_client.Counter(
    "credbridge_flowise_syncs_total",
    "FlowiseTarget syncs by result (written, unchanged, status, or the reason they stopped).",
    ["result"],
    registry=REGISTRY,
)
FLOWISE_SYNC_SECONDS = prometheus_client.Histogram(
    "credbridge_flowise_sync_duration_seconds",
    "Time to sync one FlowiseTarget (including its requests to Flowise).",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FLOWISE_WRITES = prometheus_client.Counter(
    "credbridge_flowise_writes_total",
    "Writes to Flowise servers by action (create, update, revert, recreate, delete).",
    ["action"],
    registry=REGISTRY,
)
REENCRYPTION_PENDING = prometheus_client.Gauge(
    "credbridge_reencryption_pending",
    "Credentials still encrypted with a key other than the active one.",
    registry=REGISTRY,
)

KEYRING_REJECTED = prometheus_client.Gauge(
    "credbridge_keyring_rejected",
    "1 while the keyring Secret as stored is refused (deleted, malformed, or a key's bytes changed) and the "
    "operator runs on the last good keyring; 0 otherwise.",
    registry=REGISTRY,
)


class StateCollector(prometheus_registry.Collector):
    """Exposes credentials by ready/type/key id and shares by state from live snapshots.

    Counts are kept up to date on every change, so neither a change nor a scrape costs time that
    grows with the number of Credentials.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._key_counts: collections.Counter[str] = collections.Counter()
        self._shares: Callable[[], dict[str, int]] = dict

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._credentials.pop(key, None)
        if old is None:
            return
        self._counts[old] -= 1
        if not self._counts[old]:
            del self._counts[old]
        self._key_counts[old[2]] -= 1
        if not self._key_counts[old[2]]:
            del self._key_counts[old[2]]

    def set_credential(self, key: tuple[str, str], ready: str, type_name: str, key_id: str) -> None:
        with self._lock:
            self._drop(key)
            entry = (ready, type_name, key_id)
            self._credentials[key] = entry
            self._counts[entry] += 1
            self._key_counts[key_id] += 1

    def forget_credential(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._drop(key)

    def key_ids(self) -> collections.Counter[str]:
        """Credentials per key id (a copy)."""
        with self._lock:
            return collections.Counter(self._key_counts)

    def not_on_key(self, active_id: str) -> int:
        """How many Credentials report a key other than `active_id` (none reported: not counted)."""
        with self._lock:
            return sum(count for key_id, count in self._key_counts.items() if key_id and key_id != active_id)

    def set_share_source(self, source: Callable[[], dict[str, int]]) -> None:
        self._shares = source

    def collect(self) -> Iterator[prometheus_core.Metric]:
        with self._lock:
            counts = dict(self._counts)
        credentials = prometheus_core.GaugeMetricFamily(
            "credbridge_credentials",
            "Credentials by Ready status, type and key id.",
            labels=["ready", "type", "key_id"],
        )
        for (ready, type_name, key_id), count in sorted(counts.items()):
            credentials.add_metric([ready, type_name, key_id], count)
        yield credentials
        shares = prometheus_core.GaugeMetricFamily(
            "credbridge_share_targets",
            "Share targets by state (Shared, NotAccepted, Failed).",
            labels=["state"],
        )
        for state, count in sorted(self._shares().items()):
            shares.add_metric([state], count)
        yield shares


STATE = StateCollector()
REGISTRY.register(STATE)


class Queue(Protocol):
    """A work queue as the depth metric reads it."""

    name: str

    def depth(self) -> int:
        """Keys waiting for a worker now."""


class QueueCollector(prometheus_registry.Collector):
    """`credbridge_workqueue_depth{queue}`: keys waiting in every work queue, read at scrape time."""

    def __init__(self) -> None:
        self._queues: weakref.WeakSet[Queue] = weakref.WeakSet()
        self._lock = threading.Lock()

    def register(self, queue: Queue) -> None:
        with self._lock:
            self._queues.add(queue)

    def unregister(self, queue: Queue) -> None:
        with self._lock:
            self._queues.discard(queue)

    def collect(self) -> Iterator[prometheus_core.Metric]:
        with self._lock:
            queues = list(self._queues)
        depths: collections.Counter[str] = collections.Counter()
        for queue in queues:
            depths[queue.name] += queue.depth()
        family = prometheus_core.GaugeMetricFamily(
            "credbridge_workqueue_depth", "Keys waiting for a worker, by work queue.", labels=["queue"]
        )
        for name, depth in sorted(depths.items()):
            family.add_metric([name], depth)
        yield family


QUEUES = QueueCollector()
REGISTRY.register(QUEUES)


VERIFICATION_OUTCOMES = (
    "Valid",
    "Invalid",
    "Forbidden",
    "RateLimited",
    "Unreachable",
    "NotVerifiable",
    "VerificationBlocked",
    "NotReleased",
)
"""Values of the `outcome` label (the Verified condition's reasons)."""


class VerificationCollector(prometheus_registry.Collector):
    """Per-Credential gauges in cert-manager's shape, for alerting on expiry and broken credentials.

    `credbridge_credential_expiration_timestamp_seconds`, `credbridge_credential_verified{outcome}`,
    `credbridge_credential_last_verified_timestamp_seconds` and
    `credbridge_credential_last_rotated_timestamp_seconds`, each labelled namespace, name and type
    only (never a value). `verified` carries one series per Credential, for its current outcome,
    with value 1: `credbridge_credential_verified{outcome="Invalid"} == 1` is an alert, and a
    Credential costs one series rather than seven. The verification controller feeds it with
    `set_credential` as it plans, and `forget_credential` on deletion.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[str, str | None, float | None, float | None, float | None]] = {}

    def set_credential(
        self,
        key: tuple[str, str],
        type_name: str,
        *,
        outcome: str | None,
        expires_at: float | None,
        last_verified: float | None,
        last_rotated: float | None,
    ) -> None:
        """Records one Credential (`key` = namespace, name); times are Unix seconds, None when unknown."""
        with self._lock:
            self._entries[key] = (type_name, outcome, expires_at, last_verified, last_rotated)

    def forget_credential(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def collect(self) -> Iterator[prometheus_core.Metric]:
        with self._lock:
            entries = sorted(self._entries.items())
        labels = ["namespace", "name", "type"]
        expiration = prometheus_core.GaugeMetricFamily(
            "credbridge_credential_expiration_timestamp_seconds",
            "When the credential expires (Unix seconds): status.expiresAt.",
            labels=labels,
        )
        verified = prometheus_core.GaugeMetricFamily(
            "credbridge_credential_verified",
            "1 for the outcome of the credential's last check (the Verified condition's reason).",
            labels=[*labels, "outcome"],
        )
        last_verified = prometheus_core.GaugeMetricFamily(
            "credbridge_credential_last_verified_timestamp_seconds",
            "When the credential was last checked (Unix seconds): status.lastVerifiedTime.",
            labels=labels,
        )
        last_rotated = prometheus_core.GaugeMetricFamily(
            "credbridge_credential_last_rotated_timestamp_seconds",
            "When the credential's content last changed (Unix seconds): status.updatedDate.",
            labels=labels,
        )
        for (namespace, name), (type_name, outcome, expires_at, verified_at, rotated_at) in entries:
            values = [namespace, name, type_name]
            if expires_at is not None:
                expiration.add_metric(values, expires_at)
            if outcome is not None:
                verified.add_metric([*values, outcome], 1)
            if verified_at is not None:
                last_verified.add_metric(values, verified_at)
            if rotated_at is not None:
                last_rotated.add_metric(values, rotated_at)
        yield from (expiration, verified, last_verified, last_rotated)


VERIFICATION = VerificationCollector()
REGISTRY.register(VERIFICATION)


def serve(port: int, address: str) -> None:
    """Serve /metrics on `address:port` in a background thread."""
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)


OAUTH2_TOKEN_REQUESTS = prometheus_client.Counter(
    "credbridge_oauth2_token_requests_total",
    "Token requests the OAuth2 refresh sent, by outcome: refreshed, reauthorization_required (invalid_grant), "
    "failed (the provider refused or failed, a timeout, or the egress policy refused before sending).",
    ["outcome"],
    registry=REGISTRY,
)


class OAuth2Collector(prometheus_registry.Collector):
    """Per OAuth2 Credential: when its access token expires, and its `OAuth2Ready` reason.

    `credbridge_oauth2_access_token_expiration_timestamp_seconds` is the access token's expiry, which
    the refresh moves forward every ~45 minutes for Google's one-hour tokens: an alert on it is "the
    refresh stopped working", e.g. `... - time() < 300`. It is kept apart from
    `credbridge_credential_expiration_timestamp_seconds` (the credential's own expiry, days or months
    ahead), whose ExpiringSoon alerts would fire on every access token. `credbridge_oauth2_ready` is 1 for
    the Credential's current reason. Labelled namespace, name and type; never a value.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[str, str, float | None]] = {}

    def set_credential(self, key: tuple[str, str], type_name: str, *, reason: str, expires_at: float | None) -> None:
        with self._lock:
            self._entries[key] = (type_name, reason, expires_at)

    def forget_credential(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def collect(self) -> Iterator[prometheus_core.Metric]:
        with self._lock:
            entries = sorted(self._entries.items())
        labels = ["namespace", "name", "type"]
        expiration = prometheus_core.GaugeMetricFamily(
            "credbridge_oauth2_access_token_expiration_timestamp_seconds",
            "When the OAuth2 Credential's access token expires (Unix seconds): status.oauth2.accessTokenExpiresAt.",
            labels=labels,
        )
        ready = prometheus_core.GaugeMetricFamily(
            "credbridge_oauth2_ready",
            "1 for the OAuth2 Credential's OAuth2Ready reason (TokenValid, ReauthorizationRequired, ...).",
            labels=[*labels, "reason"],
        )
        for (namespace, name), (type_name, reason, expires_at) in entries:
            if expires_at is not None:
                expiration.add_metric([namespace, name, type_name], expires_at)
            ready.add_metric([namespace, name, type_name, reason], 1)
        yield from (expiration, ready)


OAUTH2 = OAuth2Collector()
REGISTRY.register(OAUTH2)
