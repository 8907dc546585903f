"""CredentialBindings on the local control plane: rendering into plain Secrets, update in one place,
rollouts, write discipline (audit log), governance, the tenancy attack, and every bad input of the
issue — each reported with a condition and an Event, nothing lost."""

from __future__ import annotations

import secrets
import time

import pytest
from kubernetes import client

from credbridge.core import names
from credbridge.kube import keyrings
from credbridge.local import controlplane
from credbridge.testing import objects
from credbridge.testing.fixtures import AuditLog, Namespaces, kubectl_run

pytestmark = pytest.mark.cluster

OPERATOR_USER = "credbridge-operator"
OPENAI_KEY = "sk-bind-" + secrets.token_hex(12)
TEAM_A_KEY = "sk-team-a-" + secrets.token_hex(12)
DEBOUNCE = 5.0


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"CRED_BIND_OPENAI": OPENAI_KEY, "CRED_TEAM_A_OPENAI_KEY": TEAM_A_KEY}


@pytest.fixture(scope="module")
def operator_args() -> list[str]:
    # CRED_BIND_* belongs to the test namespaces (bind-...); CRED_TEAM_A_* only passes the allow-list.
    return ["--env-policy", "CRED_BIND_*=bind-*", "--rollout-debounce", str(DEBOUNCE)]


@pytest.fixture(autouse=True)
def _operator_running(credbridge_operator) -> None:  # type: ignore[no-untyped-def]
    assert credbridge_operator.process.alive()


def postgres(api: client.ApiClient, namespace: str, password: str, name: str = "orders") -> None:
    objects.create_secret(api, namespace, f"{name}-db", {"password": password})
    objects.create_credential(
        api,
        namespace,
        objects.credential_body(
            name, "PostgresApi", {"user": "app user"}, value_from={"password": (f"{name}-db", "password")}
        ),
    )
    objects.wait_for_reason(api, namespace, name, "Encrypted")


def openai(api: client.ApiClient, namespace: str, name: str = "openai", variable: str = "CRED_BIND_OPENAI") -> None:
    objects.create_credential(
        api, namespace, objects.credential_body(name, "openAIApi", {"openAIApiKey": f"<<{variable}>>"})
    )
    objects.wait_for_reason(api, namespace, name, "Encrypted")


def secret_data(api: client.ApiClient, namespace: str, name: str) -> dict[str, str] | None:
    secret = objects.read_secret(api, namespace, name)
    return None if secret is None else objects.decoded(secret)


def events(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    return [f"{e['reason']}: {e['message']}" for e in objects.events_for(api, namespace, name)]


def wait_for_event(api: client.ApiClient, namespace: str, name: str, reason: str) -> str:
    found: str = objects.wait_until(
        lambda: next((e for e in events(api, namespace, name) if e.startswith(reason + ":")), None),
        30,
        f"a {reason} Event on {namespace}/{name}",
    )
    return found


def refused(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(client.ApiException) as error:
        call()
    return str(error.value.body)


URL_TEMPLATE = {
    "DATABASE_URL": "postgresql://${user|urlencode}:${password|urlencode}@orders-db:5432/orders",
    "PGPASSWORD": "${password}",
}


def test_a_binding_renders_a_plain_secret_with_app_shaped_keys(
    control_plane: controlplane.ControlPlane, kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    ns = namespaces.create("bind")
    postgres(kube_api, ns, "p@ss/word")
    openai(kube_api, ns)
    objects.create_binding(kube_api, ns, objects.binding_body("orders-url", "orders", template=URL_TEMPLATE))
    objects.create_binding(
        kube_api, ns, objects.binding_body("chat", "openai", template={"OPENAI_API_KEY": "${openAIApiKey}"})
    )
    objects.create_binding(kube_api, ns, objects.binding_body("orders-plain", "orders"))
    for name in ("orders-url", "chat", "orders-plain"):
        objects.wait_for_binding(kube_api, ns, name, "Rendered")

    assert secret_data(kube_api, ns, "orders-url") == {
        "DATABASE_URL": "postgresql://app%20user:p%40ss%2Fword@orders-db:5432/orders",
        "PGPASSWORD": "p@ss/word",
    }
    assert secret_data(kube_api, ns, "chat") == {"OPENAI_API_KEY": OPENAI_KEY}
    assert secret_data(kube_api, ns, "orders-plain") == {"user": "app user", "password": "p@ss/word"}
    secret = objects.read_secret(kube_api, ns, "chat") or {}
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"][names.BINDING_LABEL] == "chat"
    assert secret["metadata"]["labels"][names.BOUND_CREDENTIAL_LABEL] == "openai"
    binding = objects.get_binding(kube_api, ns, "chat") or {}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == binding["metadata"]["uid"]
    assert binding["status"]["keys"] == ["OPENAI_API_KEY"]
    assert binding["status"]["contentHmac"] == secret["metadata"]["annotations"][names.CONTENT_HMAC_ANNOTATION]

    # The Credential lists its bindings; kubectl shows the count and filters by type.
    objects.wait_until(
        lambda: (
            (objects.get_credential(kube_api, ns, "orders") or {}).get("status", {}).get("usedBy")
            == ["orders-plain", "orders-url"]
        ),
        what="usedBy on the Credential",
    )
    table = kubectl_run(control_plane, "get", "credentials", "-n", ns).stdout
    assert "USED BY" in table
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["openai", "orders"]
    selected = kubectl_run(
        control_plane, "get", "credentials", "-n", ns, "--field-selector", "spec.type=openAIApi", "-o", "name"
    )
    assert selected.returncode == 0, selected.stderr
    assert selected.stdout.split() == ["credential.credbridge.io/openai"]
    bindings = kubectl_run(control_plane, "get", "credbinding", "-n", ns)
    assert "CREDENTIAL" in bindings.stdout and "orders-url" in bindings.stdout

    # Deleting the binding removes its Secret (garbage collection of the owned Secret).
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        names.GROUP, names.VERSION, ns, names.CREDENTIAL_BINDING_PLURAL, "chat"
    )
    objects.wait_until(lambda: objects.read_secret(kube_api, ns, "chat") is None, 60, "the Secret to go")


def test_an_update_in_one_place_reaches_every_binding_and_rolls_out_once(
    kube_api: client.ApiClient, namespaces: Namespaces, audit: AuditLog
) -> None:
    ns = namespaces.create("bind")
    postgres(kube_api, ns, "v0")
    client.AppsV1Api(kube_api).create_namespaced_deployment(ns, objects.deployment_body("api"))
    objects.create_binding(kube_api, ns, objects.binding_body("url", "orders", template=URL_TEMPLATE))
    objects.create_binding(kube_api, ns, objects.binding_body("plain", "orders"))
    objects.create_binding(
        kube_api,
        ns,
        objects.binding_body(
            "rolls", "orders", template={"PGPASSWORD": "${password}"}, rollout=[("Deployment", "api")]
        ),
    )
    for name in ("url", "plain", "rolls"):
        objects.wait_for_binding(kube_api, ns, name, "Rendered")
    objects.wait_for_binding(kube_api, ns, "rolls", "TargetsFound", condition="RolloutReady")
    assert names.RESTARTED_AT_ANNOTATION not in objects.pod_template_annotations(kube_api, ns, "api")

    mark = audit.mark()
    core = client.CoreV1Api(kube_api)
    for index in range(1, 11):  # ten changes in about a second
        core.patch_namespaced_secret("orders-db", ns, {"stringData": {"password": f"v{index}"}})
        time.sleep(0.1)
    objects.wait_until(
        lambda: (
            (secret_data(kube_api, ns, "plain") or {}).get("password") == "v10"
            and (secret_data(kube_api, ns, "rolls") or {}).get("PGPASSWORD") == "v10"
            and "app%20user:v10@" in (secret_data(kube_api, ns, "url") or {}).get("DATABASE_URL", "")
        ),
        60,
        "every binding Secret to hold the new password",
    )
    annotations = objects.wait_until(
        lambda: (
            objects.pod_template_annotations(kube_api, ns, "api").get(names.RESTARTED_AT_ANNOTATION)
            and objects.pod_template_annotations(kube_api, ns, "api")
        ),
        DEBOUNCE + 30,
        "the Deployment's pod template to be annotated",
    )
    assert annotations[names.RESTARTED_BY_ANNOTATION] == "CredentialBinding/rolls"
    time.sleep(DEBOUNCE + 2)
    rollouts = audit.writes(since=mark, user=OPERATOR_USER, resources=["deployments"], namespace=ns)
    assert len(rollouts) == 1, f"expected one debounced rollout, got {len(rollouts)}"
    assert any(e.startswith("RolledOut:") for e in events(kube_api, ns, "rolls"))


def test_rotation_and_restart_write_nothing_and_drift_is_repaired(
    kube_api: client.ApiClient, namespaces: Namespaces, audit: AuditLog, credbridge_operator
) -> None:  # type: ignore[no-untyped-def]
    ns = namespaces.create("bind")
    openai(kube_api, ns)
    objects.create_binding(
        kube_api, ns, objects.binding_body("chat", "openai", template={"OPENAI_API_KEY": "${openAIApiKey}"})
    )
    objects.wait_for_binding(kube_api, ns, "chat", "Rendered")
    objects.wait_until(
        lambda: (objects.get_credential(kube_api, ns, "openai") or {}).get("status", {}).get("usedByCount") == 1,
        what="usage",
    )
    objects.wait_for_verified(kube_api, ns, "openai")  # its first check is written before anything is counted

    # A key rotation re-encrypts the Credential but changes no plaintext: the binding writes nothing.
    mark = audit.mark()
    rotated = keyrings.rotate(kube_api, "credbridge-system", names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
    objects.wait_until(
        lambda: (
            (objects.get_credential(kube_api, ns, "openai") or {}).get("status", {}).get("keyId") == rotated.active_id
        ),
        60,
        "the Credential to be re-encrypted",
    )
    time.sleep(3)
    binding_writes = [
        w
        for w in audit.writes(since=mark, user=OPERATOR_USER, namespace=ns)
        if w["objectRef"]["resource"] == "credentialbindings" or w["objectRef"].get("name") == "chat"
    ]
    assert binding_writes == [], [(w["verb"], w["objectRef"]) for w in binding_writes]

    # A restart with nothing changed writes nothing at all in the namespace.
    credbridge_operator.restart()
    objects.wait_until(
        lambda: 'kind="binding",result="unchanged"' in credbridge_operator.process.metrics(), 60, "the resync"
    )
    mark = audit.mark()
    time.sleep(3)
    restart_writes = audit.writes(since=mark, user=OPERATOR_USER, namespace=ns)
    assert restart_writes == [], [(w["verb"], w["objectRef"]) for w in restart_writes]

    # Drift and deletion of the binding's Secret are repaired.
    client.CoreV1Api(kube_api).patch_namespaced_secret("chat", ns, {"stringData": {"OPENAI_API_KEY": "tampered"}})
    objects.wait_until(lambda: secret_data(kube_api, ns, "chat") == {"OPENAI_API_KEY": OPENAI_KEY}, 30, "repair")
    client.CoreV1Api(kube_api).delete_namespaced_secret("chat", ns)
    objects.wait_until(lambda: secret_data(kube_api, ns, "chat") == {"OPENAI_API_KEY": OPENAI_KEY}, 30, "re-creation")


def test_the_webhook_refuses_bad_bindings_and_nothing_is_lost(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    ns = namespaces.create("bind")
    openai(kube_api, ns)
    good = objects.binding_body("chat", "openai", template={"OPENAI_API_KEY": "${openAIApiKey}"})
    objects.create_binding(kube_api, ns, good)
    objects.wait_for_binding(kube_api, ns, "chat", "Rendered")
    patch = lambda spec: lambda: objects.patch_binding(kube_api, ns, "chat", {"spec": spec})  # noqa: E731

    unknown = refused(patch({"template": {"OPENAI_API_KEY": "${openAIKey}"}}))
    assert "field 'openAIKey' does not exist in type 'openAIApi'; its fields are: openAIApiKey" in unknown
    bad_key = refused(patch({"template": {"OPENAI API KEY": "${openAIApiKey}"}}))
    assert "'OPENAI API KEY' is not a valid Secret key" in bad_key
    syntax = refused(patch({"template": {"OPENAI_API_KEY": "Bearer ${openAIApiKey"}}))
    assert "spec.template.OPENAI_API_KEY, character 8: '${' is not closed" in syntax
    kind = refused(patch({"rollout": [{"kind": "CronJob", "name": "nightly"}]}))
    assert "'CronJob' is not supported: use one of Deployment, StatefulSet, DaemonSet" in kind
    other_namespace = refused(patch({"credential": "team-a/openai"}))
    assert "spec.credential" in other_namespace

    # Nothing lost: the binding, its status and its Secret are as before.
    assert (objects.get_binding(kube_api, ns, "chat") or {})["spec"] == good["spec"]
    objects.wait_for_binding(kube_api, ns, "chat", "Rendered")
    assert secret_data(kube_api, ns, "chat") == {"OPENAI_API_KEY": OPENAI_KEY}


def test_unknown_fields_found_later_foreign_secrets_and_other_namespaces_are_reported(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    ns = namespaces.create("bind")
    other = namespaces.create("bind")
    # GitOps order: the binding arrives before its Credential, so the webhook cannot check fields yet.
    objects.create_binding(kube_api, ns, objects.binding_body("early", "openai", template={"KEY": "${apiKey}"}))
    objects.create_secret(kube_api, ns, "taken", {"mine": "do-not-touch"})
    objects.create_binding(kube_api, ns, objects.binding_body("conflict", "openai", secret="taken"))
    openai(kube_api, other)  # exists, but in another namespace
    objects.create_binding(kube_api, ns, objects.binding_body("elsewhere", "missing-here"))
    openai(kube_api, ns)

    objects.wait_for_binding(kube_api, ns, "early", "UnknownField")
    assert "field 'apiKey' does not exist in type 'openAIApi'" in wait_for_event(kube_api, ns, "early", "UnknownField")
    assert objects.read_secret(kube_api, ns, "early") is None

    objects.wait_for_binding(kube_api, ns, "conflict", "SecretConflict")
    assert "Secret taken already exists" in wait_for_event(kube_api, ns, "conflict", "SecretConflict")
    assert secret_data(kube_api, ns, "taken") == {"mine": "do-not-touch"}

    objects.wait_for_binding(kube_api, ns, "elsewhere", "CredentialNotFound")
    wait_for_event(kube_api, ns, "elsewhere", "CredentialNotFound")
    assert objects.read_secret(kube_api, ns, "elsewhere") is None

    objects.patch_binding(kube_api, ns, "early", {"spec": {"template": {"KEY": "${openAIApiKey}"}}})
    objects.wait_for_binding(kube_api, ns, "early", "Rendered")
    assert secret_data(kube_api, ns, "early") == {"KEY": OPENAI_KEY}


def test_a_missing_rollout_target_is_reported_and_the_secret_still_written(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    ns = namespaces.create("bind")
    openai(kube_api, ns)
    objects.create_binding(kube_api, ns, objects.binding_body("chat", "openai", rollout=[("Deployment", "nope")]))
    objects.wait_for_binding(kube_api, ns, "chat", "TargetNotFound", condition="RolloutReady")
    assert "Deployment nope do not exist" in wait_for_event(kube_api, ns, "chat", "TargetNotFound")
    objects.wait_for_binding(kube_api, ns, "chat", "Rendered")
    assert secret_data(kube_api, ns, "chat") == {"openAIApiKey": OPENAI_KEY}


def test_a_mirror_is_bound_only_when_its_share_allows_plain_secrets(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    owner = namespaces.create("bind")
    target = namespaces.create("bind", annotations={names.ACCEPT_SHARES_ANNOTATION: owner})
    postgres(kube_api, owner, "shared-v1")
    objects.create_share(kube_api, owner, objects.share_body("to-target", "orders", [target]))
    mirror = f"{owner}.orders"
    objects.wait_for_reason(kube_api, target, mirror, "Encrypted")
    objects.create_binding(
        kube_api, target, objects.binding_body("orders", mirror, template={"PGPASSWORD": "${password}"})
    )

    objects.wait_for_binding(kube_api, target, "orders", "ShareForbidsBinding")
    assert "allowPlaintextBindings" in wait_for_event(kube_api, target, "orders", "ShareForbidsBinding")
    assert objects.read_secret(kube_api, target, "orders") is None

    def share_patch(allow: bool) -> None:
        client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            owner,
            names.CREDENTIAL_SHARE_PLURAL,
            "to-target",
            {"spec": {"allowPlaintextBindings": allow}},
        )

    share_patch(True)
    objects.wait_for_binding(kube_api, target, "orders", "Rendered")
    assert secret_data(kube_api, target, "orders") == {"PGPASSWORD": "shared-v1"}

    # A change of the share's source reaches the binding of its mirror in the other namespace.
    client.CoreV1Api(kube_api).patch_namespaced_secret("orders-db", owner, {"stringData": {"password": "shared-v2"}})
    objects.wait_until(
        lambda: secret_data(kube_api, target, "orders") == {"PGPASSWORD": "shared-v2"}, 60, "the source's change"
    )

    share_patch(False)  # the owner withdraws it: the plain Secret goes
    objects.wait_for_binding(kube_api, target, "orders", "ShareForbidsBinding")
    objects.wait_until(lambda: objects.read_secret(kube_api, target, "orders") is None, 30, "the Secret to go")


def test_the_tenancy_attack_does_not_release_another_teams_value(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    team_b = namespaces.create("team-b")
    # The allow-list (CRED_*) lets the reference resolve, so the Credential itself is encrypted...
    openai(kube_api, team_b, "stolen", variable="CRED_TEAM_A_OPENAI_KEY")
    objects.create_binding(kube_api, team_b, objects.binding_body("steal", "stolen"))
    # ...but no namespace rule grants CRED_TEAM_A_* to team-b, so it never leaves as plaintext.
    objects.wait_for_binding(kube_api, team_b, "steal", "EnvNotGranted")
    message = wait_for_event(kube_api, team_b, "steal", "EnvNotGranted")
    assert "CRED_TEAM_A_OPENAI_KEY" in message
    time.sleep(2)
    for secret in client.CoreV1Api(kube_api).list_namespaced_secret(team_b).items:
        for value in (secret.data or {}).values():
            assert TEAM_A_KEY not in objects.decoded({"data": {"v": value}})["v"], secret.metadata.name


def test_deleting_a_bound_credential_is_refused_unless_annotated(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    ns = namespaces.create("bind")
    openai(kube_api, ns)
    objects.create_binding(kube_api, ns, objects.binding_body("chat", "openai"))
    objects.wait_for_binding(kube_api, ns, "chat", "Rendered")

    # A Pod reading the binding's Secret shows in the Credential's status, and in the refusal.
    client.CoreV1Api(kube_api).create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "reader", "labels": objects.TEST_LABEL},
            "spec": {
                "containers": [
                    {"name": "app", "image": "registry.invalid/app:1", "envFrom": [{"secretRef": {"name": "chat"}}]}
                ]
            },
        },
    )
    objects.wait_until(
        lambda: (
            (objects.get_credential(kube_api, ns, "openai") or {}).get("status", {}).get("usedByPods") == ["reader"]
        ),
        30,
        "usedByPods",
    )
    message = refused(lambda: objects.delete_credential(kube_api, ns, "openai"))
    assert "CredentialBinding(s) chat" in message and names.ALLOW_DELETE_IN_USE_ANNOTATION in message
    assert "Pod(s) reader" in message
    assert secret_data(kube_api, ns, "chat") == {"openAIApiKey": OPENAI_KEY}

    objects.patch_credential(
        kube_api, ns, "openai", {"metadata": {"annotations": {names.ALLOW_DELETE_IN_USE_ANNOTATION: "true"}}}
    )
    objects.delete_credential(kube_api, ns, "openai")
    objects.wait_for_binding(kube_api, ns, "chat", "CredentialNotFound")
    wait_for_event(kube_api, ns, "chat", "CredentialNotFound")
    objects.wait_until(lambda: objects.read_secret(kube_api, ns, "chat") is None, 30, "the output to be removed")


def test_the_cluster_flag_denies_plain_output(
    kube_api: client.ApiClient, namespaces: Namespaces, credbridge_operator
) -> None:  # type: ignore[no-untyped-def]
    ns = namespaces.create("bind")
    openai(kube_api, ns)
    objects.create_binding(kube_api, ns, objects.binding_body("chat", "openai"))
    objects.wait_for_binding(kube_api, ns, "chat", "Rendered")
    try:
        credbridge_operator.restart(extra_args=("--binding-secrets", "deny"))
        objects.wait_for_binding(kube_api, ns, "chat", "PlaintextDenied")
        assert "--binding-secrets=deny" in wait_for_event(kube_api, ns, "chat", "PlaintextDenied")
        objects.wait_until(lambda: objects.read_secret(kube_api, ns, "chat") is None, 30, "the output to be withdrawn")
    finally:
        credbridge_operator.restart()
    objects.wait_for_binding(kube_api, ns, "chat", "Rendered")
    assert secret_data(kube_api, ns, "chat") == {"openAIApiKey": OPENAI_KEY}


@pytest.mark.timeout(900)
def test_five_hundred_bindings_on_one_credential_all_converge(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    ns = namespaces.create("bind")
    postgres(kube_api, ns, "first")
    count = 500
    for index in range(count):
        objects.create_binding(
            kube_api, ns, objects.binding_body(f"b{index:03d}", "orders", template={"PGPASSWORD": "${password}"})
        )
    core = client.CoreV1Api(kube_api)

    def holding(value: str) -> int:
        listed = core.list_namespaced_secret(ns, label_selector=f"{names.BOUND_CREDENTIAL_LABEL}=orders").items
        return sum(1 for s in listed if objects.decoded({"data": s.data or {}}).get("PGPASSWORD") == value)

    objects.wait_until(lambda: holding("first") == count, 600, f"{count} binding Secrets")
    objects.wait_until(
        lambda: (objects.get_credential(kube_api, ns, "orders") or {}).get("status", {}).get("usedByCount") == count,
        60,
        "usedByCount",
    )
    core.patch_namespaced_secret("orders-db", ns, {"stringData": {"password": "second"}})
    objects.wait_until(lambda: holding("second") == count, 600, f"{count} binding Secrets to follow the change")
