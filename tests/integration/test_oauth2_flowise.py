"""A FlowiseTarget and the OAuth2 refresh against a real Flowise and a real OAuth2 provider: each token the
operator refreshes is pushed into Flowise, and Flowise's own refresh (its
`/api/v1/oauth2-credential/refresh/:id` route, which its nodes call near expiry) is not reverted.

This Flowise is started for the module with what its refresh needs to reach the local provider: the
provider's CA (`NODE_EXTRA_CA_CERTS`), its loopback host on Flowise's OAuth2 allow-list, and Flowise's
private-address check off (both are on by default and refuse 127.0.0.1).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from credbridge.local import flowise as local_flowise
from credbridge.local import oauth2provider
from credbridge.testing import flowise as flowise_testing
from credbridge.testing import oauth2 as oauth2_testing
from credbridge.testing import objects
from credbridge.testing.fixtures import unique_name, wait_for

pytestmark = pytest.mark.cluster

PATIENCE = 180.0


@pytest.fixture(scope="module")
def operator_args(oauth2_provider_process: oauth2provider.OAuth2Provider) -> list[str]:
    return [*oauth2_testing.refresh_args(oauth2_provider_process), "--flowise-resync", "2", "--flowise-timeout", "10"]


@pytest.fixture(scope="module")
def refreshing_flowise(
    tmp_path_factory: pytest.TempPathFactory,
    flowise_install: local_flowise.FlowiseInstall,
    flowise_postgres: local_flowise.PostgresServer,
    oauth2_provider_process: oauth2provider.OAuth2Provider,
) -> Iterator[local_flowise.FlowiseServer]:
    """A Flowise whose own OAuth2 refresh can reach the test provider."""
    server = local_flowise.start_flowise(
        tmp_path_factory.mktemp("flowise-oauth2"),
        flowise_postgres,
        install=flowise_install,
        extra_env={
            "NODE_EXTRA_CA_CERTS": str(oauth2_provider_process.ca_file),
            "OAUTH2_ALLOWED_TOKEN_DOMAINS": "127.0.0.1",
            "HTTP_SECURITY_CHECK": "false",
        },
    )
    yield server
    server.stop_process()


def flowise_refresh(server: local_flowise.FlowiseServer, credential_id: str) -> dict[str, Any]:
    """Asks Flowise to refresh the credential itself, as its nodes do near expiry (the route is unauthenticated)."""
    request = urllib.request.Request(
        f"{server.url}/api/v1/oauth2-credential/refresh/{credential_id}", data=b"{}", method="POST"
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_each_refresh_is_pushed_and_flowises_own_refresh_is_not_reverted(
    kube_api: client.ApiClient,
    namespace: str,
    refreshing_flowise: local_flowise.FlowiseServer,
    private_provider: Any,
    credbridge_operator: Any,
) -> None:
    server = private_provider()
    name = unique_name("gmail")
    # A built-in type Flowise knows, pointed at the test provider (a field-given token URL, on the allow-list).
    credential, client_secret = oauth2_testing.credential_objects(server, "fixed", name=name, type_name="gmailOAuth2")
    credential["metadata"]["labels"]["flowise"] = "yes"
    credential_id = str(uuid.uuid4())
    credential["spec"]["id"] = credential_id
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, client_secret)
    objects.create_credential(kube_api, namespace, credential)
    oauth2_testing.store_tokens(kube_api, namespace, name, oauth2_testing.authorize_tokens(server, "fixed"))
    flowise_testing.create_api_key_secret(kube_api, namespace, "flowise-api-key", refreshing_flowise.api_key.reveal())
    flowise_testing.create_target(
        kube_api,
        namespace,
        flowise_testing.target_body(
            "flowise", refreshing_flowise.url, "flowise-api-key", selector={"matchLabels": {"flowise": "yes"}}
        ),
    )

    def in_flowise() -> dict[str, str]:
        return flowise_testing.stored_fields(refreshing_flowise, credential_id) or {}

    def ours() -> str:
        return oauth2_testing.token_secret(kube_api, namespace, name).get("access_token", "")

    first = ours()
    objects.wait_until(lambda: in_flowise().get("access_token") == first, 90, "the first access token in Flowise")
    # The operator's refresh reaches Flowise.
    wait_for(lambda: ours() != first, timeout=PATIENCE, interval=0.5, message="the operator's refresh")
    refreshed = ours()
    objects.wait_until(lambda: in_flowise().get("access_token") == refreshed, 90, "the refreshed token in Flowise")

    # Flowise refreshes the credential itself: a write to its token fields, with a new updatedDate.
    answer = flowise_refresh(refreshing_flowise, credential_id)
    assert answer.get("success") is True, answer.get("message")
    own = in_flowise()["access_token"]
    assert own not in (first, refreshed)
    updated = next(
        item for item in flowise_testing.flowise_api(refreshing_flowise).list_credentials() if item.id == credential_id
    )

    # The target takes Flowise's write as it is (no revert) over several resyncs, until the operator refreshes again.
    def noticed() -> bool:
        entry = flowise_testing.entry(flowise_testing.get_target(kube_api, namespace, "flowise"), name) or {}
        return entry.get("flowiseUpdatedDate") == updated.updated_date

    wait_for(noticed, timeout=60, message="the target noticing Flowise's own write")
    held = in_flowise()["access_token"]
    if ours() == refreshed:  # the operator had not refreshed again when Flowise was read: its own token stays
        assert held == own
    events = [event["reason"] for event in objects.events_for(kube_api, namespace, "flowise")]
    assert "RevertedFlowiseEdit" not in events
    # The operator's next refresh is pushed over it.
    wait_for(lambda: ours() != refreshed, timeout=PATIENCE, interval=0.5, message="the operator's next refresh")
    latest = ours()
    objects.wait_until(lambda: in_flowise().get("access_token") == latest, 90, "the next refresh in Flowise")
    events = [event["reason"] for event in objects.events_for(kube_api, namespace, "flowise")]
    assert "RevertedFlowiseEdit" not in events
    condition, _ = oauth2_testing.oauth2_state(kube_api, namespace, name)
    assert condition["reason"] == "TokenValid"
