"""The Flowise bridge against a real Flowise (the `flowise` npm package on PostgreSQL): pushes with
stable ids, updates, key rotation without pushes, reverting edits made in Flowise, delete, prune,
Flowise restarts, API key problems, id collisions, unknown types and the tenancy rule.

What a user sees is checked: the FlowiseTarget's status and Events, what Flowise's API lists, and
what Flowise stored in its database (decrypted with Flowise's own key).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from credbridge.core import names
from credbridge.kube import keyrings
from credbridge.local import controlplane
from credbridge.local import flowise as local_flowise
from credbridge.testing import flowise as flowise_testing
from credbridge.testing import objects
from credbridge.testing.fixtures import Namespaces

pytestmark = pytest.mark.cluster

GRANTED_PREFIX = "fw-granted"


@pytest.fixture(scope="module")
def operator_args() -> list[str]:
    # A short resync so edits made in Flowise are noticed within the test's patience.
    return [
        "--flowise-resync",
        "2",
        "--flowise-timeout",
        "5",
        "--flowise-max-response-bytes",
        str(1024 * 1024),
        "--env-policy",
        f"CRED_FLOWISE_*={GRANTED_PREFIX}-*",
    ]


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    # CRED_FLOWISE_KEY is granted to the fw-granted-* namespaces; CRED_PLAIN_KEY only passes the allow-list.
    return {
        "CRED_FLOWISE_KEY": "sk-from-env-" + secrets.token_hex(6),
        "CRED_PLAIN_KEY": "sk-plain-" + secrets.token_hex(6),
    }


stored_fields = flowise_testing.stored_fields


def listed(server: local_flowise.FlowiseServer) -> dict[str, Any]:
    return {item.id: item for item in flowise_testing.flowise_api(server).list_credentials()}


def setup_target(
    api: client.ApiClient, namespace: str, server: local_flowise.FlowiseServer, name: str = "flowise", **kwargs: Any
) -> None:
    assert server.api_key is not None
    flowise_testing.create_api_key_secret(api, namespace, "flowise-api-key", server.api_key.reveal())
    flowise_testing.create_target(
        api, namespace, flowise_testing.target_body(name, server.url, "flowise-api-key", **kwargs)
    )


def wait_entry(
    api: client.ApiClient, namespace: str, credential: str, state: str, target: str = "flowise", timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = flowise_testing.entry(flowise_testing.get_target(api, namespace, target), credential)
        return found if found and found.get("state") == state else None

    try:
        result: dict[str, Any] = objects.wait_until(check, timeout, f"{credential} to be {state} in {target}")
    except AssertionError:
        current = flowise_testing.get_target(api, namespace, target)
        raise AssertionError(
            f"{credential} not {state}; target status: {json.dumps((current or {}).get('status'))}"
        ) from None
    return result


def wait_reason(
    api: client.ApiClient, namespace: str, reason: str, target: str = "flowise", timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = flowise_testing.get_target(api, namespace, target)
        return found if flowise_testing.ready_reason(found) == reason else None

    try:
        result: dict[str, Any] = objects.wait_until(check, timeout, f"target {target} to report {reason}")
    except AssertionError:
        current = flowise_testing.get_target(api, namespace, target)
        raise AssertionError(f"target not {reason}; status: {json.dumps((current or {}).get('status'))}") from None
    return result


def event_reasons(api: client.ApiClient, namespace: str, name: str = "flowise") -> list[str]:
    return [str(event.get("reason")) for event in objects.events_for(api, namespace, name)]


def test_pushes_selected_credentials_with_their_ids_and_follows_updates(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    key_one, key_two = "sk-one-" + secrets.token_hex(8), "sk-two-" + secrets.token_hex(8)
    chosen_id = str(uuid.uuid4())
    selected = objects.credential_body(
        "openai", "openAIApi", {"openAIApiKey": key_one}, spec_extra={"id": chosen_id, "displayName": "Team OpenAI"}
    )
    selected["metadata"]["labels"]["flowise"] = "yes"
    objects.create_credential(kube_api, namespace, selected)
    objects.create_credential(
        kube_api, namespace, objects.credential_body("other", "openAIApi", {"openAIApiKey": key_two})
    )
    setup_target(kube_api, namespace, flowise_server, selector={"matchLabels": {"flowise": "yes"}})

    entry = wait_entry(kube_api, namespace, "openai", "Synced")
    assert entry["id"] == chosen_id and entry["owned"] is True
    assert entry["pushedHmac"].count(":") == 1 and key_one not in json.dumps(entry)
    remote = listed(flowise_server)[chosen_id]
    assert (remote.name, remote.credential_name) == ("Team OpenAI", "openAIApi")
    assert stored_fields(flowise_server, chosen_id) == {"openAIApiKey": key_one}
    other_id = objects.get_credential(kube_api, namespace, "other")["status"]["id"]  # type: ignore[index]
    assert other_id not in listed(flowise_server), "a Credential the selector leaves out is not pushed"
    target = wait_reason(kube_api, namespace, "Synced")
    assert target["status"]["counts"] == {"synced": 1, "pending": 0, "failed": 0, "conflicts": 0}
    assert target["status"]["flowiseVersion"] == local_flowise.FLOWISE_VERSION
    assert target["status"]["reachable"] is True
    assert target["metadata"]["finalizers"] == ["credbridge.io/flowise-cleanup"]

    # An update of the Credential reaches Flowise, under the same id.
    new_key = "sk-new-" + secrets.token_hex(8)
    objects.patch_credential(kube_api, namespace, "openai", {"spec": {"data": {"openAIApiKey": new_key}}})
    objects.wait_until(
        lambda: stored_fields(flowise_server, chosen_id) == {"openAIApiKey": new_key}, 60, "the update in Flowise"
    )
    assert [item for item in listed(flowise_server) if item == chosen_id] == [chosen_id]


def test_key_rotation_pushes_nothing_and_rekeys_the_hmac(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body("rotated", "openAIApi", {"openAIApiKey": "sk-" + secrets.token_hex(8)}),
    )
    setup_target(kube_api, namespace, flowise_server)
    before = wait_entry(kube_api, namespace, "rotated", "Synced")
    updated_before = listed(flowise_server)[before["id"]].updated_date

    ring = keyrings.rotate(kube_api, "credbridge-system", names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
    objects.wait_until(
        lambda: (
            (flowise_testing.entry(flowise_testing.get_target(kube_api, namespace, "flowise"), "rotated") or {})
            .get("pushedHmac", "")
            .startswith(ring.active_id + ":")
        ),
        60,
        "the pushed HMAC to move to the new key",
    )
    after = flowise_testing.entry(flowise_testing.get_target(kube_api, namespace, "flowise"), "rotated")
    assert after is not None and after["lastPushTime"] == before["lastPushTime"], "a rotation pushes nothing"
    assert listed(flowise_server)[before["id"]].updated_date == updated_before


def test_an_edit_made_in_flowise_is_reverted_with_an_event(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    value = "sk-" + secrets.token_hex(8)
    objects.create_credential(
        kube_api, namespace, objects.credential_body("edited", "openAIApi", {"openAIApiKey": value})
    )
    setup_target(kube_api, namespace, flowise_server)
    entry = wait_entry(kube_api, namespace, "edited", "Synced")
    # What Flowise's UI does: PUT with the admin's session.
    assert flowise_server.admin is not None
    flowise_server.admin.call(
        "PUT",
        f"/credentials/{entry['id']}",
        {"name": "changed by hand", "credentialName": "openAIApi", "plainDataObj": {"openAIApiKey": "sk-ui"}},
    )
    assert stored_fields(flowise_server, entry["id"]) == {"openAIApiKey": "sk-ui"}
    objects.wait_until(lambda: stored_fields(flowise_server, entry["id"]) == {"openAIApiKey": value}, 60, "the revert")
    assert listed(flowise_server)[entry["id"]].name == "edited"
    objects.wait_until(lambda: "RevertedFlowiseEdit" in event_reasons(kube_api, namespace), 30, "the revert Event")


def test_delete_unselect_prune_and_target_deletion_clean_up_flowise(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    for name in ("gone", "unselected", "kept"):
        body = objects.credential_body(name, "openAIApi", {"openAIApiKey": "sk-" + secrets.token_hex(8)})
        body["metadata"]["labels"]["push"] = "yes"
        objects.create_credential(kube_api, namespace, body)
    setup_target(kube_api, namespace, flowise_server, selector={"matchLabels": {"push": "yes"}})
    ids = {name: wait_entry(kube_api, namespace, name, "Synced")["id"] for name in ("gone", "unselected", "kept")}

    objects.delete_credential(kube_api, namespace, "gone")
    objects.wait_until(lambda: ids["gone"] not in listed(flowise_server), 60, "the deleted Credential to leave Flowise")
    objects.patch_credential(kube_api, namespace, "unselected", {"metadata": {"labels": {"push": "no"}}})
    objects.wait_until(
        lambda: ids["unselected"] not in listed(flowise_server), 60, "the unselected Credential to leave Flowise"
    )
    assert ids["kept"] in listed(flowise_server)

    flowise_testing.delete_target(kube_api, namespace, "flowise")
    objects.wait_until(
        lambda: flowise_testing.get_target(kube_api, namespace, "flowise") is None, 60, "the target to go"
    )
    assert ids["kept"] not in listed(flowise_server), "deleting the target removes what it pushed"


def test_without_prune_flowise_keeps_what_was_pushed(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body("stays", "openAIApi", {"openAIApiKey": "sk-" + secrets.token_hex(8)}),
    )
    setup_target(kube_api, namespace, flowise_server, prune=False)
    credential_id = wait_entry(kube_api, namespace, "stays", "Synced")["id"]
    objects.delete_credential(kube_api, namespace, "stays")
    objects.wait_until(
        lambda: flowise_testing.entry(flowise_testing.get_target(kube_api, namespace, "flowise"), "stays") is None,
        60,
        "the entry to go",
    )
    flowise_testing.delete_target(kube_api, namespace, "flowise")
    objects.wait_until(
        lambda: flowise_testing.get_target(kube_api, namespace, "flowise") is None, 60, "the target to go"
    )
    assert credential_id in listed(flowise_server)
    flowise_testing.flowise_api(flowise_server).delete_credential(credential_id)


def test_id_collision_with_a_hand_made_credential_is_a_conflict_and_it_is_left_alone(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    taken = str(uuid.uuid4())
    api = flowise_testing.flowise_api(flowise_server)
    api.put_credential(
        {
            "id": taken,
            "name": "made by hand",
            "credentialName": "openAIApi",
            "plainDataObj": {"openAIApiKey": "sk-hand"},
        }
    )
    updated = listed(flowise_server)[taken].updated_date
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body("clash", "openAIApi", {"openAIApiKey": "sk-mine"}, spec_extra={"id": taken}),
    )
    setup_target(kube_api, namespace, flowise_server)
    entry = wait_entry(kube_api, namespace, "clash", "Conflict")
    assert entry["owned"] is False and "did not create" in entry["message"]
    target = wait_reason(kube_api, namespace, "Conflict")
    assert target["status"]["counts"]["conflicts"] == 1
    assert (
        listed(flowise_server)[taken].updated_date == updated and listed(flowise_server)[taken].name == "made by hand"
    )
    assert stored_fields(flowise_server, taken) == {"openAIApiKey": "sk-hand"}
    assert "Conflict" in event_reasons(kube_api, namespace)
    # Deleting the target does not delete what it never owned.
    flowise_testing.delete_target(kube_api, namespace, "flowise")
    objects.wait_until(
        lambda: flowise_testing.get_target(kube_api, namespace, "flowise") is None, 60, "the target to go"
    )
    assert taken in listed(flowise_server)
    api.delete_credential(taken)


def test_wrong_api_key_and_missing_permission_are_reported(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    objects.create_credential(kube_api, namespace, objects.credential_body("c", "openAIApi", {"openAIApiKey": "sk-x"}))
    flowise_testing.create_api_key_secret(kube_api, namespace, "wrong-key", "not-a-key-" + secrets.token_hex(8))
    flowise_testing.create_target(
        kube_api, namespace, flowise_testing.target_body("flowise", flowise_server.url, "wrong-key")
    )
    target = wait_reason(kube_api, namespace, "Unauthorized")
    assert "spec.apiKeySecretRef" in objects.ready(target)["message"]  # type: ignore[index]

    assert flowise_server.admin is not None
    view_only = flowise_server.admin.create_api_key("view-only-" + secrets.token_hex(3), ["credentials:view"])
    flowise_testing.create_api_key_secret(kube_api, namespace, "view-key", view_only.reveal())
    flowise_testing.create_target(
        kube_api, namespace, flowise_testing.target_body("viewer", flowise_server.url, "view-key")
    )
    target = wait_reason(kube_api, namespace, "Forbidden", target="viewer")
    assert "credentials:create" in objects.ready(target)["message"]  # type: ignore[index]
    assert "Forbidden" in event_reasons(kube_api, namespace, "viewer")


def test_unknown_type_invalid_id_and_ungranted_env_values_are_reported_not_pushed(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    flowise_server: local_flowise.FlowiseServer,
    credbridge_operator: Any,
) -> None:
    namespace = namespaces.create("fw-checks")
    type_name = "credbridgeTest" + secrets.token_hex(3)
    client.CustomObjectsApi(kube_api).create_cluster_custom_object(
        names.GROUP,
        names.VERSION,
        names.CREDENTIAL_TYPE_PLURAL,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.CREDENTIAL_TYPE_KIND,
            "metadata": {"name": type_name.lower(), "labels": dict(objects.TEST_LABEL)},
            "spec": {
                "name": type_name,
                "label": "Test",
                "version": 1,
                "inputs": [{"name": "token", "label": "Token", "type": "password"}],
            },
        },
    )
    try:
        objects.create_credential(kube_api, namespace, objects.credential_body("custom", type_name, {"token": "t"}))
        objects.create_credential(
            kube_api,
            namespace,
            objects.credential_body("notuuid", "openAIApi", {"openAIApiKey": "k"}, spec_extra={"id": "my-openai"}),
        )
        objects.create_credential(
            kube_api,
            namespace,
            objects.credential_body("fromenv", "openAIApi", {"openAIApiKey": "<<CRED_PLAIN_KEY>>"}),
        )
        setup_target(kube_api, namespace, flowise_server)
        assert "does not know the credential type" in wait_entry(kube_api, namespace, "custom", "Failed")["message"]
        assert "UUID" in wait_entry(kube_api, namespace, "notuuid", "Failed")["message"]
        denied = wait_entry(kube_api, namespace, "fromenv", "Failed")
        assert "CRED_PLAIN_KEY" in denied["message"] and "--env-policy" in denied["message"]
        target = wait_reason(kube_api, namespace, "PushFailed")
        assert target["status"]["counts"]["failed"] == 3
        # Events follow the status write of the same sync.
        objects.wait_until(
            lambda: {"UnknownType", "InvalidId", "PlaintextDenied"} <= set(event_reasons(kube_api, namespace)),
            30,
            "an Event for each reported Credential",
        )
        ids = {objects.get_credential(kube_api, namespace, n)["status"]["id"] for n in ("custom", "fromenv")}  # type: ignore[index]
        assert not ids & set(listed(flowise_server)), "nothing of theirs was pushed"
        # Reported, not retried in a loop: a few resyncs later still one Event each.
        time.sleep(6)
        assert event_reasons(kube_api, namespace).count("UnknownType") == 1
    finally:
        client.CustomObjectsApi(kube_api).delete_cluster_custom_object(
            names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, type_name.lower()
        )


def test_env_values_granted_to_the_namespace_are_pushed(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    flowise_server: local_flowise.FlowiseServer,
    credbridge_operator: Any,
) -> None:
    namespace = namespaces.create(GRANTED_PREFIX)
    objects.create_credential(
        kube_api, namespace, objects.credential_body("fromenv", "openAIApi", {"openAIApiKey": "<<CRED_FLOWISE_KEY>>"})
    )
    setup_target(kube_api, namespace, flowise_server)
    entry = wait_entry(kube_api, namespace, "fromenv", "Synced")
    assert stored_fields(flowise_server, entry["id"]) == {"openAIApiKey": credbridge_operator.env["CRED_FLOWISE_KEY"]}


def test_flowise_down_then_back_converges(
    kube_api: client.ApiClient, namespace: str, flowise_server: local_flowise.FlowiseServer, credbridge_operator: Any
) -> None:
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body("before", "openAIApi", {"openAIApiKey": "sk-" + secrets.token_hex(8)}),
    )
    setup_target(kube_api, namespace, flowise_server)
    wait_entry(kube_api, namespace, "before", "Synced")
    flowise_server.stop_process()
    try:
        value = "sk-during-" + secrets.token_hex(8)
        objects.create_credential(
            kube_api, namespace, objects.credential_body("during", "openAIApi", {"openAIApiKey": value})
        )
        target = wait_reason(kube_api, namespace, "Unreachable")
        assert target["status"]["reachable"] is False
    finally:
        flowise_server.start_process()
    entry = wait_entry(kube_api, namespace, "during", "Synced", timeout=120)
    assert stored_fields(flowise_server, entry["id"]) == {"openAIApiKey": value}
    wait_reason(kube_api, namespace, "Synced")


@pytest.mark.parametrize(
    ("mode", "tls", "reason", "words"),
    [
        ("closed", False, "Unreachable", "not reachable"),
        ("ok", True, "TLSError", "CERTIFICATE_VERIFY_FAILED"),
        ("status:500", False, "ServerError", "HTTP 500"),
        ("status:404", False, "NotFound", "without /api/v1"),
        ("html", False, "NotFound", "web page"),
        ("big", False, "BadResponse", "more than 1048576 bytes"),
        ("slow:1", False, "Unreachable", "did not answer within 5s"),
    ],
)
def test_a_broken_flowise_is_reported_on_the_target(
    kube_api: client.ApiClient,
    namespace: str,
    broken_flowise: Any,
    credbridge_operator: Any,
    mode: str,
    tls: bool,
    reason: str,
    words: str,
) -> None:
    objects.create_credential(kube_api, namespace, objects.credential_body("c", "openAIApi", {"openAIApiKey": "sk-x"}))
    flowise_testing.create_api_key_secret(kube_api, namespace, "key", "some-key")
    url = f"http://127.0.0.1:{controlplane.free_port()}" if mode == "closed" else broken_flowise(mode, tls=tls).url
    flowise_testing.create_target(kube_api, namespace, flowise_testing.target_body("flowise", url, "key"))
    target = wait_reason(kube_api, namespace, reason)
    assert words in objects.ready(target)["message"]  # type: ignore[index]
    assert url in objects.ready(target)["message"]  # type: ignore[index]
    assert target["status"].get("credentials") is None, "nothing was claimed or pushed"
    objects.wait_until(lambda: reason in event_reasons(kube_api, namespace), 30, f"a {reason} Event")


def test_a_ca_secret_makes_a_private_certificate_trusted(
    kube_api: client.ApiClient, namespace: str, broken_flowise: Any, credbridge_operator: Any
) -> None:
    server = broken_flowise("ok", tls=True)
    objects.create_secret(kube_api, namespace, "flowise-ca", {"ca.crt": server.ca_pem})
    flowise_testing.create_api_key_secret(kube_api, namespace, "key", "some-key")
    flowise_testing.create_target(
        kube_api, namespace, flowise_testing.target_body("flowise", server.url, "key", ca_secret="flowise-ca")
    )
    target = wait_reason(kube_api, namespace, "Synced")
    assert target["status"]["flowiseVersion"] == "0.0.0-stand-in" and target["status"]["reachable"] is True
