"""Backup and restore of the keys behind sealed values (Sealed Secrets' weak spot), as docs/operations.md
tells it: export a bundle, lose the installation, reinstall, import, and every sealed Credential is Ready with
its values; and a GitOps repository of sealed manifests applied to a fresh cluster with a restored bundle."""

from __future__ import annotations

import pathlib
import secrets
import uuid
from collections.abc import Callable

import pytest
import yaml
from kubernetes import client

from credbridge.core import names
from credbridge.kube import fetching
from credbridge.local import controlplane, operator
from credbridge.testing import objects
from credbridge.testing import sealing as sealing_testing
from credbridge.testing.fixtures import TEST_LABEL, kubectl_run

pytestmark = pytest.mark.cluster

SECRET_FIELDS = ("openAIApiKey", "redisCachePwd")
PASSPHRASE = "restore drill " + secrets.token_hex(8)
VALUES = {
    "openai": ("openAIApi", {"openAIApiKey": "sk-restore-" + secrets.token_hex(10)}),
    "cache": (
        "redisCacheApi",
        {"redisCacheUser": "app", "redisCachePwd": "pw-" + secrets.token_hex(10), "redisCacheSslEnabled": "true"},
    ),
}


def write_repo(repo: pathlib.Path, namespace: str) -> pathlib.Path:
    """A GitOps directory: the namespace and Credentials with plain values (to be sealed)."""
    repo.mkdir(parents=True)
    (repo / "00-namespace.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": TEST_LABEL}})
    )
    plain = repo.parent / f"{repo.name}-plain.yaml"
    plain.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": names.CREDENTIAL_KIND,
                    "metadata": {"name": name, "namespace": namespace, "labels": TEST_LABEL},
                    "spec": {"type": type_name, "data": data},
                }
                for name, (type_name, data) in VALUES.items()
            ]
        )
    )
    return plain


def seal_into(kubeconfig: pathlib.Path, plain: pathlib.Path, output: pathlib.Path, operator_namespace: str) -> None:
    sealed = sealing_testing.run_cli(
        kubeconfig, "seal", "-f", str(plain), "-o", str(output), "--operator-namespace", operator_namespace
    )
    assert sealed.returncode == 0, sealed.stderr
    text = output.read_text()
    secret_values = [data[field] for _, data in VALUES.values() for field in data if field in SECRET_FIELDS]
    assert "sealedData" in text and not any(value in text for value in secret_values)
    plain.unlink()  # the plaintext never stays: the repository holds the sealed manifests only


def wait_gone(api: client.ApiClient, *namespaces: str) -> None:
    for namespace in namespaces:
        try:
            client.CoreV1Api(api).delete_namespace(namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise
    objects.wait_until(
        lambda: all(fetching.read_namespace(api, namespace) is None for namespace in namespaces),
        240,
        f"namespaces {', '.join(namespaces)} to be deleted",
    )


def assert_restored(api: client.ApiClient, namespace: str, operator_namespace: str) -> None:
    for name, (_, data) in VALUES.items():
        objects.wait_for_reason(api, namespace, name, "Encrypted", timeout=90)
        opened = objects.open_managed_secret(api, namespace, name, operator_namespace)
        assert {field: opened[field] for field in data} == data


def start_operator(
    run_operator: Callable[..., operator.OperatorProcess],
    kubeconfig: pathlib.Path,
    operator_namespace: str,
    served: str,
) -> operator.OperatorProcess:
    return run_operator(
        "--operator-namespace", operator_namespace, "--namespace", served, "--webhook-port", "0",
        "--endpoint-port", "0", kubeconfig=kubeconfig,
    )  # fmt: skip


def test_export_uninstall_reinstall_import_and_every_sealed_credential_is_ready_again(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    run_operator: Callable[..., operator.OperatorProcess],
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    operator_namespace, served = f"restore-op-{suffix}", f"restore-apps-{suffix}"
    cli = lambda *argv: sealing_testing.run_cli(  # noqa: E731
        control_plane.kubeconfig, *argv, "--operator-namespace", operator_namespace
    )
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    kubectl_run(control_plane, "create", "namespace", operator_namespace)
    try:
        first = start_operator(run_operator, operator_kubeconfig, operator_namespace, served)
        repo = tmp_path / "repo"
        plain = write_repo(repo, served)
        seal_into(control_plane.kubeconfig, plain, repo / "10-credentials.yaml", operator_namespace)
        assert kubectl_run(control_plane, "apply", "-f", str(repo)).returncode == 0
        assert_restored(kube_api, served, operator_namespace)

        bundle = tmp_path / "keys.bundle"
        exported = cli("keys", "export", "-o", str(bundle), "--passphrase-file", str(passphrase))
        assert exported.returncode == 0, exported.stderr
        assert oct(bundle.stat().st_mode & 0o777) == "0o600"

        # Uninstall as the docs say, losing the keyring: stop the operator, delete its namespace (and the apps').
        first.stop()
        wait_gone(kube_api, operator_namespace, served)

        # Reinstall: the operator starts on an empty namespace and makes a new keyring, which opens nothing old.
        kubectl_run(control_plane, "create", "namespace", operator_namespace)
        start_operator(run_operator, operator_kubeconfig, operator_namespace, served)
        assert kubectl_run(control_plane, "apply", "-f", str(repo)).returncode == 0
        for name in VALUES:
            objects.wait_for_reason(kube_api, served, name, "SealKeyUnknown", timeout=90)

        wrong = tmp_path / "wrong"
        wrong.write_text("not the passphrase at all\n")
        refused = cli("keys", "import", str(bundle), "--passphrase-file", str(wrong))
        assert refused.returncode == 1 and "passphrase is wrong" in refused.stderr

        imported = cli("keys", "import", str(bundle), "--passphrase-file", str(passphrase))
        assert imported.returncode == 0, imported.stderr
        assert "updated keyring Secret" in imported.stdout
        # The running operator takes the keys without a restart: every sealed Credential is Ready with its values.
        assert_restored(kube_api, served, operator_namespace)
    finally:
        wait_gone(kube_api, operator_namespace, served)


def test_a_gitops_directory_of_sealed_manifests_applies_to_a_fresh_cluster_with_a_restored_bundle(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    run_operator: Callable[..., operator.OperatorProcess],
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    old_operator, new_operator, served = f"gitops-old-{suffix}", f"gitops-new-{suffix}", f"gitops-apps-{suffix}"
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    bundle = tmp_path / "keys.bundle"
    repo = tmp_path / "repo"
    try:
        # The old cluster: seal the repository against it and keep a key bundle; then it is gone.
        kubectl_run(control_plane, "create", "namespace", old_operator)
        old = start_operator(run_operator, operator_kubeconfig, old_operator, served)
        plain = write_repo(repo, served)
        seal_into(control_plane.kubeconfig, plain, repo / "10-credentials.yaml", old_operator)
        exported = sealing_testing.run_cli(
            control_plane.kubeconfig, "keys", "export", "-o", str(bundle), "--passphrase-file", str(passphrase),
            "--operator-namespace", old_operator,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        old.stop()
        wait_gone(kube_api, old_operator)

        # The fresh cluster: import the bundle first (it creates the keyring), start the operator, apply the repo.
        kubectl_run(control_plane, "create", "namespace", new_operator)
        imported = sealing_testing.run_cli(
            control_plane.kubeconfig, "keys", "import", str(bundle), "--passphrase-file", str(passphrase),
            "--operator-namespace", new_operator,
        )  # fmt: skip
        assert imported.returncode == 0, imported.stderr
        assert "created keyring Secret" in imported.stdout
        start_operator(run_operator, operator_kubeconfig, new_operator, served)
        applied = kubectl_run(control_plane, "apply", "-f", str(repo))
        assert applied.returncode == 0, applied.stderr
        assert_restored(kube_api, served, new_operator)
        # No Secret was made by hand in the apps' namespace: only the operator's managed ones exist.
        secrets_there = client.CoreV1Api(kube_api).list_namespaced_secret(served).items
        assert {secret.type for secret in secrets_there} <= {names.SECRET_TYPE}
    finally:
        wait_gone(kube_api, old_operator, new_operator, served)
