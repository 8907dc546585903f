"""Sharing with consent on both sides: read-only mirrors, propagation, revocation, the webhook that
keeps mirrors read-only, and in-use protection — tested with real tenants (RBAC + impersonation)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from kubernetes import client

from credbridge.core import names
from credbridge.testing import objects
from credbridge.testing.fixtures import Namespaces, kubectl_run, unique_name

pytestmark = pytest.mark.cluster

OPENAI_KEY = "sk-share-" + secrets.token_hex(16)
OPERATOR_NAMESPACE = "credbridge-system"
TENANT_ROLE = "credbridge-tests-tenant"


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"CRED_SHARED_OPENAI": OPENAI_KEY}


@pytest.fixture(autouse=True)
def _operator_running(credbridge_operator) -> None:  # type: ignore[no-untyped-def]
    assert credbridge_operator.process.alive()


@pytest.fixture(scope="module")
def tenant_role(kube_api: client.ApiClient) -> str:
    """A ClusterRole a namespace admin would have for credbridge objects, Secrets and Pods."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    body = client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=TENANT_ROLE, labels=objects.TEST_LABEL),
        rules=[
            client.V1PolicyRule(
                api_groups=[names.GROUP],
                resources=["credentials", "credentialshares"],
                verbs=["get", "list", "watch", "create", "update", "patch", "delete"],
            ),
            client.V1PolicyRule(
                api_groups=[""],
                resources=["secrets", "pods"],
                verbs=["get", "list", "watch", "create", "update", "patch", "delete"],
            ),
        ],
    )
    try:
        rbac.create_cluster_role(body)
    except client.ApiException as error:
        if error.status != 409:
            raise
    return TENANT_ROLE


def grant(api: client.ApiClient, namespace: str, user: str, role: str) -> None:
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=f"tenant-{user}", labels=objects.TEST_LABEL),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
            subjects=[client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")],
        ),
    )


def accept(api: client.ApiClient, namespace: str, sources: str | None) -> None:
    client.CoreV1Api(api).patch_namespace(
        namespace, {"metadata": {"annotations": {names.ACCEPT_SHARES_ANNOTATION: sources}}}
    )


def source_credential(api: client.ApiClient, namespace: str, name: str = "openai") -> None:
    objects.create_credential(
        api,
        namespace,
        objects.credential_body(
            name, "openAIApi", {"openAIApiKey": "<<CRED_SHARED_OPENAI>>"}, spec_extra={"displayName": "Shared OpenAI"}
        ),
    )
    objects.wait_for_reason(api, namespace, name, "Encrypted")


def share_state(api: client.ApiClient, namespace: str, share: str) -> dict[str, str]:
    body = objects.get_share(api, namespace, share) or {}
    return {entry["name"]: entry["state"] for entry in (body.get("status") or {}).get("namespaces") or []}


def open_mirror(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return objects.open_managed_secret(api, namespace, name, OPERATOR_NAMESPACE)


def credbridge_objects_in(api: client.ApiClient, namespace: str) -> list[str]:
    """Every credbridge Credential and managed Secret in a namespace (should be none without consent)."""
    found = [
        f"credential/{c['metadata']['name']}"
        for c in client.CustomObjectsApi(api).list_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL
        )["items"]
    ]
    found += [
        f"secret/{s.metadata.name}"
        for s in client.CoreV1Api(api)
        .list_namespaced_secret(namespace, label_selector=f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}")
        .items
    ]
    return found


def test_share_makes_a_read_only_mirror_in_an_accepting_namespace(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    team_a = namespaces.create("team-a")
    team_b = namespaces.create("team-b", annotations={names.ACCEPT_SHARES_ANNOTATION: team_a})
    source_credential(kube_api, team_a)
    objects.create_share(kube_api, team_a, objects.share_body("to-b", "openai", [team_b]))

    mirror_name = f"{team_a}.openai"
    mirror = objects.wait_for_reason(kube_api, team_b, mirror_name, "Encrypted")
    assert mirror["status"]["shared"] is True
    assert mirror["status"]["sharedFrom"] == f"{team_a}/openai"
    assert mirror["spec"]["sharedFrom"] == {"namespace": team_a, "name": "openai"}
    assert "data" not in mirror["spec"]
    source = objects.get_credential(kube_api, team_a, "openai")
    assert source is not None and mirror["status"]["id"] == source["status"]["id"]
    assert open_mirror(kube_api, team_b, mirror_name) == {"openAIApiKey": OPENAI_KEY}
    objects.wait_until(lambda: share_state(kube_api, team_a, "to-b") == {team_b: "Shared"}, what="share status")
    objects.wait_until(
        lambda: (
            (objects.get_credential(kube_api, team_a, "openai") or {}).get("status", {}).get("sharedWith") == [team_b]
        ),
        what="source status.sharedWith",
    )
    mirror_secret = objects.read_secret(kube_api, team_b, mirror_name)
    source_secret = objects.read_secret(kube_api, team_a, "openai")
    assert mirror_secret is not None and source_secret is not None
    assert mirror_secret["data"]["encryptedData"] != source_secret["data"]["encryptedData"]


def test_namespace_without_consent_receives_nothing_until_it_accepts(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    team_a = namespaces.create("team-a")
    team_c = namespaces.create("team-c")
    source_credential(kube_api, team_a)
    objects.create_share(kube_api, team_a, objects.share_body("to-c", "openai", [team_c]))
    objects.wait_until(
        lambda: share_state(kube_api, team_a, "to-c") == {team_c: "NotAccepted"}, what="NotAccepted in the share status"
    )
    share = objects.get_share(kube_api, team_a, "to-c")
    assert share is not None and share["status"]["pendingCount"] == 1
    assert names.ACCEPT_SHARES_ANNOTATION in share["status"]["namespaces"][0]["message"]
    assert credbridge_objects_in(kube_api, team_c) == []

    accept(kube_api, team_c, f"someone-else,{team_a}")
    objects.wait_for_reason(kube_api, team_c, f"{team_a}.openai", "Encrypted")
    objects.wait_until(lambda: share_state(kube_api, team_a, "to-c") == {team_c: "Shared"}, what="Shared")

    accept(kube_api, team_c, None)
    objects.wait_until(lambda: credbridge_objects_in(kube_api, team_c) == [], what="the mirror to be removed")
    objects.wait_until(lambda: share_state(kube_api, team_a, "to-c") == {team_c: "NotAccepted"}, what="NotAccepted")


def test_namespaces_matching_the_selector_later_receive_the_share(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    team_a = namespaces.create("team-a")
    workspace = unique_name("ml")
    source_credential(kube_api, team_a)
    objects.create_share(
        kube_api, team_a, objects.share_body("to-ml", "openai", selector={"matchLabels": {"workspace": workspace}})
    )
    late = namespaces.create("late", labels={"workspace": workspace}, annotations={names.ACCEPT_SHARES_ANNOTATION: "*"})
    objects.wait_for_reason(kube_api, late, f"{team_a}.openai", "Encrypted")

    relabelled = namespaces.create("relabel", annotations={names.ACCEPT_SHARES_ANNOTATION: team_a})
    assert credbridge_objects_in(kube_api, relabelled) == []
    client.CoreV1Api(kube_api).patch_namespace(relabelled, {"metadata": {"labels": {"workspace": workspace}}})
    objects.wait_for_reason(kube_api, relabelled, f"{team_a}.openai", "Encrypted")


def test_source_changes_reach_every_mirror(kube_api: client.ApiClient, namespaces: Namespaces) -> None:
    team_a = namespaces.create("team-a")
    targets = [namespaces.create("t", annotations={names.ACCEPT_SHARES_ANNOTATION: team_a}) for _ in range(2)]
    objects.create_secret(kube_api, team_a, "db", {"password": "before"})
    objects.create_credential(
        kube_api,
        team_a,
        objects.credential_body("pg", "PostgresApi", {"user": "app"}, value_from={"password": ("db", "password")}),
    )
    objects.wait_for_reason(kube_api, team_a, "pg", "Encrypted")
    objects.create_share(kube_api, team_a, objects.share_body("pg-share", "pg", targets))
    for target in targets:
        objects.wait_for_reason(kube_api, target, f"{team_a}.pg", "Encrypted")
        assert open_mirror(kube_api, target, f"{team_a}.pg") == {"user": "app", "password": "before"}

    client.CoreV1Api(kube_api).patch_namespaced_secret("db", team_a, {"stringData": {"password": "after"}})
    for target in targets:
        objects.wait_until(
            lambda target=target: open_mirror(kube_api, target, f"{team_a}.pg")["password"] == "after",
            what=f"the mirror in {target} to follow the source",
        )


def test_revocation_removes_mirrors_and_their_secrets(kube_api: client.ApiClient, namespaces: Namespaces) -> None:
    team_a = namespaces.create("team-a")
    b, c = (namespaces.create("t", annotations={names.ACCEPT_SHARES_ANNOTATION: team_a}) for _ in range(2))
    source_credential(kube_api, team_a)
    mirror = f"{team_a}.openai"
    custom = client.CustomObjectsApi(kube_api)

    objects.create_share(kube_api, team_a, objects.share_body("s", "openai", [b, c]))
    for target in (b, c):
        objects.wait_for_reason(kube_api, target, mirror, "Encrypted")

    # Removing one namespace from the share removes only that mirror.
    custom.patch_namespaced_custom_object(
        names.GROUP, names.VERSION, team_a, names.CREDENTIAL_SHARE_PLURAL, "s", {"spec": {"namespaces": [b]}}
    )
    objects.wait_until(lambda: credbridge_objects_in(kube_api, c) == [], what=f"the mirror in {c} to go")
    assert objects.get_credential(kube_api, b, mirror) is not None

    # Deleting the share removes the rest.
    custom.delete_namespaced_custom_object(names.GROUP, names.VERSION, team_a, names.CREDENTIAL_SHARE_PLURAL, "s")
    objects.wait_until(lambda: credbridge_objects_in(kube_api, b) == [], what=f"the mirror in {b} to go")

    # Deleting the source removes mirrors too, and the share says why.
    objects.create_share(kube_api, team_a, objects.share_body("s2", "openai", [b]))
    objects.wait_for_reason(kube_api, b, mirror, "Encrypted")
    objects.delete_credential(kube_api, team_a, "openai")
    objects.wait_until(lambda: credbridge_objects_in(kube_api, b) == [], what="mirrors of a deleted source to go")
    objects.wait_until(
        lambda: (objects.ready(objects.get_share(kube_api, team_a, "s2")) or {}).get("reason") == "SourceNotFound",
        what="SourceNotFound on the share",
    )
    assert objects.read_secret(kube_api, team_a, "openai") is None or objects.wait_until(
        lambda: objects.read_secret(kube_api, team_a, "openai") is None, what="GC of the source Secret"
    )


def test_tenants_cannot_read_alter_or_forge_what_they_do_not_own(
    kube_api: client.ApiClient, namespaces: Namespaces, impersonate: Callable[..., client.ApiClient], tenant_role: str
) -> None:
    team_a = namespaces.create("team-a")
    team_b = namespaces.create("team-b", annotations={names.ACCEPT_SHARES_ANNOTATION: team_a})
    alice, bob = unique_name("alice"), unique_name("bob")
    grant(kube_api, team_a, alice, tenant_role)
    grant(kube_api, team_b, bob, tenant_role)
    source_credential(kube_api, team_a)
    objects.create_share(kube_api, team_a, objects.share_body("to-b", "openai", [team_b]))
    mirror = f"{team_a}.openai"
    objects.wait_for_reason(kube_api, team_b, mirror, "Encrypted")

    as_bob = impersonate(bob)
    bob_custom, bob_core = client.CustomObjectsApi(as_bob), client.CoreV1Api(as_bob)
    attempts: list[tuple[str, Callable[[], object], int, str]] = [
        (
            "read team-a's Credentials",
            lambda: bob_custom.list_namespaced_custom_object(
                names.GROUP, names.VERSION, team_a, names.CREDENTIAL_PLURAL
            ),
            403,
            "",
        ),
        (
            "read team-a's Credential",
            lambda: bob_custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, team_a, names.CREDENTIAL_PLURAL, "openai"
            ),
            403,
            "",
        ),
        ("read team-a's Secret", lambda: bob_core.read_namespaced_secret("openai", team_a), 403, ""),
        ("list team-a's Secrets", lambda: bob_core.list_namespaced_secret(team_a), 403, ""),
        (
            "edit the mirror",
            lambda: bob_custom.patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                team_b,
                names.CREDENTIAL_PLURAL,
                mirror,
                {"metadata": {"labels": {"edited": "yes"}}},
            ),
            403,
            "read-only mirror",
        ),
        (
            "delete the mirror",
            lambda: bob_custom.delete_namespaced_custom_object(
                names.GROUP, names.VERSION, team_b, names.CREDENTIAL_PLURAL, mirror
            ),
            403,
            "read-only mirror",
        ),
        (
            "edit the mirror's Secret",
            lambda: bob_core.patch_namespaced_secret(mirror, team_b, {"metadata": {"labels": {"edited": "yes"}}}),
            403,
            "read-only mirror",
        ),
        (
            "delete the mirror's Secret",
            lambda: bob_core.delete_namespaced_secret(mirror, team_b),
            403,
            "read-only mirror",
        ),
        (
            "forge a mirror claiming team-a",
            lambda: bob_custom.create_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                team_b,
                names.CREDENTIAL_PLURAL,
                objects.credential_body(
                    "forged", "openAIApi", spec_extra={"sharedFrom": {"namespace": team_a, "name": "openai"}}
                ),
            ),
            403,
            "only the credbridge operator",
        ),
        (
            "share a Credential of another namespace",
            lambda: bob_custom.create_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                team_b,
                names.CREDENTIAL_SHARE_PLURAL,
                objects.share_body("steal", f"{team_a}/openai", [team_b]),
            ),
            422,
            "",
        ),
        (
            "create a share in team-a",
            lambda: bob_custom.create_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                team_a,
                names.CREDENTIAL_SHARE_PLURAL,
                objects.share_body("steal", "openai", [team_b]),
            ),
            403,
            "",
        ),
    ]
    denied = []
    for description, attempt, status, message in attempts:
        with pytest.raises(client.ApiException) as error:
            attempt()
        assert error.value.status == status, f"{description}: HTTP {error.value.status}"
        assert message in (error.value.body or ""), f"{description}: {error.value.body}"
        if "read-only mirror" in message:
            assert f"owned by namespace {team_a}" in error.value.body
        denied.append(description)

    # A share bob makes in his own namespace can only name his own Credentials: the name resolves
    # in team-b, where no such Credential exists, so nothing of team-a's is shared.
    bob_custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, team_b, names.CREDENTIAL_SHARE_PLURAL, objects.share_body("own", "openai", [team_a])
    )
    objects.wait_until(
        lambda: (objects.ready(objects.get_share(kube_api, team_b, "own")) or {}).get("reason") == "SourceNotFound",
        what="SourceNotFound for a share naming a missing Credential",
    )
    assert objects.get_credential(kube_api, team_a, f"{team_b}.openai") is None
    assert objects.get_credential(kube_api, team_b, mirror) is not None
    print(f"\n{len(denied)} forbidden operations tried, {len(denied)} denied: " + "; ".join(denied))
    assert len(denied) == len(attempts) == 11


def test_deleting_a_credential_in_use_by_a_pod_is_refused_with_the_pod_names(
    kube_api: client.ApiClient, namespace: str
) -> None:
    source_credential(kube_api, namespace, "in-use")
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="app", labels=objects.TEST_LABEL),
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(
                        name="app",
                        image="example.invalid/app:1",
                        env_from=[client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name="in-use"))],
                    )
                ]
            ),
        ),
    )
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="mounter", labels=objects.TEST_LABEL),
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="app", image="example.invalid/app:1")],
                volumes=[
                    client.V1Volume(
                        name="creds",
                        projected=client.V1ProjectedVolumeSource(
                            sources=[client.V1VolumeProjection(secret=client.V1SecretProjection(name="in-use"))]
                        ),
                    )
                ],
            ),
        ),
    )
    with pytest.raises(client.ApiException) as refused:
        objects.delete_credential(kube_api, namespace, "in-use")
    assert refused.value.status == 403
    assert "app" in refused.value.body and "mounter" in refused.value.body
    assert names.ALLOW_DELETE_IN_USE_ANNOTATION in refused.value.body
    assert objects.get_credential(kube_api, namespace, "in-use") is not None

    objects.patch_credential(
        kube_api, namespace, "in-use", {"metadata": {"annotations": {names.ALLOW_DELETE_IN_USE_ANNOTATION: "true"}}}
    )
    objects.delete_credential(kube_api, namespace, "in-use")
    objects.wait_until(lambda: objects.get_credential(kube_api, namespace, "in-use") is None, what="deletion")


def test_webhook_refuses_invalid_credentials_and_warns_on_literal_secrets(
    control_plane,
    namespace: str,  # type: ignore[no-untyped-def]
) -> None:
    invalid = f"""
apiVersion: credbridge.io/v1alpha1
kind: Credential
metadata: {{name: bad, namespace: {namespace}}}
spec:
  type: openAIApi
  data: {{openAIApiKey: "<<CRED_SHARED_OPENAI>>", organisation: "x"}}
"""
    result = kubectl_run(control_plane, "apply", "--server-side", "-f", "-", input=invalid)
    assert result.returncode != 0
    assert "organisation" in result.stderr and "is not defined by type" in result.stderr

    literal = f"""
apiVersion: credbridge.io/v1alpha1
kind: Credential
metadata: {{name: literal, namespace: {namespace}}}
spec:
  type: openAIApi
  data: {{openAIApiKey: "sk-literal-in-git"}}
"""
    result = kubectl_run(control_plane, "apply", "--server-side", "-f", "-", input=literal)
    assert result.returncode == 0, result.stderr
    assert "Warning:" in result.stderr and "openAIApiKey" in result.stderr
    assert "sk-literal-in-git" not in result.stderr
