"""The operator image, run the way the chart's Pod runs it, against the local control plane.

`make image` builds the image (buildah, no Docker daemon); these tests run the image users deploy,
not the checkout. The chart is installed with `helm install` (no Pod: there is no kubelet), and
the image's entrypoint runs with the Deployment's own args, in a container on the host's network
(credbridge.local.image), given what a Pod of the chart would get:

- in-cluster configuration: KUBERNETES_SERVICE_HOST/PORT and the ServiceAccount's TokenRequest
  token, the cluster CA and the namespace mounted at /var/run/secrets/kubernetes.io/serviceaccount;
- POD_NAMESPACE, the webhook certificate from the chart's Secret at the path the chart mounts it,
  and a writable /tmp (the chart's emptyDir);
- the chart's securityContext: the image's numeric non-root user, no capabilities, no privilege
  escalation, a read-only root filesystem; and no shell (they are hidden), since the image must not
  need one. Not reproduced: seccomp and resource limits (see credbridge.local.image).

The examples then reach their documented states, with every API request authorized by the chart's
ClusterRole.
"""

from __future__ import annotations

import pathlib
import uuid

import pytest

from credbridge.local import controlplane, image
from credbridge.testing import e2e
from credbridge.testing.fixtures import TEST_LABEL, AuditLog, Namespaces, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def operator_image() -> image.ImageConfig:
    """The image `make image` built from the current sources; not built is a failure, never a skip."""
    try:
        return image.inspect(image.locate())
    except image.ImageError as error:
        pytest.fail(str(error))


def test_image_runs_credbridge_as_a_numeric_non_root_user(operator_image: image.ImageConfig) -> None:
    """The kubelet can check runAsNonRoot (numeric ids), and the chart's args reach `credbridge`."""
    assert operator_image.uid != 0 and operator_image.gid != 0, operator_image.user
    assert operator_image.entrypoint == ("credbridge",), operator_image.entrypoint
    assert operator_image.cmd == ("run",), operator_image.cmd


def test_operator_from_the_image_runs_the_examples_under_the_chart(
    control_plane: controlplane.ControlPlane,
    operator_image: image.ImageConfig,
    namespaces: Namespaces,
    audit: AuditLog,
    tmp_path: pathlib.Path,
) -> None:
    """The image's operator, as the chart's ServiceAccount, makes the examples Ready; stops on SIGTERM.

    While it runs, /proc shows the image's user and group, no capabilities, no_new_privs and a
    read-only root.
    """
    plane = control_plane
    namespace = namespaces.create("cb-image")
    health_port, metrics_port, webhook_port = (controlplane.free_port() for _ in range(3))
    chart = e2e.install_chart(plane, namespace, webhook_port)
    try:
        args = e2e.container_operator_args(chart.manifests, health_port, metrics_port, webhook_port)
        (certfile,) = (arg.split("=", 1)[1] for arg in args if arg.startswith("--webhook-certfile="))
        cert_dir = tmp_path / "webhook-cert"
        e2e.write_tls_secret(plane, namespace, chart.cert_secret, cert_dir)
        e2e.readable_by_group(cert_dir, operator_image.gid)
        service_account_dir = e2e.service_account_volume(
            plane, namespace, chart.service_account, tmp_path / "serviceaccount", operator_image.gid
        )
        writable_tmp = tmp_path / "tmp"
        writable_tmp.mkdir()
        writable_tmp.chmod(0o1777)
        openai_key = f"sk-e2e-canary-{uuid.uuid4().hex}"
        mark = audit.mark()
        process = image.start(
            operator_image,
            args,
            tmp_path / "operator.log",
            env={
                **e2e.in_cluster_environment(plane),
                "POD_NAMESPACE": namespace,
                "CRED_DEMO_OPENAI_API_KEY": openai_key,
            },
            volumes={
                e2e.SERVICE_ACCOUNT_DIR: service_account_dir,
                str(pathlib.PurePosixPath(certfile).parent): cert_dir,
            },
            empty_dirs={"/tmp": writable_tmp},
            health_port=health_port,
            metrics_port=metrics_port,
            webhook_port=webhook_port,
        )
        try:
            pid = process.program_pid()
            assert pid is not None, "the operator's process is not found under `buildah run`"
            who = image.identity(pid)
            assert set(who.uids) == {operator_image.uid}, f"the operator runs as uids {who.uids}"
            assert set(who.gids) == {operator_image.gid}, f"the operator runs as gids {who.gids}"
            assert who.groups == (), f"the operator has supplementary groups {who.groups}"
            assert who.effective_capabilities == 0, f"the operator holds capabilities {who.effective_capabilities:#x}"
            assert who.no_new_privs, "the operator could gain privileges (no_new_privs is not set)"
            assert "ro" in who.root_options, f"the root filesystem is mounted {sorted(who.root_options)}"

            wait_for(
                lambda: e2e.webhook_answers(plane, namespace, TEST_LABEL),
                timeout=30,
                message="the API server to reach the operator's webhook at the chart's webhook.url",
            )
            examples = e2e.apply_examples(plane, namespaces)

            def explain() -> str:
                problems = e2e.rbac_problems(process.logs(), audit.events(), chart.service_account_user)
                return (
                    plane.kubectl("get", "credentials", "-A")
                    + ("RBAC problems:\n" + "\n".join(problems[:8]) if problems else "no RBAC problems seen")
                    + "\noperator log tail:\n"
                    + "\n".join(process.logs().splitlines()[-15:])
                )

            e2e.wait_or_explain(
                lambda: e2e.examples_settled(plane, examples.expected),
                timeout=60,
                message="the example Credentials to reach their documented states",
                explain=explain,
            )
            rows = e2e.credential_rows(plane, {examples.team_a, examples.team_b})
            assert rows[examples.mirror]["SHARED"] == "true"

            log = process.logs()
            problems = e2e.rbac_problems(log, audit.events(), chart.service_account_user)
            assert problems == [], "the chart's ClusterRole lacks what the operator does:\n" + "\n".join(problems)
            writes = audit.writes(
                since=mark, user=chart.service_account_user, resources=["secrets"], namespace=examples.team_a
            )
            assert writes, f"no Secret writes in {examples.team_a} by {chart.service_account_user}"
            assert openai_key not in log, "the operator logged a secret value"
        finally:
            exit_code = process.stop()
        assert exit_code == 0, "the operator did not exit cleanly on SIGTERM:\n" + "\n".join(
            process.logs().splitlines()[-15:]
        )
    finally:
        e2e.helm(plane, "uninstall", chart.name, "-n", namespace, "--wait", check=False)
