"""The operator keeps OAuth2 access tokens fresh, against a real OAuth2 provider (oidc-provider, 30-second
access tokens): authorize once, then refreshes before every expiry with and without refresh-token
rotation; a revoked grant (ReauthorizationRequired, the last access token kept, a binding reports it);
the provider throttling and down (Retry-After, backoff, recovery); the client-credentials grant; an
operator restart (no write and no request before the planned refresh, nothing lost); a token endpoint
the egress policy refuses.

Every test uses a provider of its own (`private_provider`), so its token counts are its own. Tests wait
for outcomes with generous deadlines and assert counts and relations, never durations.
"""

from __future__ import annotations

import datetime
import itertools
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from credbridge.core import names, registry
from credbridge.core.oauth2 import tokens
from credbridge.local import controlplane, oauth2provider
from credbridge.testing import oauth2 as oauth2_testing
from credbridge.testing import objects, workloads
from credbridge.testing.fixtures import AuditLog, unique_name, wait_for

OPERATOR_USER = "credbridge-operator"
"""The identity the module's operator runs as (conftest.py), so the audit log tells its writes apart."""

pytestmark = pytest.mark.cluster

PATIENCE = 180.0
"""Seconds to wait for something the provider's 30-second tokens make happen within a minute when idle."""


@pytest.fixture(scope="module")
def endpoint_certificate(tmp_path_factory: pytest.TempPathFactory) -> workloads.EndpointCertificate:
    return workloads.endpoint_certificate(tmp_path_factory.mktemp("endpoint-cert"))


@pytest.fixture(scope="module")
def operator_args(
    oauth2_provider_process: oauth2provider.OAuth2Provider, endpoint_certificate: workloads.EndpointCertificate
) -> list[str]:
    return [*oauth2_testing.refresh_args(oauth2_provider_process), *endpoint_certificate.args]


@pytest.fixture(scope="module")
def code_type(kube_api: client.ApiClient) -> Iterator[registry.CredentialTypeSpec]:
    spec = oauth2_testing.oauth2_type(f"refreshOAuth2{secrets.token_hex(4)}", "authorization_code")
    oauth2_testing.create_oauth2_type(kube_api, spec)
    yield spec
    oauth2_testing.delete_oauth2_type(kube_api, spec)


@pytest.fixture(scope="module")
def machine_type(kube_api: client.ApiClient) -> Iterator[registry.CredentialTypeSpec]:
    spec = oauth2_testing.oauth2_type(
        f"machineOAuth2{secrets.token_hex(4)}", "client_credentials", "client_secret_basic"
    )
    oauth2_testing.create_oauth2_type(kube_api, spec)
    yield spec
    oauth2_testing.delete_oauth2_type(kube_api, spec)


def make_credential(
    api: client.ApiClient,
    namespace: str,
    server: oauth2provider.OAuth2Provider,
    cred_type: registry.CredentialTypeSpec,
    client_id: str,
    **kwargs: Any,
) -> str:
    name = unique_name(client_id)
    credential, secret = oauth2_testing.credential_objects(
        server, client_id, name=name, type_name=cred_type.name, **kwargs
    )
    client.CoreV1Api(api).create_namespaced_secret(namespace, secret)
    objects.create_credential(api, namespace, credential)
    return name


def token_valid(condition: dict[str, Any], block: dict[str, Any]) -> bool:
    return condition.get("reason") == "TokenValid"


def follow_refreshes(
    api: client.ApiClient, namespace: str, names: list[str], count: int
) -> dict[str, list[dict[str, str]]]:
    """The successive contents of each Credential's token Secret until each was refreshed `count` times."""
    history = {name: [oauth2_testing.token_secret(api, namespace, name)] for name in names}

    def enough() -> bool:
        for name in names:
            now = oauth2_testing.token_secret(api, namespace, name)
            if now.get("access_token") != history[name][-1].get("access_token"):
                history[name].append(now)
        return all(len(seen) > count for seen in history.values())

    wait_for(enough, timeout=PATIENCE * count, interval=0.5, message=f"{count} refreshes of {', '.join(names)}")
    return history


def test_authorized_credentials_are_refreshed_before_every_expiry_with_and_without_rotation(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    private_provider: Any,
    code_type: registry.CredentialTypeSpec,
    credbridge_operator: Any,
) -> None:
    server = private_provider()
    rotating = make_credential(kube_api, namespace, server, code_type, "rotating")
    fixed = make_credential(kube_api, namespace, server, code_type, "fixed")
    before = oauth2_testing.wait_for_oauth2(
        kube_api, namespace, rotating, lambda c, b: c.get("reason") == "AuthorizationRequired", what="a waiting grant"
    )
    assert f"credbridge oauth2 authorize {rotating} -n {namespace}" in before[0]["message"]
    # The rotating client: the whole authorization-code flow through `credbridge oauth2 authorize`.
    command = oauth2_testing.AuthorizeCommand(
        control_plane.kubeconfig, namespace, rotating, "--no-browser", ca_file=server.ca_file
    )
    code, _, err = command.finish(server.sign_in_and_consent(command.authorization_url()))
    assert code == 0, err
    # The fixed client (Google's way: refresh answers carry no refresh token): tokens from a flow played here.
    oauth2_testing.store_tokens(kube_api, namespace, fixed, oauth2_testing.authorize_tokens(server, "fixed"))
    for name in (rotating, fixed):
        oauth2_testing.wait_for_oauth2(kube_api, namespace, name, token_valid, what=f"{name} TokenValid")

    history = follow_refreshes(kube_api, namespace, [rotating, fixed], 2)

    for name, seen in history.items():
        for previous, refreshed in itertools.pairwise(seen):
            received = tokens.parse_time(refreshed["token_received_at"])
            expired = tokens.parse_time(previous["expires_at"])
            assert received is not None and expired is not None and received < expired, f"{name} refreshed late"
    rotated = [entry["refresh_token"] for entry in history[rotating]]
    assert len(set(rotated)) == len(rotated), "a rotating provider's new refresh token is stored every time"
    assert {entry["refresh_token"] for entry in history[fixed]} == {history[fixed][0]["refresh_token"]}
    # One request per refresh, and none refused: a rotated refresh token was never lost or sent twice.
    counts = server.token_requests()
    assert not [key for key in counts if key.startswith("refresh_token/") and not key.endswith("/ok")], counts
    for client_id, name in (("rotating", rotating), ("fixed", fixed)):
        sent = oauth2_testing.requests_of(server, "refresh_token", client_id)
        assert len(history[name]) - 1 <= sent <= len(history[name]), (client_id, sent, len(history[name]))
        condition, block = oauth2_testing.oauth2_state(kube_api, namespace, name)
        assert condition["status"] == "True" and block["failures"] == 0 and "lastRefreshTime" in block
    # The refreshed tokens reach the Credential's encrypted Secret, where consumers read them.
    refreshed = {entry["access_token"] for entry in history[rotating][1:]}
    objects.wait_until(
        lambda: objects.open_managed_secret(kube_api, namespace, rotating).get("access_token") in refreshed,
        60,
        "a refreshed access token in the managed Secret",
    )
    # ... and the Credential's status says its content changed then (updatedDate, seconds precision), although
    # the refresh patched the status too, a moment before the Credential's own reconcile did.
    received = tokens.parse_time(history[rotating][-1]["token_received_at"])
    assert received is not None

    def updated_since_refresh() -> bool:
        status = (objects.get_credential(kube_api, namespace, rotating) or {}).get("status") or {}
        updated = tokens.parse_time(status.get("updatedDate"))
        return updated is not None and updated >= received.replace(microsecond=0)

    objects.wait_until(updated_since_refresh, 60, "status.updatedDate after the refresh")


def test_a_refresh_rolls_nothing_out_and_a_revoked_grant_keeps_the_last_token_and_the_binding_says_so(
    kube_api: client.ApiClient,
    namespace: str,
    private_provider: Any,
    code_type: registry.CredentialTypeSpec,
    credbridge_operator: Any,
) -> None:
    server = private_provider()
    name = make_credential(kube_api, namespace, server, code_type, "fixed")
    got = oauth2_testing.authorize_tokens(server, "fixed")
    oauth2_testing.store_tokens(kube_api, namespace, name, got)
    oauth2_testing.wait_for_oauth2(kube_api, namespace, name, token_valid, what="TokenValid")
    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, objects.deployment_body("app"))
    binding = {
        "apiVersion": "credbridge.io/v1alpha1",
        "kind": "CredentialBinding",
        "metadata": {"name": "app", "labels": dict(objects.TEST_LABEL)},
        "spec": {
            "credential": name,
            "template": {"AUTHORIZATION": "Bearer ${access_token}"},
            "secret": {"name": "app-token"},
            "rollout": [{"kind": "Deployment", "name": "app"}],
        },
    }
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        "credbridge.io", "v1alpha1", namespace, "credentialbindings", binding
    )

    def rendered() -> str:
        return objects.decoded(objects.read_secret(kube_api, namespace, "app-token") or {}).get("AUTHORIZATION", "")

    first = oauth2_testing.token_secret(kube_api, namespace, name)["access_token"]
    objects.wait_until(lambda: rendered() == f"Bearer {first}", 60, "the access token in the binding's Secret")
    # A refresh re-renders the binding's Secret and rolls nothing out (apps read the token when they use it).
    follow_refreshes(kube_api, namespace, [name], 1)
    refreshed = oauth2_testing.token_secret(kube_api, namespace, name)["access_token"]
    objects.wait_until(lambda: rendered() == f"Bearer {refreshed}", 60, "the refreshed token in the binding's Secret")
    assert names.RESTARTED_AT_ANNOTATION not in objects.pod_template_annotations(kube_api, namespace, "app")

    assert got.refresh_token is not None
    server.revoke(got.refresh_token, "fixed")
    condition, block = oauth2_testing.wait_for_oauth2(
        kube_api,
        namespace,
        name,
        lambda c, b: c.get("reason") == "ReauthorizationRequired",
        what="ReauthorizationRequired",
    )
    assert condition["status"] == "False"
    assert f"credbridge oauth2 authorize {name} -n {namespace}" in condition["message"]
    assert "invalid_grant" in block["lastError"] and block["refusedTokenVersion"]
    # The last access token stays where it was: in the token Secret and the binding's Secret.
    last = oauth2_testing.token_secret(kube_api, namespace, name)["access_token"]
    objects.wait_until(lambda: rendered() == f"Bearer {last}", 60, "the last access token in the binding's Secret")

    def binding_reports() -> dict[str, Any] | None:
        found = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "credbridge.io", "v1alpha1", namespace, "credentialbindings", "app"
        )
        conditions = {c["type"]: c for c in (found.get("status") or {}).get("conditions") or ()}
        oauth2 = conditions.get("OAuth2Ready") or {}
        return conditions if oauth2.get("reason") == "ReauthorizationRequired" else None

    reported = wait_for(binding_reports, timeout=60, message="the binding's OAuth2Ready")
    assert reported["Ready"]["status"] == "True"
    assert "credbridge oauth2 authorize" in reported["OAuth2Ready"]["message"]
    assert "ReauthorizationRequired" in [event["reason"] for event in objects.events_for(kube_api, namespace, "app")]
    sent = oauth2_testing.requests_of(server, "refresh_token", "fixed")
    # Once the last access token expired the condition says so; the refused refresh token was not sent again.
    oauth2_testing.wait_for_oauth2(
        kube_api, namespace, name, lambda c, b: "expired at" in c.get("message", ""), what="the expiry in the message"
    )
    assert oauth2_testing.requests_of(server, "refresh_token", "fixed") == sent
    assert "ReauthorizationRequired" in [event["reason"] for event in objects.events_for(kube_api, namespace, name)]
    assert names.RESTARTED_AT_ANNOTATION not in objects.pod_template_annotations(kube_api, namespace, "app")


def test_throttling_and_a_provider_down_back_off_and_recover(
    kube_api: client.ApiClient,
    namespace: str,
    private_provider: Any,
    code_type: registry.CredentialTypeSpec,
    credbridge_operator: Any,
) -> None:
    server = private_provider()
    name = make_credential(kube_api, namespace, server, code_type, "fixed")
    oauth2_testing.store_tokens(kube_api, namespace, name, oauth2_testing.authorize_tokens(server, "fixed"))
    oauth2_testing.wait_for_oauth2(kube_api, namespace, name, token_valid, what="TokenValid")

    server.set_fault("throttle", retry_after=6)
    condition, block = oauth2_testing.wait_for_oauth2(
        kube_api, namespace, name, lambda c, b: c.get("reason") == "RefreshFailed", what="RefreshFailed"
    )
    failed_at = tokens.parse_time(condition["lastTransitionTime"])
    retry_at = tokens.parse_time(block["retryAt"])
    assert failed_at is not None and retry_at is not None
    assert retry_at - failed_at >= datetime.timedelta(seconds=6), "Retry-After is honoured"
    assert "HTTP 429" in block["lastError"] and "HTTP 429" in condition["message"]

    server.set_fault("none")
    server.stop_process()  # down: connections are refused
    _, down = oauth2_testing.wait_for_oauth2(
        kube_api, namespace, name, lambda c, b: b.get("failures", 0) >= 4, what="four failures in a row"
    )
    assert "not reachable" in down["lastError"]
    server.start_process()
    condition, block = oauth2_testing.wait_for_oauth2(kube_api, namespace, name, token_valid, what="recovery")
    assert block["failures"] == 0 and "retryAt" not in block and "lastError" not in block
    reasons = [event["reason"] for event in objects.events_for(kube_api, namespace, name)]
    assert "RefreshFailed" in reasons and reasons.count("TokenValid") >= 2  # valid, failing, valid again


def test_client_credentials_need_no_authorization_and_a_workload_reads_the_current_token(
    kube_api: client.ApiClient,
    namespace: str,
    private_provider: Any,
    machine_type: registry.CredentialTypeSpec,
    credbridge_operator: Any,
    endpoint_certificate: workloads.EndpointCertificate,
) -> None:
    server = private_provider()
    name = make_credential(
        kube_api,
        namespace,
        server,
        machine_type,
        "machine",
        token_fields=("access_token", "expires_at", "token_received_at"),
    )
    oauth2_testing.wait_for_oauth2(kube_api, namespace, name, token_valid, what="TokenValid")
    secret = objects.read_secret(kube_api, namespace, f"{name}-tokens")
    assert secret is not None, "the operator created the token Secret"
    metadata = secret["metadata"]
    assert metadata["annotations"]["credbridge.io/oauth2-credential"] == name
    assert [ref["kind"] for ref in metadata["ownerReferences"]] == ["Credential"]
    history = follow_refreshes(kube_api, namespace, [name], 1)
    assert oauth2_testing.requests_of(server, "client_credentials", "machine") >= 2
    assert "refresh_token" not in history[name][-1]
    fresh = {entry["access_token"] for entry in history[name]}
    objects.wait_until(
        lambda: objects.open_managed_secret(kube_api, namespace, name).get("access_token") in fresh,
        60,
        "the access token in the managed Secret",
    )
    # A workload with `use` reads the token stored now: the one of the latest refresh.
    workloads.create_service_account(kube_api, namespace, "robot")
    workloads.grant_use(kube_api, namespace, "robot", names.CREDENTIAL_PLURAL, [name])
    token = workloads.request_token(kube_api, namespace, "robot")
    reader = workloads.EndpointClient(credbridge_operator.process.endpoint_port, endpoint_certificate.ca_pem)
    try:

        def reads_the_stored_token() -> bool:
            answer = reader.read(namespace, names.CREDENTIAL_PLURAL, name, token)
            stored = oauth2_testing.token_secret(kube_api, namespace, name).get("access_token")
            return answer.status == 200 and answer.json["data"].get("access_token") == stored

        wait_for(reads_the_stored_token, timeout=90, interval=0.5, message="a workload reading the current token")
    finally:
        reader.close()


def test_a_restart_writes_nothing_and_sends_nothing_before_the_planned_refresh_and_loses_nothing(
    kube_api: client.ApiClient,
    namespace: str,
    private_provider: Any,
    code_type: registry.CredentialTypeSpec,
    credbridge_operator: Any,
    audit: AuditLog,
) -> None:
    server = private_provider(access_token_seconds=60)
    name = make_credential(kube_api, namespace, server, code_type, "rotating")
    oauth2_testing.store_tokens(kube_api, namespace, name, oauth2_testing.authorize_tokens(server, "rotating"))
    oauth2_testing.wait_for_oauth2(kube_api, namespace, name, token_valid, what="TokenValid")
    history = follow_refreshes(kube_api, namespace, [name], 1)
    latest = history[name][-1]["access_token"]
    # Settled: the refreshed tokens are encrypted and the status plans the next refresh from them.
    objects.wait_until(
        lambda: objects.open_managed_secret(kube_api, namespace, name).get("access_token") == latest,
        60,
        "the refreshed token in the managed Secret",
    )
    expires = tokens.parse_time(history[name][-1]["expires_at"])
    _, block = oauth2_testing.wait_for_oauth2(
        kube_api,
        namespace,
        name,
        lambda c, b: tokens.parse_time(b.get("accessTokenExpiresAt")) == expires and "refreshAt" in b,
        what="the status of the refreshed token",
    )
    refresh_at = tokens.parse_time(block["refreshAt"])
    assert refresh_at is not None
    sent = oauth2_testing.requests_of(server, "refresh_token", "rotating")
    mark = audit.mark()

    restarted = credbridge_operator.restart()
    objects.wait_until(
        lambda: 'credbridge_reconciles_total{kind="oauth2",result="unchanged"}' in restarted.metrics(),
        120,
        "the restarted operator's look at the Credential",
    )
    # Nothing before the planned refresh: no write (audit log) and no request (the provider's count).
    early = [
        write
        for write in audit.writes(since=mark, user=OPERATOR_USER, namespace=namespace)
        if (tokens.parse_time(write["requestReceivedTimestamp"]) or refresh_at) < refresh_at
    ]
    assert early == [], [(w["verb"], w["objectRef"].get("resource"), w["objectRef"].get("name")) for w in early]
    if datetime.datetime.now(datetime.UTC) < refresh_at:
        assert oauth2_testing.requests_of(server, "refresh_token", "rotating") == sent
    # The planned refresh happens once, with the rotated refresh token stored before the restart.
    after = follow_refreshes(kube_api, namespace, [name], 1)
    assert tokens.parse_time(after[name][-1]["token_received_at"]) >= refresh_at  # type: ignore[operator]
    assert oauth2_testing.requests_of(server, "refresh_token", "rotating") == sent + 1
    assert not [key for key in server.token_requests() if "invalid_grant" in key]
    oauth2_testing.wait_for_oauth2(kube_api, namespace, name, token_valid, what="TokenValid after the restart")


def test_a_token_endpoint_the_egress_policy_refuses_gets_nothing(
    kube_api: client.ApiClient,
    namespace: str,
    private_provider: Any,
    code_type: registry.CredentialTypeSpec,
    credbridge_operator: Any,
) -> None:
    server = private_provider()
    name = unique_name("elsewhere")
    credential, secret = oauth2_testing.credential_objects(server, "fixed", name=name, type_name=code_type.name)
    # localhost is not on the allow-list (127.0.0.1 is): the host comes from a field, so it is refused.
    credential["spec"]["data"]["accessTokenUrl"] = server.token_endpoint.replace("127.0.0.1", "localhost")
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, secret)
    objects.create_credential(kube_api, namespace, credential)
    oauth2_testing.store_tokens(kube_api, namespace, name, oauth2_testing.authorize_tokens(server, "fixed"))
    condition, block = oauth2_testing.wait_for_oauth2(
        kube_api, namespace, name, lambda c, b: c.get("reason") == "RefreshFailed", what="the refusal"
    )
    assert "--oauth2-allow-host" in condition["message"] and "--oauth2-allow-host" in block["lastError"]
    assert oauth2_testing.requests_of(server, "refresh_token", "fixed") == 0
