"""Helpers for the end-to-end tier: credbridge installed the way users install it, run as its own identity.

There is no kubelet in the local control plane, so the Deployment the chart (or deploy/install.yaml)
creates never gets a Pod. The e2e tests run `credbridge run` as a local process instead, with the
flags the Deployment would pass and a kubeconfig holding a token of the installed ServiceAccount:
the API server then authorizes every request the operator makes with the shipped ClusterRole, so a
missing RBAC rule fails a test instead of a production install. The webhook configuration points at
that local process (`webhook.url`, or a patched clientConfig for the static manifest).

The image test runs the operator from the image instead, in a container given what the chart's Pod
would get: the Deployment's args, in-cluster configuration (the ServiceAccount token, cluster CA and
namespace as files, KUBERNETES_SERVICE_HOST/PORT) and the webhook certificate where the chart
mounts it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import yaml

from credbridge.local import controlplane
from credbridge.testing import fixtures

CHART_DIR = controlplane.REPO_ROOT / "charts" / "credbridge"
DEPLOY_MANIFEST = controlplane.REPO_ROOT / "deploy" / "install.yaml"
EXAMPLES_DIR = controlplane.REPO_ROOT / "examples"

# Flags whose values only make sense inside the Pod (container ports, mounted certificate files):
# the local process gets its own free ports and the certificate written to local files instead.
PORT_FLAGS = ("--health-port", "--metrics-port", "--webhook-port", "--endpoint-port")
POD_ONLY_FLAGS = (
    *PORT_FLAGS,
    "--webhook-certfile",
    "--webhook-pkeyfile",
    "--endpoint-certfile",
    "--endpoint-pkeyfile",
    "--endpoint-cafile",
)


def helm_binary(plane: controlplane.ControlPlane) -> pathlib.Path:
    """The helm that hack/controlplane/build.sh builds; missing helm fails the test (never a skip)."""
    binaries = plane.binaries or controlplane.Binaries.locate()
    if not binaries.helm.is_file():
        pytest.fail(f"helm is not built ({binaries.helm} is missing): run `make controlplane` first")
    return binaries.helm


def helm(plane: controlplane.ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm against the control plane; with `check`, fail the test with helm's stderr on error."""
    result = subprocess.run(
        [str(helm_binary(plane)), "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=controlplane.REPO_ROOT,
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed with code {result.returncode}:\n{result.stderr}")
    return result


def kubectl_json(plane: controlplane.ControlPlane, *args: str) -> Any:
    """`kubectl ... -o json`, parsed."""
    return json.loads(plane.kubectl(*args, "-o", "json"))


def service_account_token(plane: controlplane.ControlPlane, namespace: str, service_account: str) -> str:
    """A TokenRequest token of `namespace/service_account`, valid for an hour (what a Pod is given)."""
    return plane.kubectl("create", "token", service_account, "-n", namespace, "--duration", "1h").strip()


def admin_cluster(plane: controlplane.ControlPlane) -> dict[str, Any]:
    """The cluster entry (server URL, CA data) of the admin kubeconfig, with the CA inlined."""
    admin = kubectl_json(plane, "config", "view", "--minify", "--flatten")
    return dict(admin["clusters"][0]["cluster"])


def service_account_kubeconfig(
    plane: controlplane.ControlPlane, namespace: str, service_account: str, path: pathlib.Path
) -> pathlib.Path:
    """Write a kubeconfig that authenticates as `namespace/service_account` with a TokenRequest token.

    The cluster entry (server, CA) comes from the admin kubeconfig, so this works on the local control
    plane and on an existing cluster alike; only the identity differs.
    """
    token = service_account_token(plane, namespace, service_account)
    cluster = admin_cluster(plane)
    user = f"system:serviceaccount:{namespace}:{service_account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user, "namespace": namespace}}],
        "current-context": "e2e",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2))
    return path


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where a Pod finds its ServiceAccount token, the cluster CA and its namespace (in-cluster config)."""


def service_account_volume(
    plane: controlplane.ControlPlane, namespace: str, service_account: str, directory: pathlib.Path, gid: int
) -> pathlib.Path:
    """Write the files of a Pod's kube-api-access volume (token, ca.crt, namespace) into `directory`.

    Mounted at SERVICE_ACCOUNT_DIR, they give a container the in-cluster configuration a Pod of
    `service_account` gets; the files are readable by group `gid`, as the pod's fsGroup makes them.
    """
    cluster = admin_cluster(plane)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(service_account_token(plane, namespace, service_account))
    (directory / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    (directory / "namespace").write_text(namespace)
    return readable_by_group(directory, gid)


def in_cluster_environment(plane: controlplane.ControlPlane) -> dict[str, str]:
    """KUBERNETES_SERVICE_HOST and _PORT, which a Pod gets for the API server: here its local address."""
    server = urllib.parse.urlsplit(admin_cluster(plane)["server"])
    return {"KUBERNETES_SERVICE_HOST": str(server.hostname), "KUBERNETES_SERVICE_PORT": str(server.port or 443)}


def readable_by_group(directory: pathlib.Path, gid: int) -> pathlib.Path:
    """Make `directory` and its files readable (0440) by group `gid` only, as a Pod's fsGroup does."""
    os.chown(directory, -1, gid)
    directory.chmod(0o750)
    for path in directory.iterdir():
        os.chown(path, -1, gid)
        path.chmod(0o440)
    return directory


def write_tls_secret(
    plane: controlplane.ControlPlane, namespace: str, name: str, directory: pathlib.Path
) -> tuple[pathlib.Path, pathlib.Path]:
    """Copy a kubernetes.io/tls Secret's certificate and key (and ca.crt, when present) into files, as the
    Pod would mount them."""
    data = kubectl_json(plane, "get", "secret", name, "-n", namespace)["data"]
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "tls.crt", directory / "tls.key"
    certfile.write_bytes(base64.b64decode(data["tls.crt"]))
    if data.get("ca.crt"):
        (directory / "ca.crt").write_bytes(base64.b64decode(data["ca.crt"]))
    keyfile.touch(mode=0o600)
    keyfile.write_bytes(base64.b64decode(data["tls.key"]))
    return certfile, keyfile


def container_args(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """The operator container's args from rendered manifests: the command (`run`), then its flags."""
    deployments = [obj for obj in objects if obj.get("kind") == "Deployment"]
    assert len(deployments) == 1, f"expected one Deployment in the manifests, found {len(deployments)}"
    containers = deployments[0]["spec"]["template"]["spec"]["containers"]
    args = [str(arg) for arg in containers[0].get("args", [])]
    assert args[:1] == ["run"], f"the operator container's args must start with the command `run`: {args}"
    return args


def deployment_args(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flags of the operator container's `run`, minus the flags that only fit the Pod."""
    return [arg for arg in container_args(objects)[1:] if arg.split("=", 1)[0] not in POD_ONLY_FLAGS]


def load_manifests(text: str) -> list[dict[str, Any]]:
    """Every object of a multi-document YAML text."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def examples(renames: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """examples/*.yaml in file order, with namespace names replaced and `labels` on every object.

    The examples use fixed namespaces (team-a, team-b); renaming them — in `metadata.namespace`,
    namespace names and the accept-shares-from annotation alike — lets each test apply them into
    namespaces no other test uses, without editing the files users copy.
    """
    pattern = re.compile(r"\b(" + "|".join(re.escape(old) for old in renames) + r")\b")
    documents: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        text = pattern.sub(lambda match: renames[match.group(1)], path.read_text())
        for document in load_manifests(text):
            metadata = document.setdefault("metadata", {})
            metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
            documents.append(document)
    return yaml.safe_dump_all(documents, sort_keys=False)


def table(output: str) -> list[dict[str, str]]:
    """Rows of a kubectl table, keyed by column header; columns are cut where the headers start.

    kubectl aligns columns with a tab writer, so each header starts where its column does; cutting
    by position keeps values with spaces (`Production OpenAI`) in one cell.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [match.start() for match in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    names = [header[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
    rows = []
    for line in lines[1:]:
        cells = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def credential_manifest(
    namespace: str, name: str, data: Mapping[str, str], labels: Mapping[str, str], type_name: str = "openAIApi"
) -> str:
    """A Credential as a user would write it, as YAML for `kubectl apply -f -`."""
    return yaml.safe_dump(
        {
            "apiVersion": "credbridge.io/v1alpha1",
            "kind": "Credential",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"type": type_name, "data": dict(data)},
        }
    )


def webhook_answers(plane: controlplane.ControlPlane, namespace: str, labels: Mapping[str, str]) -> bool:
    """True once the API server can call the Credential webhook: a server-side dry run gets through.

    A dry run passes through admission (so through the webhook, TLS and caBundle included) but
    stores nothing.
    """
    probe = credential_manifest(namespace, "webhook-probe", {"openAIApiKey": "<<CRED_E2E_PROBE>>"}, labels)
    result = fixtures.kubectl_run(plane, "apply", "--dry-run=server", "-f", "-", input=probe)
    return result.returncode == 0


_DENIAL = re.compile(r"(?i)\bforbidden\b|\b403\b")
_WORKLOAD_READ = "workload read of "


def rbac_problems(log: str, audit_events: Sequence[Mapping[str, Any]], user: str) -> list[str]:
    """Signs that `user`'s RBAC is missing something, from its log and the API server's audit log.

    The audit log says for each audited request whether RBAC allowed it
    (`authorization.k8s.io/decision`), so a refused write is reported precisely. Reads
    (get/list/watch) are not audited here, so the operator's log is scanned too for 403s — except
    those the audit log explains as refused by admission after RBAC allowed them: an Event posted
    into a namespace that is being deleted gets 403 NamespaceTerminating, which no RBAC rule fixes.
    """
    problems = []
    explained: set[str] = set()
    for event in audit_events:
        if (event.get("user") or {}).get("username") != user:
            continue
        ref = event.get("objectRef") or {}
        decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
        if decision == "forbid":
            subresource = f"/{ref['subresource']}" if ref.get("subresource") else ""
            where = f" in namespace {ref['namespace']}" if ref.get("namespace") else ""
            group = ref.get("apiGroup") or "core"
            problems.append(f"audit: {event.get('verb')} {group}/{ref.get('resource')}{subresource}{where} denied")
        elif int((event.get("responseStatus") or {}).get("code", 0)) == 403 and ref.get("namespace"):
            explained.add(str(ref["namespace"]))
    for line in log.splitlines():
        if _WORKLOAD_READ in line:
            continue  # the read endpoint reporting a refusal it gave a caller, not one the operator got
        if _DENIAL.search(line) and not any(f"{namespace}/" in line for namespace in explained):
            problems.append(f"log: {line[:400]}")
    return problems


def wait_or_explain(
    predicate: Callable[[], Any], *, timeout: float, message: str, explain: Callable[[], str], interval: float = 0.5
) -> Any:
    """Poll `predicate` like `fixtures.wait_for`; on timeout fail with `explain()`, the state that tells why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {message}\n{explain()}")


def local_operator_args(
    manifests: Sequence[Mapping[str, Any]],
    webhook_port: int,
    certfile: pathlib.Path,
    keyfile: pathlib.Path,
    operator_namespace: str,
    *,
    endpoint_port: int | None = None,
) -> list[str]:
    """The Deployment's own args, with the webhook and endpoints moved to 127.0.0.1 for a local run.

    The workload read endpoint serves the same certificate as the webhook (as in the Pod), on
    `endpoint_port` (default: a free port); the CA is the `ca.crt` next to `certfile` when there is one.
    """
    cafile = certfile.with_name("ca.crt")
    endpoint = [
        "--endpoint-port",
        str(endpoint_port or controlplane.free_port()),
        "--endpoint-certfile",
        str(certfile),
        "--endpoint-pkeyfile",
        str(keyfile),
        *(["--endpoint-cafile", str(cafile)] if cafile.exists() else []),
    ]
    return [
        *deployment_args(manifests),
        *endpoint,
        "--webhook-port",
        str(webhook_port),
        "--webhook-certfile",
        str(certfile),
        "--webhook-pkeyfile",
        str(keyfile),
        "--bind-address",
        "127.0.0.1",
        "--operator-namespace",
        operator_namespace,
    ]


def container_operator_args(
    manifests: Sequence[Mapping[str, Any]],
    health_port: int,
    metrics_port: int,
    webhook_port: int,
    endpoint_port: int | None = None,
) -> list[str]:
    """The Deployment's args for the operator in a container on the host's network.

    Everything stays as the chart rendered it, the certificate paths included (the test mounts the
    certificate there), except the container ports: on the host's network they become free host
    ports, served on 127.0.0.1 only.
    """
    args = [arg for arg in container_args(manifests) if arg.split("=", 1)[0] not in PORT_FLAGS]
    return [
        *args,
        f"--health-port={health_port}",
        f"--metrics-port={metrics_port}",
        f"--webhook-port={webhook_port}",
        f"--endpoint-port={endpoint_port or controlplane.free_port()}",
        "--bind-address=127.0.0.1",
    ]


@dataclasses.dataclass(frozen=True)
class ChartInstall:
    """A `helm install` of the chart with no operator Pod (replicaCount=0) and its webhook at a local URL."""

    name: str
    namespace: str
    manifests: list[dict[str, Any]]
    service_account: str
    cert_secret: str
    """The kubernetes.io/tls Secret holding the webhook's serving certificate (mounted into the Pod)."""
    webhook_configuration: str

    @property
    def service_account_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def install_chart(
    plane: controlplane.ControlPlane, namespace: str, webhook_port: int, *, values: Sequence[str] = ()
) -> ChartInstall:
    """`helm install` the chart into `namespace`, its webhook at https://127.0.0.1:`webhook_port`.

    `webhook.url` makes the chart issue its certificate for 127.0.0.1 and point the webhook
    configuration at that address, where the test serves it. `values` are more `--set` values.
    Uninstall with `helm uninstall`.
    """
    name = fixtures.unique_name("credbridge-e2e")
    helm(
        plane,
        "install",
        name,
        str(CHART_DIR),
        "--namespace",
        namespace,
        "--set",
        "replicaCount=0",
        "--set",
        f"webhook.url=https://127.0.0.1:{webhook_port}",
        *(argument for value in values for argument in ("--set", value)),
    )
    manifests = load_manifests(helm(plane, "get", "manifest", name, "-n", namespace).stdout)
    (service_account,) = (obj["metadata"]["name"] for obj in manifests if obj["kind"] == "ServiceAccount")
    (cert_secret,) = (
        obj["metadata"]["name"]
        for obj in manifests
        if obj["kind"] == "Secret" and obj.get("type") == "kubernetes.io/tls"
    )
    (webhook_configuration,) = (
        obj["metadata"]["name"] for obj in manifests if obj["kind"] == "ValidatingWebhookConfiguration"
    )
    return ChartInstall(name, namespace, manifests, service_account, cert_secret, webhook_configuration)


def credential_rows(plane: controlplane.ControlPlane, namespaces: set[str]) -> dict[tuple[str, str], dict[str, str]]:
    """`kubectl get credentials -A`, as a user reads it, keyed by (namespace, name)."""
    output = plane.kubectl("get", "credentials", "-A")
    return {(row["NAMESPACE"], row["NAME"]): row for row in table(output) if row["NAMESPACE"] in namespaces}


@dataclasses.dataclass(frozen=True)
class AppliedExamples:
    """examples/ as applied into two fresh namespaces, and the state each Credential should reach."""

    team_a: str
    team_b: str
    expected: dict[tuple[str, str], tuple[str, str]]
    """(namespace, name) -> (READY, REASON) as `kubectl get credentials` shows them."""

    @property
    def mirror(self) -> tuple[str, str]:
        """The mirror of team-a's production-openai in team-b, made by the example CredentialShare."""
        return (self.team_b, f"{self.team_a}.production-openai")


def apply_examples(
    plane: controlplane.ControlPlane, namespaces: fixtures.Namespaces, *, team_a: str | None = None
) -> AppliedExamples:
    """`kubectl apply` examples/ into two fresh namespaces (deleted with `namespaces`).

    The documented states assume CRED_DEMO_OPENAI_API_KEY is set in the operator's environment and
    CRED_DEMO_ANTHROPIC_KEY is not. `team_a` names the namespace team-a becomes (one the operator's
    env policy already grants, say); by default a fresh name.
    """
    team_a, team_b = team_a or fixtures.unique_name("team-a"), fixtures.unique_name("team-b")
    namespaces.created += [team_a, team_b]
    applied = fixtures.kubectl_run(
        plane, "apply", "-f", "-", input=examples({"team-a": team_a, "team-b": team_b}, fixtures.TEST_LABEL)
    )
    assert applied.returncode == 0, f"kubectl apply of examples/ failed:\n{applied.stderr}"
    expected = {
        (team_a, "production-openai"): ("True", "Encrypted"),
        (team_a, "orders-postgres"): ("True", "Encrypted"),
        (team_a, "staging-anthropic"): ("False", "EnvReferenceMissing"),
        (team_a, "team-gmail"): ("True", "Encrypted"),
        (team_b, f"{team_a}.production-openai"): ("True", "Encrypted"),
    }
    return AppliedExamples(team_a, team_b, expected)


def examples_settled(
    plane: controlplane.ControlPlane, expected: Mapping[tuple[str, str], tuple[str, str]]
) -> dict[tuple[str, str], dict[str, str]] | None:
    """The Credential rows once every example is in its documented state, else None."""
    rows = credential_rows(plane, {namespace for namespace, _ in expected})
    states = {key: (row.get("READY"), row.get("REASON")) for key, row in rows.items()}
    return rows if all(states.get(key) == state for key, state in expected.items()) else None
