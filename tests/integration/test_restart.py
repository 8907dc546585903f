"""An operator restart with nothing changed writes nothing — whatever state each object is in.

Every failure state a Credential, a binding, a share or a FlowiseTarget can be in is set up in one
namespace; the operator is restarted; once it has reconciled everything again, the audit log must
show no write by the operator there (no status patch, no Secret write, no Event).
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from credbridge.testing import flowise as flowise_testing
from credbridge.testing import objects
from credbridge.testing.fixtures import AuditLog, Namespaces

pytestmark = pytest.mark.cluster

OPERATOR_USER = "credbridge-operator"


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"CRED_OK": "sk-restart-ok", "NOT_ALLOWED": "x"}


@pytest.fixture(scope="module")
def operator_args() -> list[str]:
    # The webhook would refuse some of these states at apply time; the reconciler must hold them anyway.
    return ["--webhook-port", "0", "--flowise-resync", "3600"]


def credential(api: client.ApiClient, namespace: str, name: str, type_name: str, **spec: object) -> None:
    body = objects.credential_body(name, type_name, dict(spec.pop("data", {})))  # type: ignore[arg-type]
    body["spec"].update(spec)
    objects.create_credential(api, namespace, body)


def test_a_restart_writes_nothing_for_objects_in_any_state(
    kube_api: client.ApiClient, namespaces: Namespaces, audit: AuditLog, credbridge_operator: object
) -> None:
    namespace = namespaces.create("restart")
    closed = namespaces.create("closed")  # accepts no shares
    credential(kube_api, namespace, "ok", "openAIApi", data={"openAIApiKey": "literal-ok"})
    credential(kube_api, namespace, "from-env", "openAIApi", data={"openAIApiKey": "<<CRED_OK>>"})
    credential(kube_api, namespace, "unknown-type", "noSuchType", data={"x": "y"})
    credential(kube_api, namespace, "invalid", "openAIApi", data={"openAIApiKey": "k", "organisation": "typo"})
    credential(kube_api, namespace, "env-missing", "openAIApi", data={"openAIApiKey": "<<CRED_MISSING>>"})
    credential(kube_api, namespace, "env-forbidden", "openAIApi", data={"openAIApiKey": "<<NOT_ALLOWED>>"})
    credential(
        kube_api,
        namespace,
        "secret-missing",
        "openAIApi",
        valueFrom={"openAIApiKey": {"secretKeyRef": {"name": "nowhere", "key": "k"}}},
    )
    objects.create_secret(kube_api, namespace, "conflict", {"someone": "else"})
    credential(kube_api, namespace, "conflict", "openAIApi", data={"openAIApiKey": "literal"})
    credential(kube_api, namespace, "dup-a", "openAIApi", data={"openAIApiKey": "a"}, id="same-id")
    expected = {
        "ok": "Encrypted",
        "from-env": "Encrypted",
        "unknown-type": "UnknownType",
        "invalid": "ValidationFailed",
        "env-missing": "EnvReferenceMissing",
        "env-forbidden": "EnvReferenceForbidden",
        "secret-missing": "SecretReferenceMissing",
        "conflict": "SecretConflict",
        "dup-a": "Encrypted",
    }
    for name, reason in expected.items():
        objects.wait_for_reason(kube_api, namespace, name, reason, timeout=60)
    credential(kube_api, namespace, "dup-b", "openAIApi", data={"openAIApiKey": "b"}, id="same-id")
    objects.wait_for_reason(kube_api, namespace, "dup-b", "DuplicateId", timeout=60)

    bindings = {
        "to-nothing": ("missing", None, "CredentialNotFound"),
        "bad-template": ("ok", {"KEY": "${nope"}, "InvalidTemplate"),
        "not-granted": ("from-env", None, "EnvNotGranted"),
        "bound": ("ok", None, "Rendered"),
    }
    for name, (target, template, _) in bindings.items():
        objects.create_binding(kube_api, namespace, objects.binding_body(name, target, template=template))
    for name, (_, _, reason) in bindings.items():
        objects.wait_for_binding(kube_api, namespace, name, reason, timeout=60)
    objects.create_share(kube_api, namespace, objects.share_body("to-closed", "ok", [closed]))
    objects.wait_until(
        lambda: (objects.get_share(kube_api, namespace, "to-closed") or {}).get("status", {}).get("namespaces"),
        60,
        "the share's status",
    )
    flowise_testing.create_target(
        kube_api, namespace, flowise_testing.target_body("flowise", "http://127.0.0.1:9", "no-such-key")
    )
    objects.wait_until(
        lambda: objects.ready(flowise_testing.get_target(kube_api, namespace, "flowise")),
        60,
        "the FlowiseTarget's condition",
    )
    for name in ("ok", "from-env", "dup-a"):
        objects.wait_for_verified(kube_api, namespace, name, timeout=60)  # the Ready ones get their first check
    time.sleep(5)  # Events and usage updates of the first run land

    mark = audit.mark()
    restarted = credbridge_operator.restart()  # type: ignore[attr-defined]
    objects.wait_until(lambda: 'result="unchanged"' in restarted.metrics(), 60, "the first reconciles after the start")
    time.sleep(10)  # every queue (bindings' usage debounce, the Flowise sync) has run by now, even on a busy machine
    writes = audit.writes(since=mark, user=OPERATOR_USER, namespace=namespace)
    assert writes == [], [
        (w["verb"], w["objectRef"].get("resource"), w["objectRef"].get("subresource"), w["objectRef"].get("name"))
        for w in writes
    ]
