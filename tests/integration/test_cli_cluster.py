"""The cluster-facing CLI (reveal, keys, types --cluster) against the control plane and a running operator."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from credbridge.cli import main
from credbridge.core import names
from credbridge.local import controlplane, operator
from credbridge.testing.fixtures import TEST_LABEL, Namespaces, unique_name, wait_for

pytestmark = pytest.mark.cluster

CapturedRun = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    control_plane: controlplane.ControlPlane, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> CapturedRun:
    """Run `credbridge ...` in-process against the control plane; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    monkeypatch.delenv("POD_NAMESPACE", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def apply_openai_credential(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_PLURAL,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.CREDENTIAL_KIND,
            "metadata": {"name": name, "labels": TEST_LABEL},
            "spec": {"type": "openAIApi", "data": {"openAIApiKey": "<<CRED_TEST_KEY>>"}},
        },
    )


def read_status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name
    )
    status: dict[str, Any] = obj.get("status") or {}
    return status


def wait_ready(api: client.ApiClient, namespace: str, name: str, process: operator.OperatorProcess) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status = read_status(api, namespace, name)
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return status if conditions.get(names.READY_CONDITION) == "True" else None

    try:
        result: dict[str, Any] = wait_for(ready, timeout=60, message=f"Credential {namespace}/{name} to be Ready")
    except BaseException:
        print(process.logs())
        raise
    return result


@pytest.fixture
def ready_credential(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    run_operator: Callable[..., operator.OperatorProcess],
) -> Iterator[tuple[str, str, str, str, operator.OperatorProcess]]:
    """(operator namespace, namespace, Credential name, plaintext value, operator) with the Credential Ready."""
    operator_namespace = namespaces.create("op")
    namespace = namespaces.create("cli")
    value = f"sk-test-{secrets.token_hex(12)}"
    # Watching only this test's namespace keeps Credentials left over by other tests (their namespaces
    # still terminating) out of this keyring's usage counts.
    process = run_operator(
        "--operator-namespace", operator_namespace, "--namespace", namespace, env={"CRED_TEST_KEY": value}
    )
    name = unique_name("openai")
    apply_openai_credential(kube_api, namespace, name)
    wait_ready(kube_api, namespace, name, process)
    yield operator_namespace, namespace, name, value, process


def test_reveal_prints_every_field_as_json_or_one_field_raw(
    cli: CapturedRun, ready_credential: tuple[str, str, str, str, operator.OperatorProcess]
) -> None:
    operator_namespace, namespace, name, value, process = ready_credential
    keyring_args = ("--operator-namespace", operator_namespace)

    code, out, err = cli("reveal", name, "-n", namespace, *keyring_args)
    assert code == 0, err
    assert json.loads(out) == {"openAIApiKey": value}
    assert "WARNING: showing the decrypted values" in err

    code, out, err = cli("reveal", name, "-n", namespace, "--field", "openAIApiKey", *keyring_args)
    assert (code, out) == (0, value), err

    code, out, err = cli("reveal", name, "-n", namespace, "--field", "organizationId", *keyring_args)
    assert (code, out) == (1, "")
    assert "has no field 'organizationId' (fields: openAIApiKey)" in err
    assert value not in err

    assert value not in process.logs()


def test_reveal_explains_missing_credentials_and_keyrings(
    cli: CapturedRun, ready_credential: tuple[str, str, str, str, operator.OperatorProcess]
) -> None:
    operator_namespace, namespace, name, value, _ = ready_credential

    code, out, err = cli("reveal", "nope", "-n", namespace, "--operator-namespace", operator_namespace)
    assert (code, out) == (1, "")
    assert f"Credential {namespace}/nope not found" in err

    code, out, err = cli("reveal", name, "-n", namespace, "--operator-namespace", namespace)
    assert (code, out) == (1, "")
    assert f"cannot read keyring Secret {namespace}/credbridge-keyring: it does not exist" in err
    assert value not in err


def test_reveal_without_rbac_names_the_object_it_could_not_read(
    cli: CapturedRun,
    kube_api: client.ApiClient,
    ready_credential: tuple[str, str, str, str, operator.OperatorProcess],
) -> None:
    operator_namespace, namespace, name, value, _ = ready_credential
    nobody = unique_name("nobody")
    code, out, err = cli("reveal", name, "-n", namespace, "--operator-namespace", operator_namespace, "--as", nobody)
    assert (code, out) == (1, "")
    assert f"cannot read Credential {namespace}/{name}: 403 Forbidden" in err
    assert f"reveal needs get on credentials and secrets in namespace {namespace}" in err
    assert f"get on secrets in namespace {operator_namespace}" in err

    # May read Credentials, not Secrets: the refusal names the Secret.
    viewer = unique_name("viewer")
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": viewer, "labels": TEST_LABEL},
            "rules": [{"apiGroups": [names.GROUP], "resources": [names.CREDENTIAL_PLURAL], "verbs": ["get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": viewer, "labels": TEST_LABEL},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": viewer},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": viewer}],
        },
    )

    def refused_on_the_secret() -> str | None:
        code, _, err = cli("reveal", name, "-n", namespace, "--operator-namespace", operator_namespace, "--as", viewer)
        return err if code == 1 and f"cannot read Secret {namespace}/{name}: 403 Forbidden" in err else None

    err = wait_for(refused_on_the_secret, timeout=30, message="RBAC to let the viewer read the Credential only")
    assert value not in err


def test_keys_rotate_reencrypts_and_retire_refuses_keys_in_use(
    cli: CapturedRun,
    kube_api: client.ApiClient,
    ready_credential: tuple[str, str, str, str, operator.OperatorProcess],
) -> None:
    operator_namespace, namespace, name, value, process = ready_credential
    keyring_args = ("--operator-namespace", operator_namespace)
    first_key = read_status(kube_api, namespace, name)["keyId"]

    code, out, err = cli("keys", "list", *keyring_args)
    assert code == 0, err
    assert out.splitlines()[0].split() == ["KEY", "ID", "ACTIVE", "CREDENTIALS"]
    assert out.splitlines()[1].split() == [first_key, "yes", "1"]

    code, out, err = cli("keys", "retire", first_key, *keyring_args)
    assert (code, out) == (1, "")
    assert f"key '{first_key}' is the active key: rotate first" in err

    code, out, err = cli("keys", "rotate", *keyring_args)
    assert code == 0, err
    second_key = out.split("new active key: ")[1].split()[0]
    assert second_key != first_key
    assert "re-encrypts every Credential with the new key in the background" in err

    # The running operator notices the new key (no restart) and re-encrypts.
    wait_for(
        lambda: read_status(kube_api, namespace, name).get("keyId") == second_key,
        timeout=60,
        message="the operator to re-encrypt the Credential with the new key",
    )
    code, out, _ = cli("reveal", name, "-n", namespace, "--field", "openAIApiKey", *keyring_args)
    assert (code, out) == (0, value)

    code, out, err = cli("keys", "retire", first_key, *keyring_args)
    assert code == 0, err
    assert f"retired key {first_key}" in out
    code, out, _ = cli("keys", "list", *keyring_args)
    assert [line.split() for line in out.splitlines()[1:]] == [[second_key, "yes", "1"]]

    # With the operator stopped nothing re-encrypts: the previous key stays in use and cannot be retired.
    process.stop()
    code, out, err = cli("keys", "rotate", *keyring_args)
    assert code == 0, err
    code, out, err = cli("keys", "retire", second_key, *keyring_args)
    assert (code, out) == (1, "")
    assert f"key '{second_key}' is still used by 1 credential" in err

    code, out, err = cli("keys", "retire", "0000beef", *keyring_args)
    assert code == 1
    assert "key '0000beef' is not in the keyring" in err


def test_types_cluster_includes_custom_credential_types(cli: CapturedRun, kube_api: client.ApiClient) -> None:
    type_name = f"internalApi{secrets.token_hex(3)}"
    objects = client.CustomObjectsApi(kube_api)
    objects.create_cluster_custom_object(
        names.GROUP,
        names.VERSION,
        names.CREDENTIAL_TYPE_PLURAL,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.CREDENTIAL_TYPE_KIND,
            "metadata": {"name": type_name.lower(), "labels": TEST_LABEL},
            "spec": {
                "name": type_name,
                "label": "Internal API",
                "version": 1,
                "inputs": [{"name": "token", "label": "Token", "type": "password"}],
            },
        },
    )
    try:
        code, out, err = cli("types", type_name)
        assert code == 1
        assert "unknown credential type" in err

        code, out, err = cli("types", "--cluster")
        assert code == 0, err
        row = next(line.split() for line in out.splitlines() if line.startswith(type_name + " "))
        assert row == [type_name, "Internal", "API", "1", "1", "cluster"]

        code, out, err = cli("types", type_name, "--cluster", "-o", "json")
        assert code == 0, err
        assert json.loads(out)["spec"]["inputs"] == [{"name": "token", "label": "Token", "type": "password"}]
    finally:
        objects.delete_cluster_custom_object(
            names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, type_name.lower()
        )
