"""The Helm chart installed with `helm install`, the operator running as the chart's ServiceAccount.

There is no kubelet, so the chart's Deployment never gets a Pod (the release is installed with
`replicaCount=0`, the chart's out-of-cluster mode). The `helm_release` fixture runs `credbridge run`
as a local process instead, with the container args the chart rendered and a kubeconfig holding a
TokenRequest token of the chart's ServiceAccount: every API call the operator makes is authorized
by the chart's ClusterRole, so missing RBAC fails these tests. `webhook.url=https://127.0.0.1:<port>`
makes the chart issue its webhook certificate for 127.0.0.1 and point the webhook configuration at
the local process, which serves that certificate (read from the chart's Secret, as the Pod would
mount it).

CRDs: the session fixture has already installed crds/, which are the same files as the chart's
crds/. `helm install` runs without `--skip-crds`, the path users take: Helm finds the CRDs present
and skips them, and never manages or deletes them. That the chart's own CRD files are accepted by
the API server and agree with the installed ones is checked with a server-side dry-run apply of
`helm show crds`, which validates them without replacing what the rest of the session relies on.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from credbridge.local import controlplane, operator
from credbridge.testing import e2e, fixtures, workloads
from credbridge.testing.fixtures import TEST_LABEL, AuditLog, Namespaces, kubectl_run, wait_for

pytestmark = pytest.mark.cluster

CRDS = (
    "credentials.credbridge.io",
    "credentialshares.credbridge.io",
    "credentialtypes.credbridge.io",
    "flowisetargets.credbridge.io",
)


@dataclasses.dataclass(frozen=True)
class Release:
    """A helm release of the chart and the operator process running as its ServiceAccount."""

    name: str
    namespace: str
    service_account_user: str
    webhook_configuration: str
    cert_secret: str
    operator: operator.OperatorProcess
    team_a: str
    """The namespace the examples' team-a becomes; the release grants it the demo's variables."""
    openai_key: str = dataclasses.field(repr=False)


@pytest.fixture
def helm_release(
    control_plane: controlplane.ControlPlane,
    namespaces: Namespaces,
    run_operator: Callable[..., operator.OperatorProcess],
    tmp_path: pathlib.Path,
) -> Iterator[Release]:
    """`helm install` of the chart into a fresh namespace, and the operator running under its RBAC.

    Function-scoped so each test starts from a fresh release: the install test upgrades and
    uninstalls its release, which a shared one could not survive. Teardown uninstalls the release
    (removing its webhook configuration) before `run_operator` stops the process, so the API server
    is never left calling a webhook nobody serves.
    """
    namespace = namespaces.create("cb-e2e")
    team_a = fixtures.unique_name("team-a")
    port = controlplane.free_port()
    # The examples' CredentialBinding renders CRED_DEMO_* into a plain Secret: grant it to team-a.
    chart = e2e.install_chart(
        control_plane,
        namespace,
        port,
        values=("envPolicy[0].pattern=CRED_DEMO_*", f"envPolicy[0].namespaces={{{team_a}}}"),
    )
    try:
        certfile, keyfile = e2e.write_tls_secret(control_plane, namespace, chart.cert_secret, tmp_path / "webhook-cert")
        kubeconfig = e2e.service_account_kubeconfig(
            control_plane, namespace, chart.service_account, tmp_path / "operator.kubeconfig"
        )
        openai_key = f"sk-e2e-canary-{uuid.uuid4().hex}"
        process = run_operator(
            *e2e.local_operator_args(chart.manifests, port, certfile, keyfile, namespace),
            kubeconfig=kubeconfig,
            env={"CRED_DEMO_OPENAI_API_KEY": openai_key},
        )
        wait_for(
            lambda: e2e.webhook_answers(control_plane, namespace, TEST_LABEL),
            timeout=30,
            message="the API server to reach the operator's webhook at the chart's webhook.url",
        )
        yield Release(
            name=chart.name,
            namespace=namespace,
            service_account_user=chart.service_account_user,
            webhook_configuration=chart.webhook_configuration,
            cert_secret=chart.cert_secret,
            operator=process,
            team_a=team_a,
            openai_key=openai_key,
        )
    finally:
        e2e.helm(control_plane, "uninstall", chart.name, "-n", namespace, "--wait", check=False)


def test_helm_install_runs_the_operator_under_the_chart_rbac(
    control_plane: controlplane.ControlPlane,
    helm_release: Release,
    namespaces: Namespaces,
    audit: AuditLog,
) -> None:
    """examples/ applied with kubectl reach their documented states; upgrade and uninstall behave.

    The operator acts only as the chart's ServiceAccount: no request of it is refused (no 403 in its
    log or the audit log), and the audit log shows its writes under the ServiceAccount's name.
    """
    plane = control_plane
    mark = audit.mark()
    crds = e2e.helm(plane, "show", "crds", str(e2e.CHART_DIR)).stdout
    dry_run = kubectl_run(plane, "apply", "--server-side", "--dry-run=server", "-f", "-", input=crds)
    assert dry_run.returncode == 0, f"the chart's CRDs are not accepted by the API server:\n{dry_run.stderr}"

    examples = e2e.apply_examples(plane, namespaces, team_a=helm_release.team_a)
    team_a, team_b, expected = examples.team_a, examples.team_b, examples.expected

    def explain() -> str:
        problems = e2e.rbac_problems(helm_release.operator.logs(), audit.events(), helm_release.service_account_user)
        return (
            plane.kubectl("get", "credentials", "-n", team_a)
            + plane.kubectl("get", "credentials", "-n", team_b)
            + ("RBAC problems:\n" + "\n".join(problems[:8]) if problems else "no RBAC problems seen")
            + "\noperator log tail:\n"
            + "\n".join(helm_release.operator.logs().splitlines()[-15:])
        )

    e2e.wait_or_explain(
        lambda: e2e.examples_settled(plane, expected),
        timeout=40,
        message="the example Credentials to reach their documented states",
        explain=explain,
    )
    rows = e2e.credential_rows(plane, {team_a, team_b})
    assert set(rows) == set(expected), plane.kubectl("get", "credentials", "-A")

    def bindings_rendered() -> list[dict[str, str]] | None:
        found = e2e.table(plane.kubectl("get", "credentialbindings", "-n", team_a))
        return found if len(found) == 2 and all(row["REASON"] == "Rendered" for row in found) else None

    e2e.wait_or_explain(
        bindings_rendered,
        timeout=40,
        message="the example CredentialBindings to be rendered",
        explain=lambda: plane.kubectl("get", "credentialbindings", "-n", team_a, "-o", "yaml"),
    )
    assert e2e.kubectl_json(plane, "get", "secret", "chat-api-openai", "-n", team_a)["type"] == "Opaque"
    # A password change rolls the example Deployment out: the chart grants the patch it needs.
    plane.kubectl("patch", "secret", "orders-db", "-n", team_a, "-p", '{"stringData": {"password": "changed"}}')
    e2e.wait_or_explain(
        lambda: (
            "restartedAt"
            in plane.kubectl(
                "get", "deployment", "orders-api", "-n", team_a, "-o", "jsonpath={.spec.template.metadata}"
            )
        ),
        timeout=40,
        message="the example Deployment to be rolled out",
        explain=lambda: plane.kubectl("get", "credentialbindings", "-n", team_a, "-o", "yaml"),
    )
    assert rows[examples.mirror]["SHARED"] == "true"
    assert rows[(team_a, "production-openai")]["DISPLAY NAME"] == "Production OpenAI"

    log = helm_release.operator.logs()
    problems = e2e.rbac_problems(log, audit.events(), helm_release.service_account_user)
    assert problems == [], "the chart's ClusterRole lacks what the operator does:\n" + "\n".join(problems)
    for team in (team_a, team_b):
        writes = audit.writes(since=mark, user=helm_release.service_account_user, resources=["secrets"], namespace=team)
        assert writes, f"no Secret writes in {team} by {helm_release.service_account_user}"
    operator_writers = {
        event["user"]["username"]
        for event in audit.writes(since=mark, resources=["credentials"], namespace=team_b)
        if event.get("objectRef", {}).get("subresource") in (None, "status")
    }
    assert operator_writers == {helm_release.service_account_user}, operator_writers
    assert helm_release.openai_key not in log, "the operator logged a secret value"

    # helm upgrade with a changed value: applied, and the webhook certificate is kept, so the running
    # operator (which loaded it) still answers the API server.
    cert_before = e2e.kubectl_json(plane, "get", "secret", helm_release.cert_secret, "-n", helm_release.namespace)
    e2e.helm(
        plane,
        "upgrade",
        helm_release.name,
        str(e2e.CHART_DIR),
        "-n",
        helm_release.namespace,
        "--reuse-values",
        "--set",
        "webhook.timeoutSeconds=7",
    )
    status = json.loads(e2e.helm(plane, "status", helm_release.name, "-n", helm_release.namespace, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    configuration = e2e.kubectl_json(plane, "get", "validatingwebhookconfiguration", helm_release.webhook_configuration)
    assert [hook["timeoutSeconds"] for hook in configuration["webhooks"]] == [7, 7, 7]
    cert_after = e2e.kubectl_json(plane, "get", "secret", helm_release.cert_secret, "-n", helm_release.namespace)
    assert cert_after["data"] == cert_before["data"], "helm upgrade replaced an unchanged webhook certificate"
    assert e2e.webhook_answers(plane, team_a, TEST_LABEL), "the webhook stopped answering after helm upgrade"

    # helm uninstall: the webhook configuration and RBAC go; CRDs, Credentials and the keyring stay.
    e2e.helm(plane, "uninstall", helm_release.name, "-n", helm_release.namespace, "--wait")
    gone = kubectl_run(plane, "get", "validatingwebhookconfiguration", helm_release.webhook_configuration)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    crds_left = kubectl_run(plane, "get", "crd", *CRDS)
    assert crds_left.returncode == 0, f"helm uninstall removed CRDs:\n{crds_left.stderr}"
    assert set(e2e.credential_rows(plane, {team_a, team_b})) == set(expected)
    keyring = kubectl_run(plane, "get", "secret", "credbridge-keyring", "-n", helm_release.namespace)
    assert keyring.returncode == 0, "helm uninstall deleted the keyring Secret"


def test_webhook_denies_invalid_credential_at_apply(
    control_plane: controlplane.ControlPlane, helm_release: Release, namespace: str, audit: AuditLog
) -> None:
    """The chart's webhook, served by the operator, answers `kubectl apply` with errors and warnings."""
    invalid = e2e.credential_manifest(
        namespace,
        "typo",
        {"openAIApiKey": "<<CRED_DEMO_OPENAI_API_KEY>>", "organisationIdd": "org-123"},
        TEST_LABEL,
    )
    denied = kubectl_run(control_plane, "apply", "-f", "-", input=invalid)
    assert denied.returncode != 0, denied.stdout
    assert 'admission webhook "credentials.credbridge.io" denied the request' in denied.stderr, denied.stderr
    assert "organisationIdd" in denied.stderr and "openAIApi" in denied.stderr, denied.stderr
    assert kubectl_run(control_plane, "get", "credential", "typo", "-n", namespace).returncode != 0

    literal_value = f"sk-literal-{uuid.uuid4().hex}"
    literal = e2e.credential_manifest(namespace, "literal", {"openAIApiKey": literal_value}, TEST_LABEL)
    accepted = kubectl_run(control_plane, "apply", "-f", "-", input=literal)
    assert accepted.returncode == 0, accepted.stderr
    warnings = [line for line in accepted.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings and "openAIApiKey" in warnings[0], accepted.stderr
    assert literal_value not in accepted.stderr, "the admission warning echoed the secret value"
    problems = e2e.rbac_problems(helm_release.operator.logs(), audit.events(), helm_release.service_account_user)
    assert problems == [], "the chart's ClusterRole lacks what the operator does:\n" + "\n".join(problems)


def test_a_workload_reads_through_the_chart_endpoint_under_the_chart_rbac(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    helm_release: Release,
    namespace: str,
    audit: AuditLog,
) -> None:
    """The operator, as the chart's ServiceAccount, reviews a workload's token and its `use` permission
    (the chart's ClusterRole grants tokenreviews and subjectaccessreviews) and serves the values over
    the chart's certificate; without `use` it refuses, and the chart's roles do not grant `use`."""
    literal_value = f"sk-e2e-read-{uuid.uuid4().hex}"
    applied = kubectl_run(
        control_plane,
        "apply",
        "-f",
        "-",
        input=e2e.credential_manifest(namespace, "openai", {"openAIApiKey": literal_value}, TEST_LABEL),
    )
    assert applied.returncode == 0, applied.stderr
    wait_for(
        lambda: "Encrypted" in control_plane.kubectl("get", "credential", "openai", "-n", namespace),
        message="the Credential to be encrypted",
    )
    workloads.create_service_account(kube_api, namespace, "chat")
    token = workloads.request_token(kube_api, namespace, "chat")
    ca = base64.b64decode(
        e2e.kubectl_json(control_plane, "get", "secret", helm_release.cert_secret, "-n", helm_release.namespace)[
            "data"
        ]["ca.crt"]
    ).decode()
    reader = workloads.EndpointClient(helm_release.operator.endpoint_port, ca)
    try:
        refused = reader.read(namespace, "credentials", "openai", token)
        assert refused.status == 403 and "may not use credentials/openai" in refused.message
        # Namespace editors (Kubernetes' edit role, which aggregates the chart's) do not get `use` by default.
        client.RbacAuthorizationV1Api(kube_api).create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "alice-edit", "labels": dict(TEST_LABEL)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
            },
        )

        def alice_can(*what: str) -> str:
            return kubectl_run(control_plane, "auth", "can-i", *what, "-n", namespace, "--as", "alice").stdout.strip()

        wait_for(lambda: alice_can("create", "credentials.credbridge.io") == "yes", message="edit to aggregate")
        assert alice_can("use", "credentials.credbridge.io/openai") == "no"
        workloads.grant_use(kube_api, namespace, "chat", "credentials", ["openai"])
        allowed = reader.read(namespace, "credentials", "openai", token)
        assert allowed.status == 200, allowed.body
        assert allowed.json["data"] == {"openAIApiKey": literal_value}
    finally:
        reader.close()
    problems = e2e.rbac_problems(helm_release.operator.logs(), audit.events(), helm_release.service_account_user)
    assert problems == [], "the chart's ClusterRole lacks what the operator does:\n" + "\n".join(problems)
    assert literal_value not in helm_release.operator.logs()


def test_sealed_values_work_under_the_chart_rbac(
    control_plane: controlplane.ControlPlane,
    helm_release: Release,
    namespace: str,
    audit: AuditLog,
    impersonate: Callable[..., client.ApiClient],
) -> None:
    """The operator, as the chart's ServiceAccount, adds a sealing key pair to its keyring, publishes the
    public key in the chart's ConfigMap (which any authenticated user may read), and opens a sealed value."""
    from credbridge.core import names, sealing
    from credbridge.kube import sealingkeys
    from credbridge.testing import sealing as sealing_testing

    someone = impersonate("someone-without-roles")

    def certificate() -> tuple[str, str] | None:
        try:
            return sealingkeys.read_certificate(someone, helm_release.namespace, names.DEFAULT_SEALING_CONFIGMAP)
        except client.ApiException:
            return None

    key_id, pem = wait_for(certificate, message="the chart's operator to publish the sealing certificate")
    value = f"sk-e2e-sealed-{uuid.uuid4().hex}"
    token = sealing_testing.seal(sealing.parse_public_key_pem(pem), value, namespace, "sealed", "openAIApiKey")
    assert token.startswith(f"cbs1.{key_id}.")
    manifest = {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_KIND,
        "metadata": {"name": "sealed", "namespace": namespace, "labels": TEST_LABEL},
        "spec": {"type": "openAIApi", "sealedData": {"openAIApiKey": token}},
    }
    applied = kubectl_run(control_plane, "apply", "-f", "-", input=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    wait_for(
        lambda: "Encrypted" in control_plane.kubectl("get", "credential", "sealed", "-n", namespace),
        message="the sealed Credential to be encrypted",
    )
    assert value not in helm_release.operator.logs()
    problems = e2e.rbac_problems(helm_release.operator.logs(), audit.events(), helm_release.service_account_user)
    assert problems == [], "the chart's RBAC lacks what the operator does:\n" + "\n".join(problems)
