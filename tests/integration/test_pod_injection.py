"""Pod injection on the real control plane: what the API server stores for an annotated Pod, and the
injected init container's command line run as a local process with a TokenRequest token (there is no
kubelet, so the test plays its part: it mounts the token and the values directory as local paths)."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import stat
import subprocess
import sys
from typing import Any

import pytest
from kubernetes import client

from credbridge.core import injection, names
from credbridge.local import controlplane
from credbridge.testing import objects, workloads
from credbridge.testing.fixtures import TEST_LABEL, Namespaces, kubectl_run, wait_for

pytestmark = pytest.mark.cluster

OPENAI_KEY = "sk-inject-" + secrets.token_hex(16)
IMAGE = "registry.example.com/credbridge:injection-test"
OPTED_IN = {names.INJECTION_NAMESPACE_LABEL: names.INJECTION_NAMESPACE_VALUE}


@pytest.fixture(scope="module")
def endpoint_certificate(tmp_path_factory: pytest.TempPathFactory) -> workloads.EndpointCertificate:
    return workloads.endpoint_certificate(tmp_path_factory.mktemp("endpoint-cert"))


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"CRED_INJ_OPENAI": OPENAI_KEY}


@pytest.fixture(scope="module")
def operator_args(endpoint_certificate: workloads.EndpointCertificate) -> list[str]:
    return [*endpoint_certificate.args, "--env-policy", "CRED_INJ_*=inj-*", "--inject-image", IMAGE]


@pytest.fixture(autouse=True)
def _operator_running(credbridge_operator, kube_api: client.ApiClient) -> None:  # type: ignore[no-untyped-def]
    """The operator runs and the API server calls it for Pods (kopf configures its webhook after start)."""
    assert credbridge_operator.process.alive()
    admission = client.AdmissionregistrationV1Api(kube_api)
    port = f":{credbridge_operator.process.webhook_port}/inject-pods"

    def configured() -> bool:
        try:
            config = admission.read_mutating_webhook_configuration("credbridge.io")
        except client.ApiException:
            return False
        return any(port in (hook.client_config.url or "") for hook in config.webhooks or [])

    wait_for(configured, timeout=30, message="the operator to configure its Pod injection webhook")


def pod_manifest(name: str, annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(TEST_LABEL), "annotations": annotations},
        "spec": {"serviceAccountName": "chat", "containers": [{"name": "app", "image": "chat:1"}], **spec},
    }


def with_chat_account(api: client.ApiClient, namespaces: Namespaces, labels: dict[str, str] | None = None) -> str:
    """A fresh namespace with the ServiceAccount `chat` the Pods here run as (as in a real cluster, a Pod
    naming a ServiceAccount is admitted only once it exists)."""
    namespace = namespaces.create("inj", labels=labels)
    client.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": "chat"}})
    return namespace


def create_pod(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    client.CoreV1Api(api).create_namespaced_pod(namespace, manifest)
    stored = client.CoreV1Api(api).read_namespaced_pod(manifest["metadata"]["name"], namespace)
    result: dict[str, Any] = api.sanitize_for_serialization(stored)
    return result


def ours(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Volumes or mounts without the ServiceAccount token volume the cluster itself adds (`kube-api-access-*`)."""
    return [item for item in items if not item["name"].startswith("kube-api-access-")]


def test_the_stored_pod_has_exactly_the_injected_volumes_and_containers(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    credbridge_operator,  # type: ignore[no-untyped-def]
    endpoint_certificate: workloads.EndpointCertificate,
) -> None:
    namespace = with_chat_account(kube_api, namespaces, OPTED_IN)
    migrate = {"name": "migrate", "image": "chat:1"}
    stored = create_pod(
        kube_api,
        namespace,
        pod_manifest(
            "chat",
            {names.INJECT_ANNOTATION: "chat-openai"},
            initContainers=[migrate],
            volumes=[{"name": "config", "emptyDir": {}}],
        ),
    )
    spec = stored["spec"]
    assert [v["name"] for v in ours(spec["volumes"])] == ["config", "credbridge-token", "credbridge-values"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["credbridge-token"]["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "credbridge.io", "expirationSeconds": 3600, "path": "token"}}
    ]
    assert volumes["credbridge-values"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Mi"}

    assert [c["name"] for c in spec["initContainers"]] == ["credbridge-fetch", "migrate"]
    assert [c["name"] for c in spec["containers"]] == ["app"]
    fetch = spec["initContainers"][0]
    assert fetch["image"] == IMAGE
    assert fetch["command"] == [
        "credbridge",
        "fetch",
        "--binding",
        "chat-openai",
        "--dir",
        injection.VALUES_DIR,
    ]
    env = {item["name"]: item for item in fetch["env"]}
    assert set(env) == {"CREDBRIDGE_ENDPOINT", "CREDBRIDGE_TOKEN_FILE", "CREDBRIDGE_NAMESPACE", "CREDBRIDGE_CA_DATA"}
    assert env["CREDBRIDGE_ENDPOINT"]["value"] == f"https://127.0.0.1:{credbridge_operator.process.endpoint_port}"
    assert env["CREDBRIDGE_CA_DATA"]["value"] == endpoint_certificate.ca_pem
    mounts = [(m["name"], m["mountPath"], bool(m.get("readOnly"))) for m in ours(fetch["volumeMounts"])]
    assert mounts == [
        ("credbridge-token", injection.TOKEN_DIR, True),
        ("credbridge-values", injection.VALUES_DIR, False),
    ]
    for container in (spec["containers"][0], spec["initContainers"][1]):
        assert [(m["name"], m["mountPath"], m.get("readOnly")) for m in ours(container["volumeMounts"])] == [
            ("credbridge-values", injection.VALUES_DIR, True)
        ], container["name"]


def test_pods_elsewhere_and_pods_without_the_annotation_are_not_changed(
    control_plane: controlplane.ControlPlane, kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    opted_in = with_chat_account(kube_api, namespaces, OPTED_IN)
    plain = create_pod(kube_api, opted_in, pod_manifest("plain", {}))
    assert "initContainers" not in plain["spec"] or not plain["spec"]["initContainers"]
    assert [v["name"] for v in ours(plain["spec"].get("volumes") or [])] == []

    elsewhere = with_chat_account(kube_api, namespaces)
    manifest = pod_manifest("chat", {names.INJECT_ANNOTATION: "chat-openai"})
    result = kubectl_run(control_plane, "create", "-n", elsewhere, "-f", "-", input=_yaml(manifest))
    assert result.returncode == 0, result.stderr
    assert "credbridge.io/injection=enabled" in result.stderr  # the admission warning kubectl prints
    stored = client.CoreV1Api(kube_api).read_namespaced_pod("chat", elsewhere)
    assert not stored.spec.init_containers
    added = [volume.name for volume in stored.spec.volumes or [] if not volume.name.startswith("kube-api-access-")]
    assert added == []


def test_bad_annotations_are_refused_with_the_fix(
    control_plane: controlplane.ControlPlane, kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    namespace = with_chat_account(kube_api, namespaces, OPTED_IN)
    for pod_annotations, fragment in (
        ({names.INJECT_ANNOTATION: "Not_A_Name"}, "is not a CredentialBinding name"),
        ({names.INJECT_ANNOTATION: "chat", injection.REFRESH_ANNOTATION: "often"}, "whole number of seconds"),
    ):
        manifest = pod_manifest("refused", pod_annotations)
        result = kubectl_run(control_plane, "create", "-n", namespace, "-f", "-", input=_yaml(manifest))
        assert result.returncode != 0
        assert "denied the request" in result.stderr and fragment in result.stderr, result.stderr


def test_the_injected_init_container_fetches_the_binding_into_files(
    kube_api: client.ApiClient, namespaces: Namespaces, tmp_path: pathlib.Path
) -> None:
    namespace = namespaces.create("inj", labels=OPTED_IN)
    objects.create_credential(
        kube_api, namespace, objects.credential_body("openai", "openAIApi", {"openAIApiKey": "<<CRED_INJ_OPENAI>>"})
    )
    objects.wait_for_reason(kube_api, namespace, "openai", "Encrypted")
    objects.create_binding(  # no plain Secret: the values reach the Pod only through the endpoint
        kube_api,
        namespace,
        objects.binding_body("chat-openai", "openai", template={"OPENAI_API_KEY": "${openAIApiKey}"}, secret=""),
    )
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_BINDING_PLURAL, ["chat-openai"])
    stored = create_pod(kube_api, namespace, pod_manifest("chat", {names.INJECT_ANNOTATION: "chat-openai"}))

    result = run_as_kubelet(
        stored,
        stored["spec"]["initContainers"][0],
        workloads.request_token(kube_api, namespace, "chat"),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    values = tmp_path / "volumes" / "credbridge-values"
    assert sorted(p.name for p in values.iterdir()) == ["OPENAI_API_KEY"]
    assert (values / "OPENAI_API_KEY").read_text() == OPENAI_KEY
    assert stat.S_IMODE((values / "OPENAI_API_KEY").stat().st_mode) == 0o400
    assert OPENAI_KEY not in result.stderr + result.stdout


def run_as_kubelet(
    pod: dict[str, Any], container: dict[str, Any], token: str, workdir: pathlib.Path
) -> subprocess.CompletedProcess[str]:
    """Run `container`'s command as a local process, with its volumes as local directories.

    Each volume mount's path is replaced by `workdir/volumes/<volume name>` wherever it appears in
    the command and the environment; the token volume holds the TokenRequest token, as the kubelet
    would project it; `fieldRef: metadata.namespace` is the Pod's namespace.
    """
    mounts: dict[str, pathlib.Path] = {}
    for mount in container["volumeMounts"]:
        local = workdir / "volumes" / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = local
    (workdir / "volumes" / injection.TOKEN_VOLUME / "token").write_text(token)

    def local_path(text: str) -> str:
        for mount_path, local in mounts.items():
            if text == mount_path or text.startswith(mount_path + "/"):
                return str(local) + text[len(mount_path) :]
        return text

    environ = {"PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for item in container.get("env") or []:
        if "value" in item:
            environ[item["name"]] = local_path(item["value"])
        elif item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            environ[item["name"]] = pod["metadata"]["namespace"]
    command = [local_path(arg) for arg in [*container["command"], *(container.get("args") or [])]]
    return subprocess.run(command, capture_output=True, text=True, env=environ, check=False, timeout=120)


def _yaml(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest)  # JSON is YAML
