"""Benchmark of the Flowise bridge against a real Flowise: Credentials pushed per second.

The scenario, on a fresh local control plane, PostgreSQL and Flowise (the `flowise` npm package):

1. create N Credentials and wait until every one is Ready (not timed: that is the `reconcile`
   benchmark);
2. baseline: the same HTTP client credbridge uses (`credbridge.flowise.client`) posts the same N
   payloads (same ids, names, types and values) straight to Flowise, one after the other, then
   deletes them again;
3. create a FlowiseTarget and time from its creation until its status counts N synced: the
   operator notices the target, claims the ids, decrypts every Credential, pushes it and writes
   the status;
4. wait for two periodic resyncs with nothing changed and count the writes to Flowise and to the
   target's status (target: 0).

Flowise writes are read from the operator's metrics, status writes from the audit log.
"""

from __future__ import annotations

import pathlib
import secrets
import shutil
import tempfile
import time
import uuid
from typing import Any

from kubernetes import client

from benchmarks import BenchmarkError, Options, Record, Result, progress
from credbridge.core import names
from credbridge.flowise import client as flowise_client
from credbridge.kube import connecting
from credbridge.local import controlplane, operator
from credbridge.local import flowise as local_flowise
from credbridge.testing import fixtures, objects
from credbridge.testing import flowise as flowise_testing

NAMES = ("flowise-push", "flowise-resync")
NAMESPACE = "bench-flowise"
RESYNC_SECONDS = 5.0


def credential_count(options: Options) -> int:
    return 30 if options.quick else 200


FLOWISE_RECONCILES = 'credbridge_reconciles_total{kind="flowise"'
"""Prefix of the reconcile counter's series for FlowiseTargets (one reconcile = one sync)."""


def _metric(text: str, name: str) -> float:
    """Sum of the series whose line starts with `name` (a metric name, or a name with the start of its labels)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " ") or (name.endswith('"') and line.startswith(name)):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(options: Options, record: Record) -> None:
    """Runs the Flowise scenario; stops every process it started, whatever happens."""
    if controlplane.use_existing_cluster():
        raise BenchmarkError("the Flowise benchmark only runs on the local control plane")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-bench-flowise-"))
    count = credential_count(options)
    plane = postgres = flowise = process = None
    try:
        progress("flowise: starting the control plane, PostgreSQL and Flowise")
        plane = controlplane.start(workdir / "controlplane")
        postgres = local_flowise.PostgresServer.start()
        flowise = local_flowise.start_flowise(workdir / "flowise", postgres)
        api = connecting.api_client(str(plane.kubeconfig), as_user="credbridge-bench", as_group="system:masters")
        for namespace in ("credbridge-system", NAMESPACE):
            client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        process = operator.start(
            plane.kubeconfig,
            workdir / "operator.log",
            args=["--operator-namespace", "credbridge-system", "--flowise-resync", str(RESYNC_SECONDS)],
        )
        payloads = _create_credentials(api, count)
        assert flowise.api_key is not None
        direct = flowise_client.FlowiseClient(flowise.url, flowise.api_key)
        progress(f"flowise: baseline, the same client posting {count} credentials directly")
        started = time.perf_counter()
        for payload in payloads:
            direct.put_credential(payload)
        baseline_seconds = time.perf_counter() - started
        for payload in payloads:
            direct.delete_credential(payload["id"])

        progress(f"flowise: credbridge pushing {count} credentials through a FlowiseTarget")
        flowise_testing.create_api_key_secret(api, NAMESPACE, "flowise-key", flowise.api_key.reveal())
        audit = fixtures.AuditLog(plane.audit_log)
        mark = audit.mark()
        started = time.perf_counter()
        flowise_testing.create_target(api, NAMESPACE, flowise_testing.target_body("bench", flowise.url, "flowise-key"))
        objects.wait_until(
            lambda: (
                ((flowise_testing.get_target(api, NAMESPACE, "bench") or {}).get("status") or {})
                .get("counts", {})
                .get("synced")
                == count
            ),
            timeout=600,
            what=f"{count} credentials synced",
        )
        push_seconds = time.perf_counter() - started
        listed = {item.id for item in direct.list_credentials()}
        if not {payload["id"] for payload in payloads} <= listed:
            raise BenchmarkError("the target reported synced credentials that Flowise does not list")
        status_writes = len(audit.writes(since=mark, resources=["flowisetargets"], namespace=NAMESPACE))
        pushes = _metric(process.metrics(), "credbridge_flowise_writes_total")
        record(
            Result(
                benchmark="flowise-push",
                name="flowise-push",
                value=count / push_seconds,
                unit="credentials/s",
                baseline_name="same client posting directly",
                baseline_value=count / baseline_seconds,
                note=(
                    f"{count} Credentials from FlowiseTarget creation to status synced (claim, decrypt, push, status) "
                    f"vs the same HTTP client posting the same payloads one by one; {pushes:.0f} Flowise writes, "
                    f"{status_writes} target writes"
                ),
                details={
                    "count": count,
                    "push_seconds": push_seconds,
                    "baseline_seconds": baseline_seconds,
                    "flowise_writes": pushes,
                    "target_writes": status_writes,
                },
            )
        )
        if options.wants("flowise-resync"):
            progress("flowise: two periodic resyncs with nothing changed")
            mark = audit.mark()
            before = _metric(process.metrics(), "credbridge_flowise_writes_total")
            syncs_before = _metric(process.metrics(), FLOWISE_RECONCILES)
            time.sleep(2 * RESYNC_SECONDS + 2)
            writes = _metric(process.metrics(), "credbridge_flowise_writes_total") - before
            syncs = _metric(process.metrics(), FLOWISE_RECONCILES) - syncs_before
            status = len(audit.writes(since=mark, resources=["flowisetargets"], namespace=NAMESPACE))
            record(
                Result(
                    benchmark="flowise-resync",
                    name="flowise-resync",
                    value=writes + status,
                    unit="writes",
                    baseline_name="target (nothing changed)",
                    baseline_value=0,
                    note=f"{syncs:.0f} resyncs of {count} synced Credentials: Flowise writes + target status writes",
                    details={"flowise_writes": writes, "status_writes": status, "syncs": syncs},
                )
            )
    except (controlplane.ControlPlaneError, local_flowise.LocalFlowiseError) as error:
        raise BenchmarkError(str(error)) from error
    finally:
        progress("flowise: stopping everything")
        if process is not None:
            process.stop()
        if flowise is not None:
            flowise.stop_process()
        if postgres is not None:
            postgres.stop()
        if plane is not None:
            plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _create_credentials(api: client.ApiClient, count: int) -> list[dict[str, Any]]:
    """N Ready Credentials; returns the payloads Flowise should end up with."""
    payloads = []
    for index in range(count):
        credential_id = str(uuid.uuid4())
        value = "sk-bench-" + secrets.token_hex(16)
        body = objects.credential_body(
            f"openai-{index:04d}", "openAIApi", {"openAIApiKey": value}, spec_extra={"id": credential_id}
        )
        objects.create_credential(api, NAMESPACE, body)
        payloads.append(
            {
                "id": credential_id,
                "name": f"openai-{index:04d}",
                "credentialName": "openAIApi",
                "plainDataObj": {"openAIApiKey": value},
            }
        )
    objects.wait_until(
        lambda: (
            all(
                objects.ready(item) and objects.ready(item).get("status") == "True"  # type: ignore[union-attr]
                for item in client.CustomObjectsApi(api).list_namespaced_custom_object(
                    names.GROUP, names.VERSION, NAMESPACE, names.CREDENTIAL_PLURAL
                )["items"]
            )
            and len(
                client.CustomObjectsApi(api).list_namespaced_custom_object(
                    names.GROUP, names.VERSION, NAMESPACE, names.CREDENTIAL_PLURAL
                )["items"]
            )
            == count
        ),
        timeout=300,
        what=f"{count} Credentials Ready",
    )
    return payloads
