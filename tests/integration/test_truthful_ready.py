"""Ready tells the truth: a write that keeps failing shows on the Credential, and every managed
Secret is verified again, periodically, as stored in the API server."""

from __future__ import annotations

import re
import time
import typing

import pytest
from kubernetes import client

from credbridge.core import names
from credbridge.testing import fixtures, objects
from credbridge.testing.fixtures import AuditLog, wait_for

pytestmark = pytest.mark.cluster

OPERATOR_USER = "credbridge-operator"

RESYNC_SECONDS = 3


@pytest.fixture(scope="module")
def operator_args() -> list[str]:
    return ["--resync-interval", str(RESYNC_SECONDS), "--resync-rate", "200", "--write-failures-before-report", "3"]


def _freeze_secret_updates(api: client.ApiClient, namespace: str, credential: str) -> str:
    """A ValidatingAdmissionPolicy refusing every update of the Credential's managed Secret; returns its name."""
    return _refuse(
        api,
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["secrets"]},
        namespace,
        {"matchLabels": {names.CREDENTIAL_LABEL: credential}},
    )


def _refuse(
    api: client.ApiClient, rule: dict[str, list[str]], namespace: str, object_selector: dict[str, object]
) -> str:
    """A ValidatingAdmissionPolicy refusing the requests `rule` matches in `namespace`; returns its name."""
    name = fixtures.unique_name("freeze")
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": objects.TEST_LABEL},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [rule]},
                "validations": [{"expression": "false", "message": "refused by a test policy"}],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": objects.TEST_LABEL},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "objectSelector": object_selector,
                },
            },
        }
    )
    return name


def _policy_enforced(api: client.ApiClient, namespace: str, probe: str) -> bool:
    """True once updating the labelled probe Secret is refused (the policy takes a moment to load)."""
    try:
        client.CoreV1Api(api).patch_namespaced_secret(
            probe, namespace, {"metadata": {"annotations": {"t": str(time.time())}}}
        )
    except client.ApiException as error:
        return error.status in (403, 422)
    return False


def _unfreeze(api: client.ApiClient, name: str) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    admission.delete_validating_admission_policy_binding(name)
    admission.delete_validating_admission_policy(name)


def test_a_secret_write_that_keeps_failing_turns_ready_false_and_the_last_good_secret_stays(
    kube_api: client.ApiClient, namespace: str, credbridge_operator: typing.Any
) -> None:
    core = client.CoreV1Api(kube_api)
    objects.create_secret(kube_api, namespace, "db", {"password": "first-password"})
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body(
            "orders",
            "PostgresApi",
            {"user": "app"},
            value_from={"password": ("db", "password")},
        ),
    )
    objects.wait_for_reason(kube_api, namespace, "orders", "Encrypted")
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="probe", labels={names.CREDENTIAL_LABEL: "orders", **objects.TEST_LABEL}),
            string_data={"x": "y"},
        ),
    )
    policy = _freeze_secret_updates(kube_api, namespace, "orders")
    try:
        wait_for(lambda: _policy_enforced(kube_api, namespace, "probe"), message="the freezing policy to take effect")

        core.patch_namespaced_secret("db", namespace, {"stringData": {"password": "second-password"}})
        failed = objects.wait_for_reason(kube_api, namespace, "orders", "WriteFailed", timeout=60)

        condition = objects.ready(failed)
        assert condition is not None and condition["status"] == "False"
        message = condition["message"]
        assert "Secret orders" in message and "422" in message and "retrying" in message
        assert "second-password" not in message and "first-password" not in message
        reasons = [event["reason"] for event in objects.events_for(kube_api, namespace, "orders")]
        assert "WriteFailed" in reasons
        # The last good Secret is untouched and still opens to the old value.
        assert objects.open_managed_secret(kube_api, namespace, "orders")["password"] == "first-password"
    finally:
        _unfreeze(kube_api, policy)

    objects.wait_for_reason(kube_api, namespace, "orders", "Encrypted", timeout=90)
    assert objects.open_managed_secret(kube_api, namespace, "orders")["password"] == "second-password"


def _metric(operator: typing.Any, name: str) -> float:
    total = 0.0
    for line in operator.process.metrics().splitlines():
        if re.match(rf"^{re.escape(name)}(\{{.*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_managed_secret_is_verified_again_periodically_without_writing(
    kube_api: client.ApiClient, namespace: str, credbridge_operator: typing.Any, audit: AuditLog
) -> None:
    for index in range(10):
        objects.create_credential(
            kube_api,
            namespace,
            objects.credential_body(f"c{index}", "openAIApi", {"openAIApiKey": f"literal-{index}"}),
        )
    for index in range(10):
        objects.wait_for_reason(kube_api, namespace, f"c{index}", "Encrypted")
    for index in range(10):
        objects.wait_for_verified(kube_api, namespace, f"c{index}")  # the first check's write lands before the mark
    time.sleep(1)
    mark = audit.mark()
    passes = _metric(credbridge_operator, "credbridge_verification_passes_total")
    reconciles = _metric(credbridge_operator, "credbridge_reconciles_total")

    wait_for(
        lambda: _metric(credbridge_operator, "credbridge_verification_passes_total") >= passes + 2,
        timeout=RESYNC_SECONDS * 4 + 10,
        message="two verification passes",
    )
    time.sleep(1)

    # Each pass reconciled every Credential (at least the ten of this test) ...
    assert _metric(credbridge_operator, "credbridge_reconciles_total") >= reconciles + 20
    # ... and, with nothing wrong, wrote nothing.
    writes = [w for w in audit.writes(since=mark, namespace=namespace) if fixtures.effective_user(w) == OPERATOR_USER]
    assert writes == []


def test_a_share_whose_mirror_cannot_be_written_reports_it_and_recovers(
    kube_api: client.ApiClient, namespaces: fixtures.Namespaces, credbridge_operator: typing.Any
) -> None:
    owner = namespaces.create("owner")
    target = namespaces.create("target", annotations={names.ACCEPT_SHARES_ANNOTATION: owner})
    objects.create_credential(kube_api, owner, objects.credential_body("openai", "openAIApi", {"openAIApiKey": "x"}))
    objects.wait_for_reason(kube_api, owner, "openai", "Encrypted")
    policy = _refuse(
        kube_api,
        {
            "apiGroups": [names.GROUP],
            "apiVersions": [names.VERSION],
            "operations": ["CREATE"],
            "resources": [names.CREDENTIAL_PLURAL],
        },
        target,
        {},
    )
    try:
        probe = objects.credential_body("probe", "openAIApi", {"openAIApiKey": "x"})

        def enforced() -> bool:
            try:
                objects.create_credential(
                    kube_api,
                    target,
                    {**probe, "metadata": {**probe["metadata"], "name": fixtures.unique_name("probe")}},
                )
            except client.ApiException as error:
                return error.status in (403, 422)
            return False

        wait_for(enforced, message="the policy to take effect")
        objects.create_share(kube_api, owner, objects.share_body("s", "openai", [target]))

        def write_failed() -> dict[str, typing.Any] | None:
            share = objects.get_share(kube_api, owner, "s")
            condition = objects.ready(share)
            return condition if condition and condition.get("reason") == "WriteFailed" else None

        condition = wait_for(write_failed, timeout=60, message="the share to report WriteFailed")
        assert condition["status"] == "False"
        assert f"create Credential {target}/{owner}.openai" in condition["message"]
    finally:
        _unfreeze(kube_api, policy)
    objects.wait_for_reason(kube_api, target, f"{owner}.openai", "Encrypted", timeout=90)
    wait_for(
        lambda: (objects.ready(objects.get_share(kube_api, owner, "s")) or {}).get("reason") == "Shared",
        message="the share to report Shared",
    )
