"""The keyring is created once and never silently replaced: a malformed keyring stops the operator
with a clear message, and the keys that were there are still there afterwards."""

from __future__ import annotations

import base64
import pathlib
import secrets

import pytest
from kubernetes import client

from credbridge.core import keyring, names
from credbridge.kube import keyrings
from credbridge.local import operator
from credbridge.testing.fixtures import Namespaces

pytestmark = pytest.mark.cluster


def keyring_secret(api: client.ApiClient, namespace: str) -> client.V1Secret | None:
    try:
        return client.CoreV1Api(api).read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_first_start_creates_a_keyring_and_a_restart_reuses_it(
    kube_api: client.ApiClient, namespaces: Namespaces, operator_kubeconfig: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    operator_namespace = namespaces.create("op")
    assert keyring_secret(kube_api, operator_namespace) is None
    args = ["--operator-namespace", operator_namespace, "--namespace", operator_namespace, "--webhook-port", "0"]
    first = operator.start(operator_kubeconfig, tmp_path / "first.log", args=args)
    first.stop()
    created = keyring_secret(kube_api, operator_namespace)
    assert created is not None
    active = created.metadata.annotations[names.ACTIVE_KEY_ANNOTATION]
    sealing_entry = names.SEALING_KEY_PREFIX + created.metadata.annotations[names.ACTIVE_SEALING_KEY_ANNOTATION]
    assert sorted(created.data) == sorted([active, sealing_entry]) and len(base64.b64decode(created.data[active])) == 32
    assert "created keyring Secret" in first.logs()

    second = operator.start(operator_kubeconfig, tmp_path / "second.log", args=args)
    second.stop()
    again = keyring_secret(kube_api, operator_namespace)
    assert again is not None and again.data == created.data
    assert again.metadata.resource_version == created.metadata.resource_version


@pytest.mark.parametrize(
    ("data", "annotations", "expected"),
    [
        ({"0badc0de": base64.b64encode(b"short").decode()}, {names.ACTIVE_KEY_ANNOTATION: "0badc0de"}, "32"),
        ({"0badc0de": base64.b64encode(bytes(32)).decode()}, {}, names.ACTIVE_KEY_ANNOTATION),
        ({}, {names.ACTIVE_KEY_ANNOTATION: "0badc0de"}, "has no keys"),
        (
            {"not-a-key-id": base64.b64encode(bytes(32)).decode()},
            {names.ACTIVE_KEY_ANNOTATION: "not-a-key-id"},
            "not-a-key-id",
        ),
    ],
    ids=["short-key", "no-active-annotation", "no-keys", "bad-key-id"],
)
def test_malformed_keyring_stops_the_operator_and_is_left_untouched(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
    data: dict[str, str],
    annotations: dict[str, str],
    expected: str,
) -> None:
    operator_namespace = namespaces.create("op")
    client.CoreV1Api(kube_api).create_namespaced_secret(
        operator_namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=names.DEFAULT_KEYRING_SECRET, annotations=annotations or None),
            data=data or None,
        ),
    )
    before = keyring_secret(kube_api, operator_namespace)
    assert before is not None

    process = operator.start(
        operator_kubeconfig,
        tmp_path / "operator.log",
        wait_ready=False,
        args=["--operator-namespace", operator_namespace, "--namespace", operator_namespace, "--webhook-port", "0"],
    )
    code = process.popen.wait(60)
    assert code == 2
    log = process.logs()
    assert "refusing to start" in log
    assert f"{operator_namespace}/{names.DEFAULT_KEYRING_SECRET}" in log
    assert expected in log
    after = keyring_secret(kube_api, operator_namespace)
    assert after is not None and after.metadata.resource_version == before.metadata.resource_version


def test_rotate_then_retire_keeps_every_key_in_use(kube_api: client.ApiClient, namespaces: Namespaces) -> None:
    operator_namespace = namespaces.create("op")
    first = keyrings.ensure(kube_api, operator_namespace, names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
    second = keyrings.rotate(kube_api, operator_namespace, names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
    assert second.active_id != first.active_id and set(second.ids()) == {first.active_id, second.active_id}
    with pytest.raises(keyring.KeyringError, match="still used by 1 credential"):
        keyrings.retire(
            kube_api, operator_namespace, names.DEFAULT_KEYRING_SECRET, first.active_id, in_use=[first.active_id]
        )
    with pytest.raises(keyring.KeyringError, match="active"):
        keyrings.retire(kube_api, operator_namespace, names.DEFAULT_KEYRING_SECRET, second.active_id, in_use=[])
    retired = keyrings.retire(kube_api, operator_namespace, names.DEFAULT_KEYRING_SECRET, first.active_id, in_use=[])
    assert retired.ids() == [second.active_id]


def test_missing_operator_namespace_is_named_in_the_refusal(
    operator_kubeconfig: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    process = operator.start(
        operator_kubeconfig,
        tmp_path / "operator.log",
        wait_ready=False,
        args=["--operator-namespace", "no-such-namespace-here", "--webhook-port", "0"],
    )
    assert process.popen.wait(60) == 2
    assert "the operator namespace no-such-namespace-here does not exist" in process.logs()
