"""A Credential becomes a validated, encrypted, owned Secret — and bad input gets a clear condition,
an Event, and loses nothing. The reconciler is tested alone here (webhook off), as it must stay
authoritative when admission is bypassed or unavailable."""

from __future__ import annotations

import base64
import collections
import json
import re
import secrets

import pytest
from kubernetes import client

from credbridge.core import envelope, names
from credbridge.kube import keyrings
from credbridge.testing import objects
from credbridge.testing.fixtures import AuditLog, Namespaces, unique_name

pytestmark = pytest.mark.cluster

OPENAI_KEY = "sk-test-" + secrets.token_hex(16)
PG_PASSWORD = "pg-" + secrets.token_hex(12)
OPERATOR_USER = "credbridge-operator"
OPERATOR_NAMESPACE = "credbridge-system"


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {
        "CRED_OPENAI": OPENAI_KEY,
        "CRED_PG_PASSWORD": PG_PASSWORD,
        "NOT_ALLOWED_TOKEN": "x",
        "CREDBRIDGE_INTERNAL": "y",
    }


@pytest.fixture(scope="module")
def operator_args() -> list[str]:
    return ["--webhook-port", "0"]


@pytest.fixture(autouse=True)
def _operator_running(credbridge_operator) -> None:  # type: ignore[no-untyped-def]
    assert credbridge_operator.process.alive()


def open_secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return objects.open_managed_secret(api, namespace, name, OPERATOR_NAMESPACE)


def opens_to(api: client.ApiClient, namespace: str, name: str, expected: dict[str, str]) -> bool:
    """True once the managed Secret opens to `expected` (False while it is tampered or missing)."""
    try:
        return open_secret(api, namespace, name) == expected
    except (envelope.EnvelopeError, AssertionError):
        return False


def test_env_reference_becomes_an_encrypted_secret_owned_by_the_credential(
    kube_api: client.ApiClient, namespace: str
) -> None:
    created = objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body(
            "openai", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"}, spec_extra={"displayName": "Team OpenAI"}
        ),
    )
    credential = objects.wait_for_reason(kube_api, namespace, "openai", "Encrypted")

    status = credential["status"]
    assert status["id"] == created["metadata"]["uid"]
    assert status["displayName"] == "Team OpenAI"
    assert status["fields"] == ["openAIApiKey"]
    assert status["shared"] is False
    assert status["observedGeneration"] == 1
    assert re.fullmatch(r"[0-9a-f]{8}", status["keyId"])
    assert status["createdDate"] and status["updatedDate"]

    secret = objects.read_secret(kube_api, namespace, "openai")
    assert secret is not None
    assert secret["type"] == names.SECRET_TYPE
    assert secret["metadata"]["labels"] == {
        names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE,
        names.CREDENTIAL_LABEL: "openai",
        names.TYPE_LABEL: "openAIApi",
    }
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Credential",
        "openai",
        created["metadata"]["uid"],
        True,
    )
    data = objects.decoded(secret)
    assert set(data) == {"encryptedData", "credentialName", "name", "id"}
    assert (data["credentialName"], data["name"], data["id"]) == ("openAIApi", "Team OpenAI", status["id"])
    assert data["encryptedData"].startswith(f"cb1.{status['keyId']}.")
    assert OPENAI_KEY not in json.dumps(secret)
    assert secret["metadata"]["annotations"][names.CONTENT_HMAC_ANNOTATION].startswith(status["keyId"] + ":")
    assert open_secret(kube_api, namespace, "openai") == {"openAIApiKey": OPENAI_KEY}


def test_embedded_references_and_escapes_resolve_inside_a_value(kube_api: client.ApiClient, namespace: str) -> None:
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body(
            "pg-url", "PostgresUrl", {"postgresUrl": "postgres://app:<<CRED_PG_PASSWORD>>@db:5432/app?note=\\<<x>>"}
        ),
    )
    objects.wait_for_reason(kube_api, namespace, "pg-url", "Encrypted")
    assert open_secret(kube_api, namespace, "pg-url") == {
        "postgresUrl": f"postgres://app:{PG_PASSWORD}@db:5432/app?note=<<x>>"
    }


def test_value_from_secret_is_encrypted_and_follows_changes_of_that_secret(
    kube_api: client.ApiClient, namespace: str
) -> None:
    objects.create_secret(kube_api, namespace, "db-password", {"password": "first-password"})
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body(
            "orders-db", "PostgresApi", {"user": "orders"}, value_from={"password": ("db-password", "password")}
        ),
    )
    first = objects.wait_for_reason(kube_api, namespace, "orders-db", "Encrypted")
    assert open_secret(kube_api, namespace, "orders-db") == {"user": "orders", "password": "first-password"}

    client.CoreV1Api(kube_api).patch_namespaced_secret(
        "db-password", namespace, {"stringData": {"password": "rotated-password"}}
    )
    objects.wait_until(
        lambda: open_secret(kube_api, namespace, "orders-db")["password"] == "rotated-password",
        what="the managed Secret to carry the new password",
    )
    after = objects.get_credential(kube_api, namespace, "orders-db")
    assert after is not None
    assert after["status"]["createdDate"] == first["status"]["createdDate"]


@pytest.mark.parametrize(
    ("type_name", "data", "reason", "must_mention"),
    [
        ("noSuchType", {"key": "v"}, "UnknownType", ["noSuchType"]),
        ("openAIApi", {}, "ValidationFailed", ["openAIApiKey", "required"]),
        ("openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>", "apiKey": "x"}, "ValidationFailed", ["apiKey"]),
        ("PostgresUrl", {"postgresUrl": "not a url"}, "ValidationFailed", ["postgresUrl", "URL"]),
        (
            "redisCacheApi",
            {"redisCacheHost": "h", "redisCachePort": "six", "redisCacheSslEnabled": "true"},
            "ValidationFailed",
            ["redisCachePort", "number"],
        ),
        (
            "redisCacheApi",
            {"redisCacheHost": "h", "redisCacheUser": "u", "redisCachePwd": "p", "redisCacheSslEnabled": "maybe"},
            "ValidationFailed",
            ["redisCacheSslEnabled", "true or false"],
        ),
        (
            "openAIApi",
            {"openAIApiKey": "<<CRED_NOT_SET_ANYWHERE>>"},
            "EnvReferenceMissing",
            ["openAIApiKey", "CRED_NOT_SET_ANYWHERE"],
        ),
        (
            "openAIApi",
            {"openAIApiKey": "<<NOT_ALLOWED_TOKEN>>"},
            "EnvReferenceForbidden",
            ["NOT_ALLOWED_TOKEN", "allow-list"],
        ),
        (
            "openAIApi",
            {"openAIApiKey": "<<CREDBRIDGE_INTERNAL>>"},
            "EnvReferenceForbidden",
            ["CREDBRIDGE_INTERNAL", "operator's own settings"],
        ),
        ("openAIApi", {"openAIApiKey": "<<KUBECONFIG>>"}, "EnvReferenceForbidden", ["KUBECONFIG"]),
    ],
    ids=[
        "unknown-type",
        "missing-required",
        "unknown-field",
        "bad-url",
        "bad-number",
        "bad-boolean",
        "missing-env",
        "forbidden-env",
        "operator-setting-env",
        "kubeconfig-env",
    ],
)
def test_bad_input_gets_a_condition_and_an_event_naming_the_problem(
    kube_api: client.ApiClient,
    namespace: str,
    type_name: str,
    data: dict[str, str],
    reason: str,
    must_mention: list[str],
) -> None:
    objects.create_credential(kube_api, namespace, objects.credential_body("bad", type_name, data))
    credential = objects.wait_for_reason(kube_api, namespace, "bad", reason)
    condition = objects.ready(credential)
    assert condition is not None and condition["status"] == "False"
    for word in must_mention:
        assert word in condition["message"]
    events = objects.wait_until(lambda: objects.events_for(kube_api, namespace, "bad"), what="a Warning Event")
    assert any(e["reason"] == reason and e["type"] == "Warning" for e in events)
    assert objects.read_secret(kube_api, namespace, "bad") is None
    assert OPENAI_KEY not in json.dumps(credential) + json.dumps(events)


def test_oversized_value_is_refused_with_the_limit(kube_api: client.ApiClient, namespace: str) -> None:
    # A literal that long is refused by the API server itself (the CRD's maxLength repeats the limit).
    with pytest.raises(client.ApiException) as refused:
        objects.create_credential(
            kube_api, namespace, objects.credential_body("big", "openAIApi", {"openAIApiKey": "x" * (65 * 1024)})
        )
    assert refused.value.status == 422
    assert "spec.data.openAIApiKey" in str(refused.value.body) and "65536" in str(refused.value.body)
    # A value that only the operator sees is refused by the reconciler, naming the field and the limit.
    objects.create_secret(kube_api, namespace, "big-source", {"key": "x" * (65 * 1024)})
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body("big", "openAIApi", value_from={"openAIApiKey": ("big-source", "key")}),
    )
    condition = objects.ready(objects.wait_for_reason(kube_api, namespace, "big", "ValidationFailed"))
    assert condition is not None and "openAIApiKey" in condition["message"] and "65536 bytes" in condition["message"]


@pytest.mark.parametrize("missing", ["secret", "key"])
def test_missing_secret_reference_names_the_secret_and_key(
    kube_api: client.ApiClient, namespace: str, missing: str
) -> None:
    if missing == "key":
        objects.create_secret(kube_api, namespace, "db", {"other": "v"})
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body("pg", "PostgresApi", {"user": "u"}, value_from={"password": ("db", "password")}),
    )
    condition = objects.ready(objects.wait_for_reason(kube_api, namespace, "pg", "SecretReferenceMissing"))
    assert condition is not None
    assert "'db'" in condition["message"] and "password" in condition["message"]


def test_foreign_secret_with_the_target_name_is_never_overwritten(kube_api: client.ApiClient, namespace: str) -> None:
    objects.create_secret(kube_api, namespace, "taken", {"mine": "keep-me"})
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body(
            "wants-taken",
            "openAIApi",
            {"openAIApiKey": "<<CRED_OPENAI>>"},
            spec_extra={"target": {"secretName": "taken"}},
        ),
    )
    condition = objects.ready(objects.wait_for_reason(kube_api, namespace, "wants-taken", "SecretConflict"))
    assert condition is not None and "taken" in condition["message"]
    foreign = objects.read_secret(kube_api, namespace, "taken")
    assert foreign is not None and objects.decoded(foreign) == {"mine": "keep-me"}


def test_duplicate_id_fails_the_newer_credential_only(kube_api: client.ApiClient, namespace: str) -> None:
    body = objects.credential_body(
        "first", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"}, spec_extra={"id": "shared-id"}
    )
    objects.create_credential(kube_api, namespace, body)
    objects.wait_for_reason(kube_api, namespace, "first", "Encrypted")
    second = objects.credential_body(
        "second", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"}, spec_extra={"id": "shared-id"}
    )
    objects.create_credential(kube_api, namespace, second)
    condition = objects.ready(objects.wait_for_reason(kube_api, namespace, "second", "DuplicateId"))
    assert condition is not None and "first" in condition["message"] and "shared-id" in condition["message"]
    assert objects.ready(objects.get_credential(kube_api, namespace, "first"))["reason"] == "Encrypted"  # type: ignore[index]


def test_tampered_ciphertext_is_repaired(kube_api: client.ApiClient, namespace: str) -> None:
    objects.create_credential(
        kube_api, namespace, objects.credential_body("openai", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"})
    )
    objects.wait_for_reason(kube_api, namespace, "openai", "Encrypted")
    secret = objects.read_secret(kube_api, namespace, "openai")
    assert secret is not None
    token = objects.decoded(secret)["encryptedData"]
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    client.CoreV1Api(kube_api).patch_namespaced_secret(
        "openai", namespace, {"data": {"encryptedData": base64.b64encode(tampered.encode()).decode()}}
    )

    def repaired() -> bool:
        current = objects.read_secret(kube_api, namespace, "openai")
        return current is not None and objects.decoded(current)["encryptedData"] != tampered

    objects.wait_until(repaired, what="the operator to rewrite the tampered Secret")
    assert open_secret(kube_api, namespace, "openai") == {"openAIApiKey": OPENAI_KEY}


def test_ciphertext_copied_from_another_credential_does_not_open_and_is_replaced(
    kube_api: client.ApiClient, namespace: str
) -> None:
    objects.create_credential(
        kube_api, namespace, objects.credential_body("a", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"})
    )
    objects.create_credential(
        kube_api, namespace, objects.credential_body("b", "openAIApi", {"openAIApiKey": "literal-key-of-b"})
    )
    objects.wait_for_reason(kube_api, namespace, "a", "Encrypted")
    objects.wait_for_reason(kube_api, namespace, "b", "Encrypted")
    secret_a = objects.read_secret(kube_api, namespace, "a")
    assert secret_a is not None
    copied = secret_a["data"]["encryptedData"]
    loaded = keyrings.load(kube_api, OPERATOR_NAMESPACE, names.DEFAULT_KEYRING_SECRET)
    assert loaded is not None
    credential_b = objects.get_credential(kube_api, namespace, "b")
    assert credential_b is not None
    aad_b = envelope.associated_data(namespace, "b", credential_b["status"]["id"], "openAIApi")
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_envelope(base64.b64decode(copied).decode(), loaded[0].keys, aad_b)

    client.CoreV1Api(kube_api).patch_namespaced_secret("b", namespace, {"data": {"encryptedData": copied}})
    objects.wait_until(
        lambda: objects.read_secret(kube_api, namespace, "b")["data"]["encryptedData"] != copied,  # type: ignore[index]
        what="the copied ciphertext to be replaced",
    )
    assert open_secret(kube_api, namespace, "b") == {"openAIApiKey": "literal-key-of-b"}


def test_deleted_managed_secret_is_recreated(kube_api: client.ApiClient, namespace: str) -> None:
    objects.create_credential(
        kube_api, namespace, objects.credential_body("openai", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"})
    )
    objects.wait_for_reason(kube_api, namespace, "openai", "Encrypted")
    old_uid = objects.read_secret(kube_api, namespace, "openai")["metadata"]["uid"]  # type: ignore[index]
    client.CoreV1Api(kube_api).delete_namespaced_secret("openai", namespace)
    recreated = objects.wait_until(
        lambda: (s := objects.read_secret(kube_api, namespace, "openai")) and s["metadata"]["uid"] != old_uid and s,
        what="the managed Secret to be recreated",
    )
    assert recreated["metadata"]["ownerReferences"][0]["name"] == "openai"
    assert open_secret(kube_api, namespace, "openai") == {"openAIApiKey": OPENAI_KEY}


def test_invalid_update_keeps_the_last_good_secret(kube_api: client.ApiClient, namespace: str) -> None:
    objects.create_credential(
        kube_api, namespace, objects.credential_body("openai", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"})
    )
    objects.wait_for_reason(kube_api, namespace, "openai", "Encrypted")
    before = objects.read_secret(kube_api, namespace, "openai")
    objects.patch_credential(kube_api, namespace, "openai", {"spec": {"data": {"openAIApiKey": "<<CRED_GONE>>"}}})
    credential = objects.wait_for_reason(kube_api, namespace, "openai", "EnvReferenceMissing")
    after = objects.read_secret(kube_api, namespace, "openai")
    assert after is not None and before is not None
    assert (
        after["data"] == before["data"]
        and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    )
    assert credential["status"]["keyId"] and credential["status"]["fields"] == ["openAIApiKey"]


def test_a_new_credential_costs_two_writes_and_one_for_its_check_and_a_restart_none(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    audit: AuditLog,
    credbridge_operator,  # type: ignore[no-untyped-def]
) -> None:
    namespace = namespaces.create("writes")
    mark = audit.mark()
    count = 5
    for index in range(count):
        objects.create_credential(
            kube_api, namespace, objects.credential_body(f"c{index}", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"})
        )
    for index in range(count):
        objects.wait_for_reason(kube_api, namespace, f"c{index}", "Encrypted")
    for index in range(count):
        # CRED_OPENAI is granted to no namespace here: the check reports NotReleased and sends nothing.
        objects.wait_for_verified(kube_api, namespace, f"c{index}", "NotReleased")
    writes = audit.writes(since=mark, user=OPERATOR_USER, namespace=namespace)
    kinds = collections.Counter(
        f"{w['verb']} {w['objectRef']['resource']}/{w['objectRef'].get('subresource', '')}"
        for w in writes
        if w["objectRef"]["resource"] != "events"
    )
    # The reconciler's two (the Secret and its status) and verification's one (the Verified condition, written
    # after the debounce: a separate writer of the same status).
    assert kinds == {"create secrets/": count, "patch credentials/status": 2 * count}, kinds

    mark = audit.mark()
    credbridge_operator.restart()
    # The restarted operator has listed and reconciled everything once it is healthy and its
    # reconcile metric counts every Credential in this namespace as unchanged.
    objects.wait_until(
        lambda: 'result="unchanged"' in credbridge_operator.process.metrics(), what="the first reconciles"
    )
    import time

    time.sleep(3)
    writes = audit.writes(since=mark, user=OPERATOR_USER, namespace=namespace)
    assert writes == [], [(w["verb"], w["objectRef"]) for w in writes]


def test_env_change_across_restart_reencrypts_and_missing_env_keeps_last_good_secret(
    kube_api: client.ApiClient,
    namespace: str,
    credbridge_operator,
    operator_env: dict[str, str],  # type: ignore[no-untyped-def]
) -> None:
    objects.create_credential(
        kube_api, namespace, objects.credential_body("rotating", "openAIApi", {"openAIApiKey": "<<CRED_ROTATING>>"})
    )
    objects.wait_for_reason(kube_api, namespace, "rotating", "EnvReferenceMissing")
    try:
        credbridge_operator.restart({**operator_env, "CRED_ROTATING": "first-value"})
        objects.wait_for_reason(kube_api, namespace, "rotating", "Encrypted")
        assert open_secret(kube_api, namespace, "rotating") == {"openAIApiKey": "first-value"}

        credbridge_operator.restart({**operator_env, "CRED_ROTATING": "second-value"})
        objects.wait_until(
            lambda: open_secret(kube_api, namespace, "rotating") == {"openAIApiKey": "second-value"},
            what="re-encryption with the new value",
        )

        before = objects.read_secret(kube_api, namespace, "rotating")
        credbridge_operator.restart(dict(operator_env))
        objects.wait_for_reason(kube_api, namespace, "rotating", "EnvReferenceMissing")
        after = objects.read_secret(kube_api, namespace, "rotating")
        assert before is not None and after is not None and after["data"] == before["data"]
        assert open_secret(kube_api, namespace, "rotating") == {"openAIApiKey": "second-value"}
    finally:
        if credbridge_operator.env != operator_env:
            credbridge_operator.restart(dict(operator_env))


def test_key_rotation_reencrypts_without_restart(
    kube_api: client.ApiClient,
    namespace: str,
    credbridge_operator,  # type: ignore[no-untyped-def]
) -> None:
    for name in ("one", "two", "three"):
        objects.create_credential(
            kube_api, namespace, objects.credential_body(name, "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"})
        )
    for name in ("one", "two", "three"):
        objects.wait_for_reason(kube_api, namespace, name, "Encrypted")
    pid = credbridge_operator.process.popen.pid
    rotated = keyrings.rotate(kube_api, OPERATOR_NAMESPACE, names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
    for name in ("one", "two", "three"):
        objects.wait_until(
            lambda name=name: (
                (objects.get_credential(kube_api, namespace, name) or {}).get("status", {}).get("keyId")
                == rotated.active_id
            ),
            what=f"{name} to move to key {rotated.active_id}",
        )
        assert open_secret(kube_api, namespace, name) == {"openAIApiKey": OPENAI_KEY}
    assert credbridge_operator.process.popen.pid == pid and credbridge_operator.process.alive()
    objects.wait_until(
        lambda: "credbridge_reencryption_pending 0.0" in credbridge_operator.process.metrics(),
        what="the re-encryption metric to reach 0",
    )


def test_custom_type_validates_and_a_type_change_revalidates(kube_api: client.ApiClient, namespace: str) -> None:
    type_name = "acme" + unique_name("Api").replace("-", "")
    custom = client.CustomObjectsApi(kube_api)
    body = {
        "apiVersion": names.API_VERSION,
        "kind": "CredentialType",
        "metadata": {"name": type_name.lower(), "labels": objects.TEST_LABEL},
        "spec": {
            "name": type_name,
            "label": "Acme",
            "version": 1,
            "inputs": [{"name": "token", "label": "Token", "type": "password"}],
        },
    }
    custom.create_cluster_custom_object(names.GROUP, names.VERSION, "credentialtypes", body)
    try:
        objects.wait_until(
            lambda: objects.create_credential(
                kube_api, namespace, objects.credential_body("acme", type_name, {"token": "<<CRED_OPENAI>>"})
            ),
            what="the Credential to be created",
        )
        objects.wait_for_reason(kube_api, namespace, "acme", "Encrypted", timeout=30)
        current = custom.get_cluster_custom_object(names.GROUP, names.VERSION, "credentialtypes", type_name.lower())
        current["spec"]["inputs"].append({"name": "region", "label": "Region", "type": "string"})
        custom.replace_cluster_custom_object(names.GROUP, names.VERSION, "credentialtypes", type_name.lower(), current)
        condition = objects.ready(objects.wait_for_reason(kube_api, namespace, "acme", "ValidationFailed"))
        assert condition is not None and "region" in condition["message"]
    finally:
        custom.delete_cluster_custom_object(names.GROUP, names.VERSION, "credentialtypes", type_name.lower())


def test_builtin_types_are_all_in_the_cluster_and_drift_is_reverted(kube_api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(kube_api)
    listed = custom.list_cluster_custom_object(
        names.GROUP, names.VERSION, "credentialtypes", label_selector=f"{names.BUILTIN_LABEL}=true"
    )
    assert len(listed["items"]) == 113
    custom.patch_cluster_custom_object(
        names.GROUP, names.VERSION, "credentialtypes", "openaiapi", {"spec": {"label": "Tampered"}}
    )
    objects.wait_until(
        lambda: (
            custom.get_cluster_custom_object(names.GROUP, names.VERSION, "credentialtypes", "openaiapi")["spec"][
                "label"
            ]
            == "OpenAI API"
        ),
        what="the built-in type to be reverted",
    )


def test_operator_reverts_drift_on_mirrors_even_without_the_webhook(
    kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    owner = namespaces.create("owner")
    target = namespaces.create("target", annotations={names.ACCEPT_SHARES_ANNOTATION: owner})
    objects.create_credential(
        kube_api,
        owner,
        objects.credential_body(
            "openai", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"}, spec_extra={"displayName": "Owner's key"}
        ),
    )
    objects.wait_for_reason(kube_api, owner, "openai", "Encrypted")
    objects.create_share(kube_api, owner, objects.share_body("s", "openai", [target]))
    mirror = f"{owner}.openai"
    objects.wait_for_reason(kube_api, target, mirror, "Encrypted")

    objects.patch_credential(kube_api, target, mirror, {"spec": {"displayName": "Hijacked"}})
    objects.wait_until(
        lambda: (objects.get_credential(kube_api, target, mirror) or {})["spec"]["displayName"] == "Owner's key",
        what="the mirror's spec to be reverted",
    )

    client.CoreV1Api(kube_api).patch_namespaced_secret(mirror, target, {"data": {"encryptedData": "AAAA"}})
    objects.wait_until(
        lambda: opens_to(kube_api, target, mirror, {"openAIApiKey": OPENAI_KEY}),
        what="the mirror's Secret to be repaired",
    )

    objects.delete_credential(kube_api, target, mirror)
    objects.wait_until(
        lambda: (
            (c := objects.get_credential(kube_api, target, mirror))
            and objects.ready(c)
            and objects.ready(c)["reason"] == "Encrypted"
        ),
        what="the deleted mirror to come back",
    )  # type: ignore[index]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"spec": {"type": "anthropicApi"}}, "spec.type is immutable"),
        ({"spec": {"id": "new-id"}}, "spec.id is immutable"),
        ({"spec": {"target": {"secretName": "elsewhere"}}}, "spec.target.secretName is immutable"),
    ],
    ids=["type", "id", "target-secret-name"],
)
def test_identity_fields_cannot_change_after_creation(
    kube_api: client.ApiClient, namespace: str, patch: dict[str, object], message: str
) -> None:
    objects.create_credential(
        kube_api, namespace, objects.credential_body("fixed", "openAIApi", {"openAIApiKey": "<<CRED_OPENAI>>"})
    )
    with pytest.raises(client.ApiException) as refused:
        objects.patch_credential(kube_api, namespace, "fixed", patch)
    assert refused.value.status == 422 and message in refused.value.body


def test_creating_the_missing_secret_later_makes_the_credential_ready(
    kube_api: client.ApiClient, namespace: str
) -> None:
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body(
            "late", "PostgresApi", {"user": "u"}, value_from={"password": ("comes-later", "password")}
        ),
    )
    objects.wait_for_reason(kube_api, namespace, "late", "SecretReferenceMissing")
    objects.create_secret(kube_api, namespace, "comes-later", {"password": "finally"})
    objects.wait_for_reason(kube_api, namespace, "late", "Encrypted")
    assert open_secret(kube_api, namespace, "late") == {"user": "u", "password": "finally"}
    events = objects.events_for(kube_api, namespace, "late")
    assert any(e["type"] == "Normal" and e["reason"] == "Encrypted" for e in events)
