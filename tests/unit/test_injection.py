"""Pod injection as input → output: an annotated Pod in, exactly the volumes and containers it gets out."""

from __future__ import annotations

import copy
import typing

import pytest

from credbridge.core import injection, names

SETTINGS = injection.InjectionSettings(
    image="ghcr.io/credbridge/credbridge:0.1.0",
    endpoint_url="https://credbridge.credbridge-system.svc:8443",
    ca_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
)
OPTED_IN = {names.INJECTION_NAMESPACE_LABEL: names.INJECTION_NAMESPACE_VALUE}


def pod(annotations: dict[str, str] | None = None, **spec: typing.Any) -> dict[str, typing.Any]:
    return {
        "metadata": {"name": "chat", "namespace": "team-b", "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "chat:1"}], **spec},
    }


def inject(annotations: dict[str, str], **spec: typing.Any) -> injection.Injection:
    result = injection.plan_injection(pod(annotations, **spec), OPTED_IN, SETTINGS)
    assert isinstance(result, injection.Injection), result
    return result


def test_an_annotated_pod_gets_a_token_volume_a_memory_volume_and_the_fetch_init_container() -> None:
    result = inject({names.INJECT_ANNOTATION: "chat-openai, chat-pg"})
    assert result.volumes == [
        {
            "name": "credbridge-token",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"audience": "credbridge.io", "expirationSeconds": 3600, "path": "token"}}
                ]
            },
        },
        {"name": "credbridge-values", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    [fetch] = result.init_containers
    assert fetch["name"] == "credbridge-fetch"
    assert fetch["image"] == SETTINGS.image
    assert fetch["command"] == [
        "credbridge",
        "fetch",
        "--binding",
        "chat-openai",
        "--binding",
        "chat-pg",
        "--dir",
        "/var/run/secrets/credbridge.io/values",
    ]
    env = {item["name"]: item for item in fetch["env"]}
    assert env["CREDBRIDGE_ENDPOINT"]["value"] == SETTINGS.endpoint_url
    assert env["CREDBRIDGE_CA_DATA"]["value"] == SETTINGS.ca_pem
    assert env["CREDBRIDGE_TOKEN_FILE"]["value"] == "/var/run/secrets/credbridge.io/serviceaccount/token"
    assert env["CREDBRIDGE_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert fetch["volumeMounts"] == [
        {"name": "credbridge-token", "mountPath": "/var/run/secrets/credbridge.io/serviceaccount", "readOnly": True},
        {"name": "credbridge-values", "mountPath": "/var/run/secrets/credbridge.io/values"},
    ]
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    assert fetch["securityContext"]["runAsNonRoot"] is True
    assert result.containers == [
        {
            "name": "app",
            "image": "chat:1",
            "volumeMounts": [
                {"name": "credbridge-values", "mountPath": "/var/run/secrets/credbridge.io/values", "readOnly": True}
            ],
        }
    ]


def test_the_application_never_gets_the_token() -> None:
    result = inject({names.INJECT_ANNOTATION: "chat"}, initContainers=[{"name": "migrate", "image": "m"}])
    for container in [*result.containers, *result.init_containers[1:]]:
        assert all(mount["name"] != "credbridge-token" for mount in container.get("volumeMounts", []))
    assert [c["name"] for c in result.init_containers] == ["credbridge-fetch", "migrate"]
    assert result.init_containers[1]["volumeMounts"][0]["readOnly"] is True


def test_existing_volumes_and_mounts_are_kept() -> None:
    app = {"name": "app", "image": "chat:1", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}
    result = inject(
        {names.INJECT_ANNOTATION: "chat"}, containers=[app], volumes=[{"name": "cfg", "configMap": {"name": "c"}}]
    )
    assert [v["name"] for v in result.volumes] == ["cfg", "credbridge-token", "credbridge-values"]
    assert [m["name"] for m in result.containers[0]["volumeMounts"]] == ["cfg", "credbridge-values"]


def test_the_input_pod_is_not_modified() -> None:
    original = pod({names.INJECT_ANNOTATION: "chat"})
    before = copy.deepcopy(original)
    injection.plan_injection(original, OPTED_IN, SETTINGS)
    assert original == before


def test_a_pod_already_injected_is_left_alone() -> None:
    result = inject({names.INJECT_ANNOTATION: "chat"})
    again = pod(
        {names.INJECT_ANNOTATION: "chat"},
        volumes=result.volumes,
        initContainers=result.init_containers,
        containers=result.containers,
    )
    assert injection.plan_injection(again, OPTED_IN, SETTINGS) == injection.Skip()


def test_pods_without_the_annotation_are_skipped_silently() -> None:
    assert injection.plan_injection(pod(), OPTED_IN, SETTINGS) == injection.Skip()


def test_namespaces_that_did_not_opt_in_get_a_warning_and_no_change() -> None:
    result = injection.plan_injection(pod({names.INJECT_ANNOTATION: "chat"}), {}, SETTINGS)
    assert isinstance(result, injection.Skip)
    assert result.warning is not None and "credbridge.io/injection=enabled" in result.warning


@pytest.mark.parametrize(("value", "fragment"), [("", "is empty"), (" , ", "is empty"), ("Chat_API", "not a")])
def test_bad_annotations_are_refused_naming_the_annotation(value: str, fragment: str) -> None:
    result = injection.plan_injection(pod({names.INJECT_ANNOTATION: value}), OPTED_IN, SETTINGS)
    assert isinstance(result, injection.Refusal)
    assert names.INJECT_ANNOTATION in result.message and fragment in result.message


def test_repeated_bindings_are_fetched_once() -> None:
    assert injection.requested_bindings("a,b, a") == ["a", "b"]


def test_name_clashes_are_refused() -> None:
    clash = injection.plan_injection(
        pod({names.INJECT_ANNOTATION: "chat"}, volumes=[{"name": "credbridge-values", "emptyDir": {}}]),
        OPTED_IN,
        SETTINGS,
    )
    assert isinstance(clash, injection.Refusal) and "credbridge-values" in clash.message
    mount_clash = injection.plan_injection(
        pod(
            {names.INJECT_ANNOTATION: "chat"},
            containers=[
                {"name": "app", "volumeMounts": [{"name": "x", "mountPath": "/var/run/secrets/credbridge.io/values"}]}
            ],
        ),
        OPTED_IN,
        SETTINGS,
    )
    assert isinstance(mount_clash, injection.Refusal) and "container app" in mount_clash.message


def test_refresh_adds_a_native_sidecar_that_watches() -> None:
    result = inject({names.INJECT_ANNOTATION: "chat", injection.REFRESH_ANNOTATION: "60"})
    fetch, refresh = result.init_containers
    assert refresh["name"] == "credbridge-refresh"
    assert refresh["restartPolicy"] == "Always"
    assert refresh["command"][-3:] == ["--watch", "--interval", "60"]
    assert "restartPolicy" not in fetch


@pytest.mark.parametrize("value", ["soon", "1", "-5", "1.5"])
def test_bad_refresh_intervals_are_refused(value: str) -> None:
    result = injection.plan_injection(
        pod({names.INJECT_ANNOTATION: "chat", injection.REFRESH_ANNOTATION: value}), OPTED_IN, SETTINGS
    )
    assert isinstance(result, injection.Refusal) and injection.REFRESH_ANNOTATION in result.message


def test_file_mode_can_be_opened_to_the_group() -> None:
    result = inject({names.INJECT_ANNOTATION: "chat", injection.FILE_MODE_ANNOTATION: "0440"})
    assert result.init_containers[0]["command"][-2:] == ["--mode", "0440"]
    refused = injection.plan_injection(
        pod({names.INJECT_ANNOTATION: "chat", injection.FILE_MODE_ANNOTATION: "0777"}), OPTED_IN, SETTINGS
    )
    assert isinstance(refused, injection.Refusal)


def test_files_belong_to_the_user_the_application_runs_as() -> None:
    app = {"name": "app", "image": "chat:1", "securityContext": {"runAsUser": 1000, "runAsGroup": 3000}}
    result = inject({names.INJECT_ANNOTATION: "chat"}, containers=[app])
    context = result.init_containers[0]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (1000, 3000)

    root = {"name": "app", "image": "chat:1", "securityContext": {"runAsUser": 0}}
    result = inject({names.INJECT_ANNOTATION: "chat"}, containers=[root])
    assert result.init_containers[0]["securityContext"]["runAsNonRoot"] is False

    pod_level = inject({names.INJECT_ANNOTATION: "chat"}, securityContext={"runAsUser": 1000}, containers=[app])
    assert "runAsUser" not in pod_level.init_containers[0]["securityContext"]  # inherited from the Pod


def test_without_a_ca_the_client_uses_the_system_trust_store() -> None:
    public = injection.InjectionSettings(image="i", endpoint_url="https://credbridge.example.com")
    result = injection.plan_injection(pod({names.INJECT_ANNOTATION: "chat"}), OPTED_IN, public)
    assert isinstance(result, injection.Injection)
    assert "CREDBRIDGE_CA_DATA" not in {item["name"] for item in result.init_containers[0]["env"]}
