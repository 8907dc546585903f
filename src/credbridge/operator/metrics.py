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
    "Periodic passes that verify every managed Secret as stored in the API server.",
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


def serve(port: int, address: str) -> None:
    """Serve /metrics on `address:port` in a background thread."""
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
