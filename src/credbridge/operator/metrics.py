"""Prometheus metrics: reconciles by result, reconcile duration, credentials and shares by state.

Gauges are computed at scrape time from the controller's own view, so they can never drift from
what the operator believes.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client import core as prometheus_core
from prometheus_client import registry as prometheus_registry

REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)

RECONCILES = prometheus_client.Counter(
    "credbridge_reconciles_total",
    "Credential reconciles by result (written, unchanged, failed reason, error).",
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
REENCRYPTION_PENDING = prometheus_client.Gauge(
    "credbridge_reencryption_pending",
    "Credentials still encrypted with a key other than the active one.",
    registry=REGISTRY,
)


class StateCollector(prometheus_registry.Collector):
    """Exposes credentials by ready/type/key id and shares by state from live snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._shares: Callable[[], dict[str, int]] = dict

    def set_credential(self, key: tuple[str, str], ready: str, type_name: str, key_id: str) -> None:
        with self._lock:
            self._credentials[key] = (ready, type_name, key_id)

    def forget_credential(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._credentials.pop(key, None)

    def key_ids(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(key_id for _, _, key_id in self._credentials.values())

    def set_share_source(self, source: Callable[[], dict[str, int]]) -> None:
        self._shares = source

    def collect(self) -> Iterator[prometheus_core.Metric]:
        with self._lock:
            counts = collections.Counter(self._credentials.values())
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


def serve(port: int, address: str) -> None:
    """Serve /metrics on `address:port` in a background thread."""
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
