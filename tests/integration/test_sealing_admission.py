"""The webhook checks sealed values at `kubectl apply`: their form and their scope (it cannot see the
plaintext, which only the reconciler opens), with messages that name fields and places, never values."""

from __future__ import annotations

import secrets

import pytest
import yaml
from kubernetes import client

from credbridge.core import names
from credbridge.local import controlplane
from credbridge.testing import objects
from credbridge.testing import sealing as sealing_testing
from credbridge.testing.fixtures import Namespaces, kubectl_run

pytestmark = pytest.mark.cluster

CANARY = "sk-admission-" + secrets.token_hex(12)


def manifest(namespace: str, name: str, sealed_data: dict[str, str]) -> str:
    body = objects.credential_body(name, "openAIApi")
    body["metadata"]["namespace"] = namespace
    body["spec"]["sealedData"] = sealed_data
    return yaml.safe_dump(body, width=1_000_000)


def test_apply_refuses_values_sealed_for_elsewhere_and_malformed_ones(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    credbridge_operator,  # type: ignore[no-untyped-def]
) -> None:
    home, other = namespaces.create("adm-home"), namespaces.create("adm-other")
    key = sealing_testing.public_key(kube_api)
    token = sealing_testing.seal(key, CANARY, home, "openai", "openAIApiKey")

    accepted = kubectl_run(control_plane, "apply", "-f", "-", input=manifest(home, "openai", {"openAIApiKey": token}))
    assert accepted.returncode == 0, accepted.stderr
    objects.wait_for_reason(kube_api, home, "openai", "Encrypted", timeout=60)

    moved = kubectl_run(control_plane, "apply", "-f", "-", input=manifest(other, "openai", {"openAIApiKey": token}))
    assert moved.returncode != 0
    assert f"was sealed for Credential {home}/openai, field 'openAIApiKey'" in moved.stderr
    assert f"credbridge seal -n {other} --name openai --type openAIApi --field openAIApiKey" in moved.stderr

    copied = kubectl_run(control_plane, "apply", "-f", "-", input=manifest(home, "staging", {"openAIApiKey": token}))
    assert copied.returncode != 0 and f"not for Credential {home}/staging" in copied.stderr

    garbage = token.split(".")[0] + ".0000.x.y"
    malformed = kubectl_run(
        control_plane, "apply", "-f", "-", input=manifest(home, "broken", {"openAIApiKey": garbage})
    )
    assert malformed.returncode != 0 and "is not a sealed value" in malformed.stderr

    plain = kubectl_run(control_plane, "apply", "-f", "-", input=manifest(home, "plain", {"openAIApiKey": CANARY}))
    assert plain.returncode != 0 and "spec.sealedData.openAIApiKey is not a sealed value" in plain.stderr

    both = yaml.safe_load(manifest(home, "both", {"openAIApiKey": token}))
    both["spec"]["data"] = {"openAIApiKey": "<<CRED_X>>"}
    twice = kubectl_run(control_plane, "apply", "-f", "-", input=yaml.safe_dump(both, width=1_000_000))
    assert twice.returncode != 0 and "set in both spec.sealedData and spec.data" in twice.stderr

    for result in (moved, copied, malformed, plain, twice):
        assert CANARY not in result.stderr
    assert objects.get_credential(kube_api, other, "openai") is None
    assert objects.ready(objects.get_credential(kube_api, home, "openai"))["reason"] == "Encrypted"  # type: ignore[index]
    assert names.SEALED_WITH_OLD_KEY_CONDITION in {
        condition["type"]
        for condition in objects.get_credential(kube_api, home, "openai")["status"]["conditions"]  # type: ignore[index]
    }
