"""`credbridge run --namespace NS` serves only the namespaces it is given, and still knows the
cluster-scoped CredentialTypes (custom ones included)."""

from __future__ import annotations

import pathlib
import time

import pytest
from kubernetes import client

from credbridge.core import names
from credbridge.local import operator
from credbridge.testing import objects
from credbridge.testing.fixtures import Namespaces

pytestmark = pytest.mark.cluster


def test_namespaced_operator_leaves_other_namespaces_alone(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    operator_kubeconfig: pathlib.Path,
    operator_namespace: str,
    tmp_path: pathlib.Path,
) -> None:
    served, other = namespaces.create("served"), namespaces.create("other")
    process = operator.start(
        operator_kubeconfig,
        tmp_path / "operator.log",
        env={"CRED_SCOPED": "v"},
        args=["--operator-namespace", operator_namespace, "--namespace", served, "--webhook-port", "0"],
    )
    try:
        for namespace in (served, other):
            objects.create_credential(
                kube_api, namespace, objects.credential_body("scoped", "openAIApi", {"openAIApiKey": "<<CRED_SCOPED>>"})
            )
        objects.wait_for_reason(kube_api, served, "scoped", "Encrypted")
        time.sleep(2)  # give the operator every chance to (wrongly) touch the other namespace
        untouched = objects.get_credential(kube_api, other, "scoped")
        assert untouched is not None and "status" not in untouched
        assert objects.read_secret(kube_api, other, "scoped") is None
        assert f"namespaces {served}" in process.logs()
        custom = client.CustomObjectsApi(kube_api)
        type_name = "scoped" + served.replace("-", "")
        custom.create_cluster_custom_object(
            names.GROUP,
            names.VERSION,
            names.CREDENTIAL_TYPE_PLURAL,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.CREDENTIAL_TYPE_KIND,
                "metadata": {"name": type_name, "labels": objects.TEST_LABEL},
                "spec": {"name": type_name, "label": "Scoped", "inputs": [{"name": "token", "type": "password"}]},
            },
        )
        try:
            objects.create_credential(
                kube_api, served, objects.credential_body("custom", type_name, {"token": "<<CRED_SCOPED>>"})
            )
            objects.wait_for_reason(kube_api, served, "custom", "Encrypted")
        finally:
            custom.delete_cluster_custom_object(names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, type_name)
    finally:
        process.stop()
