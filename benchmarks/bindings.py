"""Benchmark on a real local control plane: a Credential change reaching its CredentialBindings.

"Update in one place, every consumer gets it": one Credential rendered by N bindings (N=100, 30
with --quick) into N plain Secrets. The scenario:

1. start the control plane and `credbridge run` (the cluster benchmarks' own scenario);
2. create the Credential (its password from a Secret) and N bindings; wait until every binding
   Secret holds the password;
3. change the password in the referenced Secret and time until every binding Secret holds the new
   one; count the operator's writes from the audit log (target: one Secret update and one status
   patch per binding, plus the Credential's own two);
4. baseline: the benchmark's client updating N Secrets of the same size one after the other;
5. restart the operator with nothing changed and count its writes (target 0).
"""

from __future__ import annotations

import base64
import contextlib
import time
import urllib.error

from kubernetes import client

from benchmarks import BenchmarkError, Options, Record, Result, cluster, progress, scenario_workdir
from credbridge.core import names
from credbridge.local import controlplane

NAMES = ("bindings",)
"""The benchmarks this module runs, as `--only` names them."""

CREDENTIAL = "orders"
SOURCE_SECRET = "orders-db"
WRITES_PER_BINDING_TARGET = 2
"""A content change costs each binding its Secret update and its status patch."""


def binding_count(options: Options) -> int:
    """How many bindings render the one Credential."""
    return 30 if options.quick else 100


def _binding_body(name: str) -> dict[str, object]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_BINDING_KIND,
        "metadata": {"name": name, "labels": cluster.BENCH_LABEL},
        "spec": {
            "credential": CREDENTIAL,
            "template": {"DATABASE_URL": "postgresql://${user}:${password|urlencode}@db:5432/orders"},
            "secret": {"name": name},
        },
    }


class BindingScenario(cluster.Scenario):
    """The cluster scenario's processes, with bindings instead of many Credentials."""

    def holding(self, password: str) -> int:
        """How many binding Secrets hold `password` now."""
        assert self.api is not None
        listed = client.CoreV1Api(self.api).list_namespaced_secret(
            cluster.BENCH_NAMESPACE, label_selector=f"{names.BOUND_CREDENTIAL_LABEL}={CREDENTIAL}"
        )
        needle = f":{password}@".encode()
        return sum(1 for s in listed.items if needle in base64.b64decode((s.data or {}).get("DATABASE_URL", "")))

    def wait_for(self, password: str, timeout: float) -> float:
        """Seconds until every binding Secret holds `password` (polled every 0.1s)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.holding(password) >= self.count:
                return time.monotonic() - started
            time.sleep(0.1)
        self._operator()
        raise BenchmarkError(
            f"bindings: only {self.holding(password)} of {self.count} binding Secrets held the new content "
            f"after {timeout:.0f}s"
        )

    def create_bindings(self) -> None:
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        core.create_namespaced_secret(
            cluster.BENCH_NAMESPACE,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=SOURCE_SECRET, labels=cluster.BENCH_LABEL),
                string_data={"password": "first-0000000000"},
            ),
        )
        custom = client.CustomObjectsApi(self.api)
        custom.create_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            cluster.BENCH_NAMESPACE,
            names.CREDENTIAL_PLURAL,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.CREDENTIAL_KIND,
                "metadata": {"name": CREDENTIAL, "labels": cluster.BENCH_LABEL},
                "spec": {
                    "type": "PostgresApi",
                    "data": {"user": "orders"},
                    "valueFrom": {"password": {"secretKeyRef": {"name": SOURCE_SECRET, "key": "password"}}},
                },
            },
        )
        progress(f"bindings: creating {self.count} CredentialBindings of one Credential")
        started = time.monotonic()
        for index in range(self.count):
            custom.create_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                cluster.BENCH_NAMESPACE,
                names.CREDENTIAL_BINDING_PLURAL,
                _binding_body(f"binding-{index:03d}"),
            )
        seconds = time.monotonic() - started
        seconds += self.wait_for("first-0000000000", 60.0 + self.count)
        progress(f"bindings: all {self.count} binding Secrets written {seconds:.1f}s after the first create")
        time.sleep(cluster._settle_seconds(self.options))

    def change_credential(self) -> None:
        assert self.api is not None and self.audit is not None
        core = client.CoreV1Api(self.api)
        mark = self.audit.mark()
        progress("bindings: changing the password the Credential reads")
        core.patch_namespaced_secret(
            SOURCE_SECRET, cluster.BENCH_NAMESPACE, {"stringData": {"password": "second-000000000"}}
        )
        seconds = self.wait_for("second-000000000", 60.0 + self.count)
        progress(f"bindings: every binding Secret holds the new password after {seconds:.2f}s")
        time.sleep(cluster._settle_seconds(self.options))
        writes = [w for w in self._operator_writes(mark) if (w.get("objectRef") or {}).get("resource") != "events"]
        baseline = self._update_plain_secrets()
        self.record(
            Result(
                benchmark="bindings",
                name=f"Credential change → {self.count} binding Secrets",
                value=seconds,
                unit="s",
                baseline_name=f"{self.count} plain Secret updates",
                baseline_value=baseline,
                note="referenced Secret patched → every binding Secret holds the new value, vs the same client "
                "updating N Secrets one by one",
                details={"count": self.count},
            )
        )
        self.record(
            Result(
                benchmark="bindings",
                name="API writes per binding on a Credential change",
                value=len(writes) / self.count,
                unit="writes/binding",
                baseline_name="target: Secret update + status patch",
                baseline_value=WRITES_PER_BINDING_TARGET,
                note="every operator write in the namespace (the Credential's own included, Events not), from the "
                "audit log, divided by N",
                details={"writes": len(writes), "evidence": cluster._write_summary(writes)},
            )
        )

    def _update_plain_secrets(self) -> float:
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        for index in range(self.count):
            core.create_namespaced_secret(
                cluster.BASELINE_NAMESPACE,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(name=f"plain-{index:03d}", labels=cluster.BENCH_LABEL),
                    string_data={"DATABASE_URL": "postgresql://orders:first-0000000000@db:5432/orders"},
                ),
            )
        started = time.monotonic()
        for index in range(self.count):
            core.patch_namespaced_secret(
                f"plain-{index:03d}",
                cluster.BASELINE_NAMESPACE,
                {"stringData": {"DATABASE_URL": "postgresql://orders:second-000000000@db:5432/orders"}},
            )
        return time.monotonic() - started

    def restart_with_bindings(self) -> None:
        assert self.audit is not None
        progress("bindings: restarting the operator with nothing changed")
        self._operator().stop()
        mark = self.audit.mark()
        process = self.start_operator()
        deadline = time.monotonic() + 60.0 + self.count * 0.2
        reconciled = 0.0
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError):
                reconciled = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in process.metrics().splitlines()
                    if line.startswith('credbridge_reconciles_total{kind="binding"')
                )
            if reconciled >= self.count:
                break
            time.sleep(0.25)
        time.sleep(cluster._settle_seconds(self.options))
        writes = self._operator_writes(mark)
        self.record(
            Result(
                benchmark="bindings",
                name=f"API writes on operator restart ({self.count} bindings)",
                value=len(writes),
                unit="writes",
                baseline_name="target",
                baseline_value=0,
                note="every operator write in the namespace after a restart with nothing changed, from the audit log",
                details={"binding_reconciles": reconciled, "evidence": cluster._write_summary(writes)},
            )
        )


def run(options: Options, record: Record) -> None:
    """Runs the bindings scenario; stops every process it started, whatever happens."""
    if controlplane.use_existing_cluster():
        raise BenchmarkError("the bindings benchmark only runs on the local control plane")
    with scenario_workdir("bindings", "bindings") as workdir:
        scenario = BindingScenario(options, record, workdir, binding_count(options), first=False)
        try:
            scenario.start_cluster()
            scenario.create_bindings()
            scenario.change_credential()
            scenario.restart_with_bindings()
        finally:
            progress("bindings: stopping the operator and the control plane")
            scenario.stop()
