"""Benchmarks on a real local control plane, at the sizes users reach: 1,000, 3,000 and 10,000 Credentials.

Each size runs on a fresh control plane with `credbridge run` as a process, in this order, because
each step needs what the previous one left behind:

1. the operator's idle RSS; then (first size only) 5,000 unrelated 50 KiB Secrets, like the Helm
   release Secrets of a real cluster, and the RSS they add (memory);
2. N Credentials created by 16 client threads and followed with a watch until every one is Ready:
   Ready/s, apply→Ready p50/p99, peak RSS, and the operator's writes from the audit log;
3. the same-work baseline: the same 16 threads doing, per object, the three writes the operator
   causes — create a custom object with a status subresource, create a Secret of the managed
   Secret's size, patch the object's status (reconcile);
4. a restart of the operator with nothing changed: time until it has re-verified every Credential,
   and its writes (target 0) (api-writes);
5. a key rotation followed until every Credential reports the new key (rotation).

The benchmark's own client impersonates `credbridge-bench`, so in the audit log every write by
`credbridge-admin` (the admin kubeconfig the operator runs with) is the operator's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import os
import pathlib
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client, watch

from benchmarks import BenchmarkError, Options, Record, Result, progress, scenario_workdir
from credbridge.core import names
from credbridge.kube import connecting, keyrings
from credbridge.local import controlplane, operator
from credbridge.testing import fixtures

NAMES = ("reconcile", "api-writes", "memory", "rotation")
"""The benchmarks this module runs, as `--only` names them."""

DEFAULT_SIZES = (1000, 3000, 10000)
"""Numbers of Credentials `make bench` runs the scenario with, one fresh control plane each."""
QUICK_SIZES = (30,)
CLIENT_THREADS = 16
"""Concurrency of the benchmark's client, for the Credentials and for the baseline alike."""
UNRELATED_SECRETS = 5000
UNRELATED_SECRET_BYTES = 50 * 1024
BENCH_USER = "credbridge-bench"
"""Identity the benchmark's own requests are made as (impersonated, in group system:masters)."""
OPERATOR_USER = controlplane.ADMIN_USER
"""Identity of the operator's requests: it runs with the control plane's admin kubeconfig."""
OPERATOR_NAMESPACE = names.DEFAULT_OPERATOR_NAMESPACE
BENCH_NAMESPACE = "bench-credentials"
BASELINE_NAMESPACE = "bench-baseline"
UNRELATED_NAMESPACE = "bench-unrelated"
BENCH_LABEL = {"created-by": "credbridge-bench"}
REENCRYPT_RATE = 100.0
"""--reencrypt-rate given to the operator (its default is 10/s)."""
COUNTED_RESOURCES = ("credentials", "secrets")
WRITES_PER_CREATE_TARGET = 2
"""DESIGN §3: at most 2 API writes for a new Credential (its Secret and its status)."""
WRITES_PER_RESTART_TARGET = 0
"""DESIGN §3: no write for an unchanged Credential when the operator restarts."""

BASELINE_GROUP = "bench.credbridge.io"
BASELINE_PLURAL = "benchobjects"
BASELINE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{BASELINE_PLURAL}.{BASELINE_GROUP}", "labels": BENCH_LABEL},
    "spec": {
        "group": BASELINE_GROUP,
        "scope": "Namespaced",
        "names": {"plural": BASELINE_PLURAL, "singular": "benchobject", "kind": "BenchObject"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}
"""A custom resource with a status subresource, for the same-work baseline."""


def sizes(options: Options) -> tuple[int, ...]:
    """The numbers of Credentials to run the scenario with."""
    if options.sizes:
        return options.sizes
    return QUICK_SIZES if options.quick else DEFAULT_SIZES


def _settle_seconds(options: Options) -> float:
    """Pause after a phase ends, so late writes it caused still land in the audit log window."""
    return 1.5 if options.quick else 3.0


def _proc_status_bytes(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise BenchmarkError(f"no {field} line in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` now (VmRSS)."""
    return _proc_status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """The highest resident set size process `pid` has had (VmHWM)."""
    return _proc_status_bytes(pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (from /proc/<pid>/stat)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: Iterable[float], fraction: float) -> float:
    """The `fraction` percentile of `samples` (nearest rank)."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def in_parallel(items: Iterable[Any], work: Callable[[Any], Any], threads: int = CLIENT_THREADS) -> None:
    """Runs `work(item)` for every item on `threads` threads; the first exception stops the run."""
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bench-client") as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


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
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Profiler:
    """py-spy sampling the operator during one phase; writes a speedscope file and prints the top frames."""

    def __init__(self, pid: int, output: pathlib.Path) -> None:
        self.output = output
        self._raw = output.with_suffix(".txt")
        py_spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
        output.parent.mkdir(parents=True, exist_ok=True)
        self._processes = [
            subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "-r", "50", "-f", fmt, "-o", str(path), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for fmt, path in (("speedscope", output), ("raw", self._raw))
        ]

    def stop(self, top: int = 15) -> list[tuple[str, float]]:
        """Stops sampling; returns the frames with the most samples (own + children), as shares of all samples."""
        for process in self._processes:
            process.send_signal(signal.SIGINT)
        for process in self._processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        return top_frames(self._raw, top)


def top_frames(raw: pathlib.Path, top: int) -> list[tuple[str, float]]:
    """Inclusive share of samples per frame from py-spy's raw (collapsed stacks) output."""
    if not raw.exists():
        return []
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            if "credbridge" in frame or "kopf" in frame or "kubernetes" in frame:
                inclusive[frame] += count
    return [(frame, count / total) for frame, count in inclusive.most_common(top)] if total else []


class Scenario:
    """The processes and clients of one size, and the steps that produce its rows."""

    def __init__(self, options: Options, record: Record, workdir: pathlib.Path, count: int, *, first: bool) -> None:
        self.options = options
        self.record = record
        self.workdir = workdir
        self.count = count
        self.first = first
        self.plane: controlplane.ControlPlane | None = None
        self.operator: operator.OperatorProcess | None = None
        self.operator_starts = 0
        self.api: client.ApiClient | None = None
        self.audit: fixtures.AuditLog | None = None
        self.watch: CredentialWatch | None = None
        self.managed_secret_data: dict[str, str] = {}
        self.ready_status: dict[str, Any] = {}
        self.operator_flags: tuple[str, ...] = ("--no-verification",)
        """Flags of this scenario's operator. Verification is off: these rows measure the reconciler (its writes
        would otherwise include each Credential's Verified condition); benchmarks/verification.py measures it."""

    # ---- processes ---------------------------------------------------------------------------

    def start_cluster(self) -> None:
        progress(f"N={self.count}: starting a fresh local control plane in {self.workdir}")
        self.plane = controlplane.start(self.workdir / "controlplane", progress=True)
        if self.plane.audit_log is not None:
            self.audit = fixtures.AuditLog(self.plane.audit_log)
        self.api = connecting.api_client(
            str(self.plane.kubeconfig),
            as_user=BENCH_USER,
            as_group="system:masters",
            connections=CLIENT_THREADS * 2,
        )
        core = client.CoreV1Api(self.api)
        for namespace in (OPERATOR_NAMESPACE, BENCH_NAMESPACE, BASELINE_NAMESPACE, UNRELATED_NAMESPACE):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=BENCH_LABEL)))
        client.ApiextensionsV1Api(self.api).create_custom_resource_definition(BASELINE_CRD)
        self.plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{BASELINE_CRD['metadata']['name']}"
        )
        self.start_operator()

    def start_operator(self) -> operator.OperatorProcess:
        assert self.plane is not None
        log = self.workdir / f"operator-{self.operator_starts}.log"
        self.operator_starts += 1
        progress(f"N={self.count}: starting `credbridge run` (log: {log})")
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
                *self.operator_flags,
                *self.options.operator_args,
            ],
            env={"CRED_BENCH_KEY": "x" * 40},
            ready_timeout=180.0,
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

    def _control_plane_cpu(self) -> float:
        """CPU seconds kube-apiserver and etcd have used so far: where the cost of a write lands."""
        assert self.plane is not None
        return sum(
            cpu_seconds(pid)
            for pid, process in zip(self.plane.pids, self.plane.processes, strict=True)
            if process.name in ("kube-apiserver", "etcd")
        )

    def _profile(self, phase: str) -> Profiler | None:
        if self.options.profile_dir is None:
            return None
        path = self.options.profile_dir / f"operator-{phase}-N{self.count}.speedscope.json"
        progress(f"N={self.count}: profiling the operator with py-spy during {phase} → {path}")
        return Profiler(self._operator().popen.pid, path)

    def _report_profile(self, profiler: Profiler | None, phase: str) -> list[tuple[str, float]]:
        if profiler is None:
            return []
        frames = profiler.stop()
        progress(f"N={self.count}: py-spy, {phase}: frames by share of samples (inclusive)")
        for frame, share in frames:
            progress(f"    {share:6.1%}  {frame}")
        return frames

    # ---- steps -------------------------------------------------------------------------------

    def idle_rss(self) -> int:
        """RSS once the operator has finished starting (built-in types applied, caches filled)."""
        pause = 2.0 if self.options.quick else 5.0
        progress(f"N={self.count}: letting the operator settle for {pause:.0f}s, then reading its idle RSS")
        time.sleep(pause)
        return rss_bytes(self._operator().popen.pid)

    def unrelated_secrets(self, idle_rss: int) -> None:
        """Creates Secrets the operator neither manages nor references, and records the RSS they add."""
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        count = 50 if self.options.quick else UNRELATED_SECRETS
        payload = secrets.token_urlsafe(UNRELATED_SECRET_BYTES)[:UNRELATED_SECRET_BYTES]
        progress(f"N={self.count}: memory, creating {count} unrelated Secrets of {UNRELATED_SECRET_BYTES // 1024} KiB")

        def create(index: int) -> None:
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name=f"sh.helm.release.v1.app-{index:05d}.v1", labels={**BENCH_LABEL, "owner": "helm"}
                ),
                type="helm.sh/release.v1",
                string_data={"release": payload},
            )
            core.create_namespaced_secret(UNRELATED_NAMESPACE, body)

        started = time.monotonic()
        in_parallel(range(count), create)
        progress(f"N={self.count}: created them in {time.monotonic() - started:.1f}s; letting the operator settle")
        time.sleep(2.0 if self.options.quick else 10.0)
        pid = self._operator().popen.pid
        after = rss_bytes(pid)
        mib = 1024 * 1024
        self.record(
            Result(
                benchmark="memory",
                name=f"operator RSS with {count:,} unrelated {UNRELATED_SECRET_BYTES // 1024} KiB Secrets",
                value=after / mib,
                unit="MiB",
                baseline_name="operator RSS idle, before them",
                baseline_value=idle_rss / mib,
                note="Secrets the operator neither manages nor references should cost next to nothing (target +30 MiB)",
                details={"added_mib": (after - idle_rss) / mib, "peak_rss_mib": peak_rss_bytes(pid) / mib},
            )
        )

    def create_credentials(self, idle_rss: int) -> None:
        """N Credentials from 16 threads, followed to Ready; records throughput, latency, memory and writes."""
        assert self.api is not None
        self.watch = CredentialWatch(self.api, BENCH_NAMESPACE)
        self.watch.start()
        custom = client.CustomObjectsApi(self.api)
        mark = self.audit.mark() if self.audit else 0
        names_ = [f"cred-{index:05d}" for index in range(self.count)]
        created_at: dict[str, float] = {}
        progress(f"N={self.count}: creating {self.count} openAIApi Credentials from {CLIENT_THREADS} threads")
        profiler = self._profile("create")
        operator_pid = self._operator().popen.pid
        cpu_before = cpu_seconds(operator_pid)
        plane_cpu_before = self._control_plane_cpu()

        def create(name: str) -> None:
            created_at[name] = time.monotonic()
            custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, BENCH_NAMESPACE, names.CREDENTIAL_PLURAL, _credential_body(name)
            )

        started = time.monotonic()
        in_parallel(names_, create)
        created = time.monotonic()
        progress(f"N={self.count}: created in {created - started:.1f}s; waiting until all are Ready")
        watch_ = self.watch
        timeout = 120.0 + self.count * 0.5
        last_report = [time.monotonic()]

        def all_ready() -> bool:
            if time.monotonic() - last_report[0] > 15:
                last_report[0] = time.monotonic()
                progress(f"N={self.count}: {len(watch_.ready_at)} of {self.count} Ready")
            return len(watch_.ready_at) >= self.count

        if not watch_.wait_until(all_ready, timeout):
            self._operator()
            failures = collections.Counter(watch_.failures.values())
            raise BenchmarkError(
                f"reconcile: only {len(watch_.ready_at)} of {self.count} Credentials were Ready after "
                f"{timeout:.0f}s (Ready=False reasons: {dict(failures) or 'none seen'}; "
                f"last watch error: {watch_.last_error})"
            )
        finished = max(watch_.ready_at.values())
        operator_cpu = cpu_seconds(operator_pid) - cpu_before
        plane_cpu = self._control_plane_cpu() - plane_cpu_before
        frames = self._report_profile(profiler, "create")
        elapsed = finished - started
        latencies = [watch_.ready_at[name] - created_at[name] for name in names_]
        progress(
            f"N={self.count}: all {self.count} Ready after {elapsed:.1f}s ({self.count / elapsed:.0f}/s); "
            f"CPU per Credential: operator {1000 * operator_cpu / self.count:.1f} ms, "
            f"kube-apiserver + etcd {1000 * plane_cpu / self.count:.1f} ms"
        )
        pid = self._operator().popen.pid
        ready_rss, peak_rss = rss_bytes(pid), peak_rss_bytes(pid)
        time.sleep(_settle_seconds(self.options))
        core = client.CoreV1Api(self.api)
        managed = core.read_namespaced_secret(names_[0], BENCH_NAMESPACE)
        self.managed_secret_data = dict(managed.data or {})
        self.ready_status = custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, BENCH_NAMESPACE, names.CREDENTIAL_PLURAL, names_[0]
        )["status"]
        writes = self._operator_writes(mark) if self.audit else []

        if self.options.wants("reconcile"):
            base_rate, base_latencies, base_plane_cpu = self.same_work_baseline()
            self.record(
                Result(
                    benchmark="reconcile",
                    name=f"Ready/s (N={self.count:,})",
                    value=self.count / elapsed,
                    unit="credentials/s",
                    baseline_name="same-work client",
                    baseline_value=base_rate,
                    baseline_unit="objects/s",
                    note=(
                        f"{CLIENT_THREADS} threads create N Credentials; first create → last Ready. Baseline: the same "
                        "threads create a custom object, a Secret of the same size and patch the object's status"
                    ),
                    details={
                        "count": self.count,
                        "seconds_to_all_ready": elapsed,
                        "seconds_creating": created - started,
                        "seconds_after_last_create": finished - created,
                        "operator_cpu_ms_per_credential": 1000 * operator_cpu / self.count,
                        "control_plane_cpu_ms_per_credential": 1000 * plane_cpu / self.count,
                        "baseline_control_plane_cpu_ms_per_object": 1000 * base_plane_cpu / self.count,
                        "profile_top_frames": frames,
                    },
                )
            )
            for fraction, label in ((0.5, "p50"), (0.99, "p99")):
                self.record(
                    Result(
                        benchmark="reconcile",
                        name=f"apply → Ready {label} (N={self.count:,})",
                        value=percentile(latencies, fraction),
                        unit="s",
                        baseline_name=f"same-work sequence {label}",
                        baseline_value=percentile(base_latencies, fraction),
                        note="per object, with all N sent at once: includes time queued behind the others",
                        details={"mean": statistics.fmean(latencies), "max": max(latencies)},
                    )
                )
        if self.options.wants("memory"):
            mib = 1024 * 1024
            self.record(
                Result(
                    benchmark="memory",
                    name=f"operator peak RSS (N={self.count:,})",
                    value=peak_rss / mib,
                    unit="MiB",
                    baseline_name="operator RSS idle",
                    baseline_value=idle_rss / mib,
                    note="VmHWM of `credbridge run` once all N are Ready (target ≤ 200 MiB at 10,000)",
                    details={
                        "rss_when_ready_mib": ready_rss / mib,
                        "per_credential_kib": (ready_rss - idle_rss) / 1024 / self.count,
                    },
                )
            )
        if self.options.wants("api-writes"):
            if self.audit is None:
                raise BenchmarkError("api-writes: no audit log (an existing cluster is in use)")
            counted = self._counted(writes)
            self.record(
                Result(
                    benchmark="api-writes",
                    name=f"API writes per new Credential (N={self.count:,})",
                    value=len(counted) / self.count,
                    unit="writes/credential",
                    baseline_name="DESIGN §3 target (not measured)",
                    baseline_value=WRITES_PER_CREATE_TARGET,
                    note="operator writes to credentials and secrets in the bench namespace, from the audit log",
                    details={"writes": len(counted), "count": self.count, "evidence": _write_summary(writes)},
                )
            )

    def same_work_baseline(self) -> tuple[float, list[float], float]:
        """The three writes per object the operator causes, by a plain client.

        Returns objects/s, the latency of each object's three writes, and the CPU seconds
        kube-apiserver and etcd spent meanwhile.
        """
        assert self.api is not None
        custom = client.CustomObjectsApi(self.api)
        core = client.CoreV1Api(self.api)
        status = {key: value for key, value in self.ready_status.items() if key != "observedGeneration"}
        progress(f"N={self.count}: same-work baseline, {self.count} x (create object, create Secret, patch status)")
        latencies: list[float] = []

        def work(index: int) -> None:
            name = f"obj-{index:05d}"
            before = time.monotonic()
            custom.create_namespaced_custom_object(
                BASELINE_GROUP,
                "v1",
                BASELINE_NAMESPACE,
                BASELINE_PLURAL,
                {
                    "apiVersion": f"{BASELINE_GROUP}/v1",
                    "kind": "BenchObject",
                    "metadata": {"name": name, "labels": BENCH_LABEL},
                    "spec": _credential_body(name)["spec"],
                },
            )
            core.create_namespaced_secret(
                BASELINE_NAMESPACE,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(name=name, labels=BENCH_LABEL),
                    type="Opaque",
                    data=self.managed_secret_data,
                ),
            )
            custom.patch_namespaced_custom_object_status(
                BASELINE_GROUP, "v1", BASELINE_NAMESPACE, BASELINE_PLURAL, name, {"status": status}
            )
            latencies.append(time.monotonic() - before)

        plane_cpu_before = self._control_plane_cpu()
        started = time.monotonic()
        in_parallel(range(self.count), work)
        elapsed = time.monotonic() - started
        plane_cpu = self._control_plane_cpu() - plane_cpu_before
        progress(
            f"N={self.count}: baseline done in {elapsed:.1f}s ({self.count / elapsed:.0f}/s); "
            f"kube-apiserver + etcd CPU {1000 * plane_cpu / self.count:.1f} ms per object"
        )
        return self.count / elapsed, latencies, plane_cpu

    def restart_operator(self) -> None:
        """Restarts the operator with nothing changed: time to re-verify all N, and the writes it made."""
        assert self.audit is not None
        progress(f"N={self.count}: restarting the operator with nothing changed")
        self._operator().stop()
        mark = self.audit.mark()
        started = time.monotonic()
        process = self.start_operator()
        profiler = self._profile("restart")
        restart_cpu_before = cpu_seconds(process.popen.pid)
        timeout = 120.0 + self.count * 0.2
        deadline = time.monotonic() + timeout
        verified = 0.0
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError):
                verified = _metric_sum(process, "credbridge_reconciles_total")
            if verified >= self.count:
                break
            time.sleep(0.25)
        resynced = time.monotonic() - started
        restart_cpu = cpu_seconds(process.popen.pid) - restart_cpu_before
        frames = self._report_profile(profiler, "restart")
        time.sleep(_settle_seconds(self.options))
        self._operator()
        writes = self._operator_writes(mark)
        counted = self._counted(writes)
        note = "from process start until every Credential was reconciled (its Secret opened and compared)"
        if verified < self.count:
            note += f"; only {verified:.0f} of {self.count} were re-verified after {timeout:.0f}s"
        progress(f"N={self.count}: re-verified {verified:.0f} in {resynced:.1f}s; {len(counted)} writes")
        self.record(
            Result(
                benchmark="api-writes",
                name=f"restart: writes (N={self.count:,})",
                value=len(counted),
                unit="writes",
                baseline_name="DESIGN §3 target (not measured)",
                baseline_value=WRITES_PER_RESTART_TARGET,
                note="operator writes to credentials and secrets in the bench namespace after a restart",
                details={
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
        self.record(
            Result(
                benchmark="api-writes",
                name=f"restart: time to re-verify all (N={self.count:,})",
                value=resynced,
                unit="s",
                baseline_name="target (not measured)",
                baseline_value=60.0,
                note=note,
                details={
                    "reconciles": verified,
                    "operator_cpu_ms_per_credential": 1000 * restart_cpu / self.count,
                    "profile_top_frames": frames,
                },
            )
        )

    def rotate_keyring(self) -> None:
        """Rotates the keyring and follows every Credential to the new key."""
        assert self.api is not None and self.watch is not None
        mark = self.audit.mark() if self.audit else 0
        progress(f"N={self.count}: rotating the keyring; the operator re-encrypts at up to {REENCRYPT_RATE:g}/s")
        started = time.monotonic()
        ring = keyrings.rotate(self.api, OPERATOR_NAMESPACE, names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
        new_id = ring.active_id
        watch_ = self.watch
        timeout = 120.0 + 3 * self.count / REENCRYPT_RATE

        def rotated() -> int:
            return sum(1 for key_id in watch_.key_id.values() if key_id == new_id)

        if not watch_.wait_until(lambda: rotated() >= self.count, timeout):
            self._operator()
            raise BenchmarkError(
                f"rotation: only {rotated()} of {self.count} Credentials reported key {new_id} after {timeout:.0f}s"
            )
        elapsed = max(watch_.key_seen_at[(name, new_id)] for name in watch_.key_id) - started
        progress(f"N={self.count}: all {self.count} on key {new_id} after {elapsed:.1f}s")
        time.sleep(_settle_seconds(self.options))
        details: dict[str, Any] = {"count": self.count, "seconds": elapsed, "new_key_id": new_id}
        if self.audit is not None:
            writes = self._operator_writes(mark)
            details["writes_per_credential"] = len(self._counted(writes)) / self.count
            details["evidence"] = _write_summary(writes)
        self.record(
            Result(
                benchmark="rotation",
                name=f"key rotation re-encryption (N={self.count:,})",
                value=self.count / elapsed,
                unit="credentials/s",
                baseline_name="configured --reencrypt-rate",
                baseline_value=REENCRYPT_RATE,
                note="rotate → every status.keyId is the new key; ratio near 1 means the rate limit is the bottleneck",
                details=details,
            )
        )


def run(options: Options, record: Record) -> None:
    """Runs the scenario once per size, each on a fresh control plane; stops every process it started."""
    if controlplane.use_existing_cluster():
        # Another cluster has no audit log we can read, may run its own operator, and its keyring
        # is not ours to rotate.
        raise BenchmarkError(
            "the cluster benchmarks only run on the local control plane: unset CREDBRIDGE_USE_EXISTING_CLUSTER"
        )
    for index, count in enumerate(sizes(options)):
        with scenario_workdir(str(count), f"N={count}") as workdir:
            scenario = Scenario(options, record, workdir, count, first=index == 0)
            try:
                scenario.start_cluster()
                idle = scenario.idle_rss()
                if scenario.first and options.wants("memory"):
                    scenario.unrelated_secrets(idle)
                    idle = rss_bytes(scenario._operator().popen.pid)
                scenario.create_credentials(idle)
                if options.wants("api-writes"):
                    scenario.restart_operator()
                if options.wants("rotation"):
                    scenario.rotate_keyring()
            finally:
                progress(f"N={count}: stopping the operator and the control plane")
                scenario.stop()
