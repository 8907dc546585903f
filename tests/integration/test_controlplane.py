"""The local control plane is a real Kubernetes: discovery, controllers, RBAC and audit all work."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from kubernetes import client

from credbridge.local import controlplane
from credbridge.testing.fixtures import TEST_LABEL, AuditLog, Namespaces, unique_name, wait_for

pytestmark = pytest.mark.cluster


def test_credbridge_crds_are_served_with_short_names(control_plane: controlplane.ControlPlane) -> None:
    resources = control_plane.kubectl("api-resources", "--api-group=credbridge.io", "-o", "wide")
    assert "credentials" in resources and "cred" in resources
    assert "credentialtypes" in resources and "credtype" in resources
    assert "credentialshares" in resources and "credshare" in resources
    assert "credentials" in control_plane.kubectl("get", "crd", "-o", "name")


def test_deleted_namespace_is_finalized_by_the_namespace_controller(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    core = client.CoreV1Api(kube_api)
    name = namespaces.create("gone")
    core.create_namespaced_config_map(
        name,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content", labels=TEST_LABEL), data={"k": "v"}),
    )
    core.delete_namespace(name)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_for(namespace_gone, timeout=60, message=f"namespace {name} to be deleted")


def test_secret_owned_by_a_deleted_object_is_garbage_collected(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner", labels=TEST_LABEL))
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name="owned",
                labels=TEST_LABEL,
                owner_references=[
                    client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
                ],
            )
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def secret_collected() -> bool:
        try:
            core.read_namespaced_secret("owned", namespace)
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_for(secret_collected, timeout=60, message="the garbage collector to delete the owned Secret")


def test_rbac_denies_an_impersonated_user_without_rights(impersonate, namespace: str) -> None:  # type: ignore[no-untyped-def]
    nobody = client.CoreV1Api(impersonate(unique_name("nobody")))
    with pytest.raises(client.ApiException) as denied:
        nobody.list_namespaced_secret(namespace)
    assert denied.value.status == 403


def test_audit_log_records_writes_by_user(
    kube_api: client.ApiClient,
    impersonate,
    namespace: str,
    audit: AuditLog,  # type: ignore[no-untyped-def]
) -> None:
    rbac = client.RbacAuthorizationV1Api(kube_api)
    user = unique_name("writer")
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="cm-writer", labels=TEST_LABEL),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["create"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="cm-writer", labels=TEST_LABEL),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="cm-writer"),
            subjects=[client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")],
        ),
    )
    mark = audit.mark()
    as_user = client.CoreV1Api(impersonate(user))
    for index in range(3):
        as_user.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{index}", labels=TEST_LABEL))
        )

    writes = wait_for(
        lambda: len(audit.writes(since=mark, user=user)) == 3 and audit.writes(since=mark, user=user),
        timeout=10,
        message="three audited writes",
    )
    assert {event["objectRef"]["name"] for event in writes} == {"cm-0", "cm-1", "cm-2"}
    assert all(event["verb"] == "create" for event in writes)
    assert audit.writes(since=mark, user=unique_name("someone-else")) == []


def test_dev_restart_crashes_a_process_and_dev_down_stops_the_new_one(tmp_path: pathlib.Path) -> None:
    """`credbridge dev restart` is kill -9 and start again; `dev down` must not leave the new process behind."""

    def dev(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "credbridge.cli.main", "dev", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def pids() -> dict[str, int]:
        state = json.loads((tmp_path / ".credbridge-dev" / "state.json").read_text())
        return {entry["name"]: entry["pid"] for entry in state["processes"]}

    def running(pid: int) -> bool:
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    after: dict[str, int] = {}
    up = dev("up")
    try:
        assert up.returncode == 0, up.stderr
        before = pids()
        dev("kubectl", "create", "configmap", "kept", "-n", "default")
        restarted = dev("restart", "etcd")
        assert restarted.returncode == 0, restarted.stderr
        after.update(pids())
        assert after["etcd"] != before["etcd"]
        assert not running(before["etcd"]) and running(after["etcd"])
        # Same data directory and port: what was stored is still there, through the same API server.
        assert after["kube-apiserver"] == before["kube-apiserver"]
        assert dev("kubectl", "get", "configmap", "kept", "-n", "default", "-o", "name").stdout.strip() == (
            "configmap/kept"
        )
    finally:
        down = dev("down")
    assert down.returncode == 0, down.stderr
    assert not any(running(pid) for pid in after.values())
