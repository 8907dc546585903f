"""The static manifest deploy/install.yaml applied with kubectl, the operator running as its ServiceAccount.

`kubectl apply --server-side -f deploy/install.yaml` is how clusters without Helm install credbridge.
It creates the fixed namespace credbridge-system, so this test is idempotent rather than unique:
`--force-conflicts` lets a re-run (or a cluster where the session already applied the same CRDs)
take the fields over, and everything it installs is left in place for the next run except the
webhook configuration (see below). The CRDs in the manifest are the session's CRDs, so applying
them changes nothing.

The webhook: the manifest's ValidatingWebhookConfiguration points at the Service, which the local
API server cannot reach, and its certificate is only valid for the Service's DNS names. Rather than
delete it and run without a webhook, the test keeps the manifest's webhook rules (resources,
operations, paths, failure policies, selectors) and patches only each webhook's clientConfig to
`https://127.0.0.1:<port><path>` with the caBundle of a CA made here (credbridge.tls), whose
serving certificate the local operator is given. The Credential below is then admitted by the
static manifest's own webhook configuration. The configuration is deleted at teardown, before the
operator stops: with failurePolicy Fail and nothing serving it, it would refuse every Credential
write in the rest of the session.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import uuid
from collections.abc import Callable, Iterator

import pytest

from credbridge import tls
from credbridge.local import controlplane, operator
from credbridge.testing import e2e
from credbridge.testing.fixtures import TEST_LABEL, AuditLog, kubectl_run, wait_for

pytestmark = pytest.mark.cluster

NAMESPACE = "credbridge-system"


@dataclasses.dataclass(frozen=True)
class StaticInstall:
    """deploy/install.yaml as applied, and the operator running as its ServiceAccount."""

    objects: list[dict[str, object]]
    service_account_user: str
    operator: operator.OperatorProcess
    key: str = dataclasses.field(repr=False)


def point_webhooks_at(plane: controlplane.ControlPlane, name: str, base_url: str, ca_bundle: bytes) -> None:
    """Replace each webhook's Service clientConfig by `base_url` followed by that webhook's path."""
    configuration = e2e.kubectl_json(plane, "get", "validatingwebhookconfiguration", name)
    patch = [
        {
            "op": "replace",
            "path": f"/webhooks/{index}/clientConfig",
            "value": {
                "url": base_url + hook["clientConfig"]["service"]["path"],
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
        }
        for index, hook in enumerate(configuration["webhooks"])
    ]
    plane.kubectl("patch", "validatingwebhookconfiguration", name, "--type=json", "-p", json.dumps(patch))


@pytest.fixture
def static_install(
    control_plane: controlplane.ControlPlane,
    run_operator: Callable[..., operator.OperatorProcess],
    tmp_path: pathlib.Path,
) -> Iterator[StaticInstall]:
    """Apply deploy/install.yaml, aim its webhook at a local operator running as its ServiceAccount."""
    objects = e2e.load_manifests(e2e.DEPLOY_MANIFEST.read_text())
    (webhook_configuration,) = (
        obj["metadata"]["name"] for obj in objects if obj["kind"] == "ValidatingWebhookConfiguration"
    )
    (service_account,) = (obj["metadata"]["name"] for obj in objects if obj["kind"] == "ServiceAccount")
    try:
        applied = kubectl_run(
            control_plane, "apply", "--server-side", "--force-conflicts", "-f", str(e2e.DEPLOY_MANIFEST)
        )
        assert applied.returncode == 0, f"kubectl apply of {e2e.DEPLOY_MANIFEST} failed:\n{applied.stderr}"

        port = controlplane.free_port()
        ca = tls.make_ca("credbridge-e2e-webhook-ca")
        certfile, keyfile = tls.issue(ca, "127.0.0.1", hosts=["127.0.0.1"]).write(tmp_path / "webhook", "tls")
        point_webhooks_at(control_plane, webhook_configuration, f"https://127.0.0.1:{port}", ca.cert_pem)

        kubeconfig = e2e.service_account_kubeconfig(
            control_plane, NAMESPACE, service_account, tmp_path / "operator.kubeconfig"
        )
        key = f"sk-e2e-canary-{uuid.uuid4().hex}"
        process = run_operator(
            *e2e.local_operator_args(objects, port, certfile, keyfile, NAMESPACE),
            kubeconfig=kubeconfig,
            env={"CRED_E2E_DEPLOY_OPENAI": key},
        )
        yield StaticInstall(
            objects=objects,
            service_account_user=f"system:serviceaccount:{NAMESPACE}:{service_account}",
            operator=process,
            key=key,
        )
    finally:
        kubectl_run(
            control_plane, "delete", "validatingwebhookconfiguration", webhook_configuration, "--ignore-not-found"
        )


def test_kubectl_apply_of_deploy_manifest(
    control_plane: controlplane.ControlPlane, static_install: StaticInstall, namespace: str, audit: AuditLog
) -> None:
    """Every object of deploy/install.yaml is accepted, and its RBAC and webhook serve a Credential."""
    plane = control_plane
    listed = kubectl_run(plane, "get", "-f", str(e2e.DEPLOY_MANIFEST), "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.split()) == len(static_install.objects), listed.stdout
    kinds = {str(obj["kind"]) for obj in static_install.objects}
    assert {"CustomResourceDefinition", "ClusterRole", "ValidatingWebhookConfiguration", "Deployment"} <= kinds

    wait_for(
        lambda: e2e.webhook_answers(plane, namespace, TEST_LABEL),
        timeout=30,
        message="the API server to reach the operator through the static manifest's webhook configuration",
    )
    typo = e2e.credential_manifest(namespace, "typo", {"openAIApiKeyy": "<<CRED_E2E_DEPLOY_OPENAI>>"}, TEST_LABEL)
    denied = kubectl_run(plane, "apply", "-f", "-", input=typo)
    assert denied.returncode != 0 and "openAIApiKeyy" in denied.stderr, denied.stderr

    manifest = e2e.credential_manifest(namespace, "openai", {"openAIApiKey": "<<CRED_E2E_DEPLOY_OPENAI>>"}, TEST_LABEL)
    applied = kubectl_run(plane, "apply", "-f", "-", input=manifest)
    assert applied.returncode == 0, applied.stderr

    def ready() -> dict[str, str] | None:
        rows = e2e.table(plane.kubectl("get", "credentials", "-n", namespace))
        row = next((row for row in rows if row["NAME"] == "openai"), None)
        return row if row and (row["READY"], row["REASON"]) == ("True", "Encrypted") else None

    e2e.wait_or_explain(
        ready,
        timeout=30,
        message=f"Credential {namespace}/openai to be Ready",
        explain=lambda: (
            plane.kubectl("get", "credentials", "-n", namespace, "-o", "wide")
            + "\n".join(
                e2e.rbac_problems(static_install.operator.logs(), audit.events(), static_install.service_account_user)
            )
        ),
    )
    secret_name = plane.kubectl("get", "credential", "openai", "-n", namespace, "-o", "jsonpath={.status.secretName}")
    secret = e2e.kubectl_json(plane, "get", "secret", secret_name, "-n", namespace)
    stored = b"".join(base64.b64decode(value) for value in secret["data"].values())
    assert static_install.key.encode() not in stored, "the managed Secret holds the value in plain text"
    assert audit.writes(user=static_install.service_account_user, resources=["secrets"], namespace=namespace)

    problems = e2e.rbac_problems(static_install.operator.logs(), audit.events(), static_install.service_account_user)
    assert problems == [], "deploy/install.yaml's ClusterRole lacks what the operator does:\n" + "\n".join(problems)
