"""High availability with `--peering`: one replica works, the other stands by, and takes over when
the active one dies without saying goodbye (SIGKILL)."""

from __future__ import annotations

import pathlib

import pytest
from kubernetes import client

from credbridge.local import operator
from credbridge.testing import objects
from credbridge.testing.fixtures import unique_name

pytestmark = pytest.mark.cluster


def test_standby_takes_over_when_the_active_replica_dies(
    kube_api: client.ApiClient,
    namespace: str,
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
    operator_namespace: str,
) -> None:
    peering = unique_name("ha")
    custom = client.CustomObjectsApi(kube_api)
    custom.create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": peering, "labels": objects.TEST_LABEL},
        },
    )
    common = [
        "--operator-namespace",
        operator_namespace,
        "--webhook-port",
        "0",
        "--peering",
        peering,
        "--peering-lifetime",
        # Long enough that a busy machine's late keepalive does not let the standby take over early.
        "10",
    ]
    env = {"CRED_HA": "ha-value"}
    active = operator.start(
        operator_kubeconfig, tmp_path / "active.log", args=[*common, "--peering-priority", "100"], env=env
    )
    standby = operator.start(
        operator_kubeconfig, tmp_path / "standby.log", args=[*common, "--peering-priority", "50"], env=env
    )
    try:
        objects.create_credential(
            kube_api, namespace, objects.credential_body("before", "openAIApi", {"openAIApiKey": "<<CRED_HA>>"})
        )
        objects.wait_for_reason(kube_api, namespace, "before", "Encrypted")
        assert f"Credential {namespace}/before: Secret before written" in active.logs()
        assert f"{namespace}/before" not in standby.logs()

        active.popen.kill()
        active.popen.wait(10)
        objects.create_credential(
            kube_api, namespace, objects.credential_body("after", "openAIApi", {"openAIApiKey": "<<CRED_HA>>"})
        )
        objects.wait_for_reason(kube_api, namespace, "after", "Encrypted", timeout=60)
        assert f"Credential {namespace}/after: Secret after written" in standby.logs()
    finally:
        active.stop()
        standby.stop()
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
