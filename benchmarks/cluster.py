"""Benchmarks on a real local control plane: reconcile throughput, API writes, memory, key rotation.

One scenario feeds four benchmarks, because each needs what the previous one left behind:

1. start the control plane and `credbridge run` as a process; note its idle RSS (memory);
2. create N Credentials and follow them with a watch until every one is Ready (reconcile, memory);
   count the operator's writes from the audit log (api-writes);
3. create N plain Secrets of the same size through the same client: the baseline for step 2;
4. restart the operator with nothing changed and count its writes (api-writes, target 0);
5. rotate the keyring and follow every Credential to the new `status.keyId` (rotation).

The benchmark's own client impersonates the user `credbridge-bench`, so in the audit log every
write by `credbridge-admin` (the admin kubeconfig the operator runs with) is the operator's.
"""

from __future__ import annotations

import collections
import contextlib
import math
import pathlib
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client, watch

from benchmarks import BenchmarkError, Options, Record, Result, progress
from credbridge.core import names
from credbridge.kube import connecting, keyrings
from credbridge.local import controlplane, operator
from credbridge.testing import fixtures

NAMES = ("reconcile", "api-writes", "memory", "rotation")
"""The benchmarks this module runs, as `--only` names them."""

BENCH_USER = "credbridge-bench"
"""Identity the benchmark's own requests are made as (impersonated, in group system:masters)."""
OPERATOR_USER = controlplane.ADMIN_USER
"""Identity of the operator's requests: it runs with the control plane's admin kubeconfig."""
OPERATOR_NAMESPACE = "credbridge-system"
BENCH_NAMESPACE = "bench-credentials"
BASELINE_NAMESPACE = "bench-baseline"
BENCH_LABEL = {"created-by": "credbridge-bench"}
REENCRYPT_RATE = 50.0
"""--reencrypt-rate given to the operator (its default is 10/s)."""
COUNTED_RESOURCES = ("credentials", "secrets")
WRITES_PER_CREATE_TARGET = 2
"""DESIGN §3: at most 2 API writes for a new Credential (its Secret and its status)."""
WRITES_PER_RESTART_TARGET = 0
"""DESIGN §3: no write for an unchanged Credential when the operator restarts."""


def credential_count(options: Options) -> int:
    """How many Credentials the scenario creates."""
    return 30 if options.quick else 200


def _settle_seconds(options: Options) -> float:
    """Pause after a phase ends, so late writes it caused still land in the audit log window."""
    return 1.5 if options.quick else 3.0


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid`, from /proc/<pid>/status (VmRSS)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchmarkError(f"no VmRSS line in /proc/{pid}/status")


def percentile(samples: Iterable[float], fraction: float) -> float:
    """The `fraction` percentile of `samples` (nearest rank)."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _is_ready(obj: Mapping[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == names.READY_CONDITION and c.get("status") == "True" for c in conditions)


class CredentialWatch:
    """Follows the Credentials of one namespace from a thread: when each became Ready, which key it reports.

    A watch instead of polling: polling N objects would compete with the operator for the CPU.
    """

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-credential-watch", daemon=True)
        self.ready_at: dict[str, float] = {}
        """Name → monotonic time it was first seen Ready=True."""
        self.key_id: dict[str, str] = {}
        """Name → the status.keyId last seen."""
        self.key_seen_at: dict[tuple[str, str], float] = {}
        """(name, key id) → monotonic time that key id was first seen in its status."""
        self.failures: dict[str, str] = {}
        """Name → reason of the last Ready=False condition seen."""
        self.last_error: str | None = None
        """Why the watch last had to start over, for timeout messages."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Asks the thread to end; it does within the watch timeout (5 s)."""
        self._stop.set()

    def join(self) -> None:
        self._thread.join(timeout=10)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Blocks until `predicate()` (called under the watch's lock) is true or `timeout` passes."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def _observe(self, obj: Mapping[str, Any]) -> None:
        now = time.monotonic()
        name = str((obj.get("metadata") or {}).get("name"))
        status = obj.get("status") or {}
        with self._changed:
            if _is_ready(obj):
                self.ready_at.setdefault(name, now)
                self.failures.pop(name, None)
            else:
                for condition in status.get("conditions") or []:
                    if condition.get("type") == names.READY_CONDITION and condition.get("status") == "False":
                        self.failures[name] = str(condition.get("reason"))
            key_id = status.get("keyId")
            if key_id:
                self.key_id[name] = str(key_id)
                self.key_seen_at.setdefault((name, str(key_id)), now)
            self._changed.notify_all()

    def _run(self) -> None:
        arguments = (names.GROUP, names.VERSION, self._namespace, names.CREDENTIAL_PLURAL)
        while not self._stop.is_set():
            try:
                listing = self._custom.list_namespaced_custom_object(*arguments)
                for item in listing.get("items") or []:
                    self._observe(item)
                version = listing["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    stream = watch.Watch().stream(
                        self._custom.list_namespaced_custom_object,
                        *arguments,
                        resource_version=version,
                        timeout_seconds=5,
                        allow_watch_bookmarks=True,
                    )
                    for event in stream:
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise BenchmarkError(f"watch error: {obj}")
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._observe(obj)
            except Exception as error:  # expired resourceVersion or a dropped connection: list again
                self.last_error = f"{type(error).__name__}: {error}"[:300]
                time.sleep(0.2)


def _credential_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_KIND,
        "metadata": {"name": name, "labels": BENCH_LABEL},
        "spec": {"type": "openAIApi", "data": {"openAIApiKey": "<<CRED_BENCH_KEY>>"}},
    }


def _write_summary(events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts writes by 'user verb resource[/subresource] namespace': the audit evidence in a row."""
    counts: collections.Counter[str] = collections.Counter()
    for event in events:
        ref = event.get("objectRef") or {}
        resource = str(ref.get("resource", "?")) + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[f"{fixtures.effective_user(event)} {event.get('verb')} {resource} ns={ref.get('namespace', '-')}"] += 1
    return dict(sorted(counts.items()))


def _metric_sum(process: operator.OperatorProcess, name: str) -> float:
    """Sum of every sample of the metric `name` (all labels) on the operator's /metrics."""
    total = 0.0
    for line in process.metrics().splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Scenario:
    """The processes and clients of one run, and the steps that produce the rows."""

    def __init__(self, options: Options, record: Record, workdir: pathlib.Path) -> None:
        self.options = options
        self.record = record
        self.workdir = workdir
        self.count = credential_count(options)
        self.plane: controlplane.ControlPlane | None = None
        self.operator: operator.OperatorProcess | None = None
        self.operator_starts = 0
        self.api: client.ApiClient | None = None
        self.audit: fixtures.AuditLog | None = None
        self.watch: CredentialWatch | None = None

    # ---- processes ---------------------------------------------------------------------------

    def start_cluster(self) -> None:
        progress(f"cluster: starting the local control plane in {self.workdir}")
        self.plane = controlplane.start(self.workdir / "controlplane", progress=True)
        self.plane.install_crds()
        if self.plane.audit_log is not None:
            self.audit = fixtures.AuditLog(self.plane.audit_log)
        self.api = connecting.api_client(str(self.plane.kubeconfig), as_user=BENCH_USER, as_group="system:masters")
        core = client.CoreV1Api(self.api)
        for namespace in (OPERATOR_NAMESPACE, BENCH_NAMESPACE, BASELINE_NAMESPACE):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=BENCH_LABEL)))
        self.start_operator()

    def start_operator(self) -> operator.OperatorProcess:
        assert self.plane is not None
        log = self.workdir / f"operator-{self.operator_starts}.log"
        self.operator_starts += 1
        progress(f"cluster: starting `credbridge run` (log: {log})")
        self.operator = operator.start(
            self.plane.kubeconfig,
            log,
            args=[
                "--operator-namespace",
                OPERATOR_NAMESPACE,
                "--webhook-port",
                "0",
                "--reencrypt-rate",
                str(REENCRYPT_RATE),
            ],
            env={"CRED_BENCH_KEY": "x" * 40},
        )
        return self.operator

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.operator is not None:
            self.operator.stop()
        if self.plane is not None:
            self.plane.stop()
        if self.watch is not None:
            self.watch.join()

    def _operator(self) -> operator.OperatorProcess:
        if self.operator is None or not self.operator.alive():
            tail = "\n".join(self.operator.logs().splitlines()[-20:]) if self.operator else ""
            raise BenchmarkError(f"the operator is not running; last lines of its log:\n{tail}")
        return self.operator

    def _operator_writes(self, since: int, namespace: str | None = BENCH_NAMESPACE) -> list[dict[str, Any]]:
        assert self.audit is not None
        return [
            event
            for event in self.audit.writes(since=since, namespace=namespace)
            if fixtures.effective_user(event) != BENCH_USER
        ]

    def _counted(self, writes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [w for w in writes if (w.get("objectRef") or {}).get("resource") in COUNTED_RESOURCES]

    # ---- steps -------------------------------------------------------------------------------

    def idle_rss(self) -> int:
        """RSS once the operator has finished starting (built-in types applied, caches filled)."""
        pause = 2.0 if self.options.quick else 5.0
        progress(f"memory: letting the operator settle for {pause:.0f}s, then reading its idle RSS")
        time.sleep(pause)
        return rss_bytes(self._operator().popen.pid)

    def create_credentials(self, idle_rss: int) -> None:
        assert self.api is not None
        self.watch = CredentialWatch(self.api, BENCH_NAMESPACE)
        self.watch.start()
        custom = client.CustomObjectsApi(self.api)
        mark = self.audit.mark() if self.audit else 0
        names_ = [f"cred-{index:04d}" for index in range(self.count)]
        created_at: dict[str, float] = {}
        progress(f"reconcile: creating {self.count} openAIApi Credentials in {BENCH_NAMESPACE}")
        started = time.monotonic()
        for name in names_:
            created_at[name] = time.monotonic()
            custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, BENCH_NAMESPACE, names.CREDENTIAL_PLURAL, _credential_body(name)
            )
        created = time.monotonic()
        progress(f"reconcile: created in {created - started:.1f}s; waiting until all are Ready")
        watch_ = self.watch
        timeout = 60.0 + self.count * 0.5
        if not watch_.wait_until(lambda: len(watch_.ready_at) >= self.count, timeout):
            self._operator()
            failures = collections.Counter(watch_.failures.values())
            raise BenchmarkError(
                f"reconcile: only {len(watch_.ready_at)} of {self.count} Credentials were Ready after "
                f"{timeout:.0f}s (Ready=False reasons: {dict(failures) or 'none seen'}; "
                f"last watch error: {watch_.last_error})"
            )
        finished = max(watch_.ready_at.values())
        elapsed = finished - started
        latencies = [watch_.ready_at[name] - created_at[name] for name in names_]
        progress(f"reconcile: all {self.count} Ready after {elapsed:.1f}s")
        ready_rss = rss_bytes(self._operator().popen.pid)
        time.sleep(_settle_seconds(self.options))

        if self.options.wants("reconcile"):
            secret_rate, secret_latencies, secret_bytes = self._create_plain_secrets()
            self.record(
                Result(
                    benchmark="reconcile",
                    name=f"reconcile throughput (N={self.count})",
                    value=self.count / elapsed,
                    unit="credentials/s",
                    baseline_name="plain Secret creates",
                    baseline_value=secret_rate,
                    baseline_unit="secrets/s",
                    note="first create sent → last Credential Ready, vs the same client creating N equal-sized Secrets",
                    details={
                        "count": self.count,
                        "seconds_to_all_ready": elapsed,
                        "seconds_creating": created - started,
                        "create_calls_per_s": self.count / (created - started),
                        "seconds_after_last_create": finished - created,
                        "secret_data_bytes": secret_bytes,
                    },
                )
            )
            for fraction, label in ((0.5, "p50"), (0.95, "p95")):
                self.record(
                    Result(
                        benchmark="reconcile",
                        name=f"create → Ready latency {label}",
                        value=percentile(latencies, fraction),
                        unit="s",
                        baseline_name=f"Secret create call {label}",
                        baseline_value=percentile(secret_latencies, fraction),
                        note=(
                            "per Credential, seen by a watch; all N are created back to back, "
                            "so this includes time spent queued behind the others"
                        ),
                        details={"mean": statistics.fmean(latencies), "max": max(latencies)},
                    )
                )
        if self.options.wants("memory"):
            mib = 1024 * 1024
            self.record(
                Result(
                    benchmark="memory",
                    name=f"operator RSS with {self.count} Ready",
                    value=ready_rss / mib,
                    unit="MiB",
                    baseline_name="operator RSS idle",
                    baseline_value=idle_rss / mib,
                    note="VmRSS of the `credbridge run` process before any Credential and once all N are Ready",
                    details={"per_credential_kib": (ready_rss - idle_rss) / 1024 / self.count},
                )
            )
        if self.options.wants("api-writes"):
            if self.audit is None:
                raise BenchmarkError("api-writes: no audit log (an existing cluster is in use)")
            writes = self._operator_writes(mark)
            counted = self._counted(writes)
            self.record(
                Result(
                    benchmark="api-writes",
                    name="API writes per new Credential",
                    value=len(counted) / self.count,
                    unit="writes/credential",
                    baseline_name="DESIGN §3 target (not measured)",
                    baseline_value=WRITES_PER_CREATE_TARGET,
                    note="operator writes to credentials and secrets in the bench namespace, from the audit log",
                    details={"writes": len(counted), "count": self.count, "evidence": _write_summary(writes)},
                )
            )

    def _create_plain_secrets(self) -> tuple[float, list[float], int]:
        """Creates N Secrets holding the data of one managed Secret; returns secrets/s, call latencies, bytes."""
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        managed = core.read_namespaced_secret("cred-0000", BENCH_NAMESPACE)
        data = dict(managed.data or {})
        size = sum(len(key) + len(value) for key, value in data.items())
        progress(f"reconcile: baseline, creating {self.count} plain Secrets of {size} bytes in {BASELINE_NAMESPACE}")
        latencies: list[float] = []
        started = time.monotonic()
        for index in range(self.count):
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=f"plain-{index:04d}", labels=BENCH_LABEL), type="Opaque", data=data
            )
            before = time.monotonic()
            core.create_namespaced_secret(BASELINE_NAMESPACE, body)
            latencies.append(time.monotonic() - before)
        elapsed = time.monotonic() - started
        return self.count / elapsed, latencies, size

    def restart_operator(self) -> None:
        assert self.audit is not None
        progress("api-writes: restarting the operator with nothing changed")
        self._operator().stop()
        mark = self.audit.mark()
        started = time.monotonic()
        process = self.start_operator()
        # A restarted operator lists every Credential and reconciles it; wait until its
        # credbridge_credentials gauge (one entry per Credential reconciled) covers all of them,
        # then a little longer for any write that would follow.
        timeout = 60.0 + self.count * 0.2
        deadline = time.monotonic() + timeout
        seen = reconciles = 0.0
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError):
                seen = _metric_sum(process, "credbridge_credentials")
                reconciles = _metric_sum(process, "credbridge_reconciles_total")
            if seen >= self.count:
                break
            time.sleep(0.25)
        resynced = time.monotonic() - started
        time.sleep(_settle_seconds(self.options))
        self._operator()
        writes = self._operator_writes(mark)
        counted = self._counted(writes)
        note = "operator writes to credentials and secrets in the bench namespace after a restart, from the audit log"
        if seen < self.count:
            note += f"; the operator had reconciled only {seen:.0f} of {self.count} Credentials after {timeout:.0f}s"
        progress(
            f"api-writes: restarted operator reconciled {seen:.0f} Credentials ({reconciles:.0f} reconciles) "
            f"in {resynced:.1f}s and wrote {len(counted)} times"
        )
        self.record(
            Result(
                benchmark="api-writes",
                name=f"API writes on operator restart (N={self.count})",
                value=len(counted),
                unit="writes",
                baseline_name="DESIGN §3 target (not measured)",
                baseline_value=WRITES_PER_RESTART_TARGET,
                note=note,
                details={
                    "credentials_reconciled": seen,
                    "reconciles": reconciles,
                    "seconds_to_reconcile_all": resynced,
                    "evidence": _write_summary(writes),
                    "operator_writes_elsewhere": _write_summary(
                        event
                        for event in self._operator_writes(mark, namespace=None)
                        if fixtures.effective_user(event) == OPERATOR_USER
                        and (event.get("objectRef") or {}).get("namespace") != BENCH_NAMESPACE
                    ),
                },
            )
        )

    def rotate_keyring(self) -> None:
        assert self.api is not None and self.watch is not None
        mark = self.audit.mark() if self.audit else 0
        progress(f"rotation: rotating the keyring; the operator re-encrypts at up to {REENCRYPT_RATE:g}/s")
        started = time.monotonic()
        ring = keyrings.rotate(self.api, OPERATOR_NAMESPACE, names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
        new_id = ring.active_id
        watch_ = self.watch
        timeout = 60.0 + 3 * self.count / REENCRYPT_RATE

        def rotated() -> int:
            return sum(1 for key_id in watch_.key_id.values() if key_id == new_id)

        if not watch_.wait_until(lambda: rotated() >= self.count, timeout):
            self._operator()
            raise BenchmarkError(
                f"rotation: only {rotated()} of {self.count} Credentials reported key {new_id} after {timeout:.0f}s"
            )
        elapsed = max(watch_.key_seen_at[(name, new_id)] for name in watch_.key_id) - started
        progress(f"rotation: all {self.count} on key {new_id} after {elapsed:.1f}s")
        time.sleep(_settle_seconds(self.options))
        details: dict[str, Any] = {"count": self.count, "seconds": elapsed, "new_key_id": new_id}
        if self.audit is not None:
            writes = self._operator_writes(mark)
            details["writes_per_credential"] = len(self._counted(writes)) / self.count
            details["evidence"] = _write_summary(writes)
        self.record(
            Result(
                benchmark="rotation",
                name=f"key rotation re-encryption (N={self.count})",
                value=self.count / elapsed,
                unit="credentials/s",
                baseline_name="configured --reencrypt-rate",
                baseline_value=REENCRYPT_RATE,
                note="rotate → every status.keyId is the new key; ratio near 1 means the rate limit is the bottleneck",
                details=details,
            )
        )


def run(options: Options, record: Record) -> None:
    """Runs the cluster scenario for the selected benchmarks; stops every process it started, whatever happens."""
    if controlplane.use_existing_cluster():
        # Another cluster has no audit log we can read, may run its own operator, and its keyring
        # is not ours to rotate.
        raise BenchmarkError(
            "the cluster benchmarks only run on the local control plane: unset CREDBRIDGE_USE_EXISTING_CLUSTER"
        )
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-bench-"))
    scenario = Scenario(options, record, workdir)
    succeeded = False
    try:
        scenario.start_cluster()
        idle = scenario.idle_rss()
        scenario.create_credentials(idle)
        if options.wants("api-writes"):
            scenario.restart_operator()
        if options.wants("rotation"):
            scenario.rotate_keyring()
        succeeded = True
    except controlplane.ControlPlaneError as error:
        raise BenchmarkError(f"the control plane did not start: {error}") from error
    except subprocess.CalledProcessError as error:
        raise BenchmarkError(f"`{' '.join(error.cmd)}` failed: {(error.stderr or '').strip()}") from error
    finally:
        progress("cluster: stopping the operator and the control plane")
        scenario.stop()
        if succeeded:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            progress(f"cluster: logs kept in {workdir}")
